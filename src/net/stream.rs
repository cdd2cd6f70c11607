//! TURN over TCP and TLS: one tokio task per connection cuts the byte stream
//! into messages ([`crate::proto::wire::stream_frame`]) and hands them to the
//! worker that owns the connection's allocation; what the core answers comes
//! back on a bounded queue and is written out, ChannelData padded to 4 bytes
//! ([RFC 8656 §12.5](https://www.rfc-editor.org/rfc/rfc8656#section-12.5)).
//!
//! The allocation belongs to the connection: when either side ends it, the
//! worker is told and deletes the allocation at once.
//!
//! A relayed message costs no allocation either way. The connection and its
//! worker share a [`Link`]: messages from the client travel in buffers the
//! worker hands back once it has handled them, and the worker appends
//! messages towards the client to the link's queue, which the writer swaps
//! for an empty buffer of its own and writes out at once.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mio::Waker;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

use crate::proto::wire::{stream_frame, Frame};
use crate::proto::{ClientAddr, Transport};

/// Bytes queued towards one client before more messages are dropped (a
/// client that does not read loses data, as it would over UDP).
pub const OUT_LIMIT: usize = 512 * 1024;
/// Bytes read from a connection at a time.
const READ_CHUNK: usize = 16 * 1024;
/// Message buffers a connection keeps for reuse, and the largest kept (a
/// bigger message, rare, gets a buffer of its own).
const SPARES: usize = 64;
const SPARE_CAPACITY: usize = 2048;
/// Messages queued towards one worker from every connection it owns; a full
/// queue makes readers wait (TCP backpressure), never drops.
const IN_QUEUE: usize = 4096;
/// Largest buffered, unframed input per connection: one maximal STUN message.
const MAX_PENDING: usize = 20 + 65535 + 4;

/// How long a TURN connection may take, see [`Bridge::serve`].
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub idle: Duration,
    pub frame: Duration,
    pub unallocated: Duration,
}

/// What a connection task tells its worker.
pub enum ToWorker {
    Open {
        client: ClientAddr,
        link: LinkTx,
        /// Set by the worker while the connection has an allocation.
        allocated: Arc<AtomicBool>,
    },
    Data {
        client: ClientAddr,
        /// One message, in a buffer to hand back with [`LinkTx::recycle`].
        msg: Vec<u8>,
    },
    Closed {
        client: ClientAddr,
    },
}

/// One worker's end: drained by the worker on every turn of its loop.
pub type Inbox = mpsc::Receiver<ToWorker>;

/// The connection tasks' ends of every worker's inbox.
pub struct Bridge {
    lanes: Vec<(mpsc::Sender<ToWorker>, Arc<Waker>)>,
}

impl Bridge {
    /// A bridge to `wakers.len()` workers and each worker's inbox.
    pub fn new(wakers: &[Arc<Waker>]) -> (Arc<Self>, Vec<Inbox>) {
        let (lanes, inboxes) = wakers
            .iter()
            .map(|w| {
                let (tx, rx) = mpsc::channel(IN_QUEUE);
                ((tx, w.clone()), rx)
            })
            .unzip();
        (Arc::new(Self { lanes }), inboxes)
    }

    /// Serves TURN on `io` until either side closes. `prefix` holds bytes
    /// already read from the stream. A connection is closed when a message
    /// takes longer than `t.frame` to arrive once begun, and, while it has
    /// no allocation, when it sends nothing for `t.idle` or has had none
    /// for `t.unallocated` in all (a client can neither trickle bytes nor
    /// keep a connection with Bindings alone).
    pub async fn serve<S>(&self, io: S, client: ClientAddr, prefix: Vec<u8>, t: Timeouts)
    where
        S: AsyncRead + AsyncWrite + Send + Unpin,
    {
        let (tx, waker) = &self.lanes[lane_of(&client.remote, self.lanes.len())];
        let send = |m: ToWorker| async move {
            let ok = tx.send(m).await.is_ok();
            let _ = waker.wake();
            ok
        };
        let link = Arc::new(Link::default());
        let allocated = Arc::new(AtomicBool::new(false));
        let open = ToWorker::Open {
            client,
            link: LinkTx(link.clone()),
            allocated: allocated.clone(),
        };
        if !send(open).await {
            return;
        }
        let (mut rd, mut wr) = tokio::io::split(io);
        let reader = async {
            let mut buf = prefix;
            let mut chunk = vec![0u8; READ_CHUNK];
            // Since when the buffer holds part of a message, and since when
            // the connection has had no allocation.
            let mut partial_since: Option<Instant> = None;
            let mut unallocated_since: Option<Instant> = Some(Instant::now());
            loop {
                let mut at = 0;
                loop {
                    match stream_frame(&buf[at..]) {
                        Frame::Message { len, skip } => {
                            let mut msg = link.spare();
                            msg.extend_from_slice(&buf[at..at + len]);
                            if !send(ToWorker::Data { client, msg }).await {
                                return "worker stopped";
                            }
                            at += skip;
                        }
                        Frame::Garbage => return "not STUN or ChannelData",
                        Frame::Partial => break,
                    }
                }
                buf.drain(..at);
                if buf.len() > MAX_PENDING {
                    return "message too long";
                }
                if buf.is_empty() {
                    partial_since = None;
                } else {
                    partial_since.get_or_insert_with(Instant::now);
                }
                // `read` is cancel-safe: a timeout loses nothing.
                let n = loop {
                    let has_allocation = allocated.load(Ordering::Relaxed);
                    if has_allocation {
                        unallocated_since = None;
                    } else {
                        unallocated_since.get_or_insert_with(Instant::now);
                    }
                    let now = Instant::now();
                    let frame_end = partial_since.map(|t0| t0 + t.frame);
                    let setup_end = unallocated_since.map(|t0| t0 + t.unallocated);
                    // With an allocation this only wakes the loop to look at
                    // the flag again.
                    let idle_end = now + t.idle;
                    let next = [frame_end, setup_end, Some(idle_end)].into_iter().flatten().min();
                    match tokio::time::timeout_at(next.unwrap_or(idle_end), rd.read(&mut chunk)).await {
                        Ok(r) => break r,
                        Err(_) => {
                            let now = Instant::now();
                            let has_allocation = allocated.load(Ordering::Relaxed);
                            if frame_end.is_some_and(|e| now >= e) {
                                return "a message took too long to arrive";
                            }
                            if !has_allocation && setup_end.is_some_and(|e| now >= e) {
                                return "too long without an allocation";
                            }
                            if !has_allocation && now >= idle_end {
                                return "idle without an allocation";
                            }
                        }
                    }
                };
                match n {
                    Ok(0) => return "closed by the client",
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    Err(_) => return "read failed",
                }
            }
        };
        let one_record_each = client.transport == Transport::Tls;
        let writer = async {
            let mut queued = Vec::new();
            while link.take(&mut queued).await {
                if write_out(&mut wr, &queued, one_record_each).await.is_err() {
                    return "write failed";
                }
                queued.clear();
            }
            "closed by the worker"
        };
        let why = tokio::select! {
            why = reader => why,
            why = writer => why,
        };
        tracing::debug!(%client, why, "stream closed");
        send(ToWorker::Closed { client }).await;
        let _ = wr.shutdown().await;
    }
}

/// Writes queued messages, then flushes. Over TLS each message goes in a
/// record of its own: some clients (coturn's `turnutils_uclient` among
/// them) take one TLS read for one message and lose the rest of a record
/// holding several. Over TCP everything queued goes in one write.
async fn write_out<W: AsyncWrite + Unpin>(wr: &mut W, bytes: &[u8], one_record_each: bool) -> std::io::Result<()> {
    if one_record_each {
        let mut at = 0;
        while at < bytes.len() {
            let skip = match stream_frame(&bytes[at..]) {
                Frame::Message { skip, .. } => skip,
                Frame::Partial | Frame::Garbage => bytes.len() - at,
            };
            wr.write_all(&bytes[at..at + skip]).await?;
            at += skip;
        }
    } else {
        wr.write_all(bytes).await?;
    }
    wr.flush().await
}

/// A connection's worker: by its remote address, so one client's connections
/// spread over the workers.
fn lane_of(remote: &SocketAddr, lanes: usize) -> usize {
    let h = ahash::RandomState::with_seeds(1, 2, 3, 4).hash_one(remote);
    (h % lanes.max(1) as u64) as usize
}

/// What a connection shares with its worker: bytes on their way to the
/// client, and message buffers on their way back to the reader.
#[derive(Default)]
pub struct Link {
    queue: Mutex<Queue>,
    ready: Notify,
    spares: Mutex<Vec<Vec<u8>>>,
}

#[derive(Default)]
struct Queue {
    bytes: Vec<u8>,
    /// The worker let go: write what is left, then end.
    closed: bool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Link {
    /// An empty buffer for the next message: one the worker handed back,
    /// or a new one.
    fn spare(&self) -> Vec<u8> {
        lock(&self.spares).pop().unwrap_or_default()
    }

    /// Waits for queued bytes and swaps them into `into` (which must be
    /// empty: its capacity becomes the queue's). False once the worker let
    /// go and nothing is left.
    async fn take(&self, into: &mut Vec<u8>) -> bool {
        loop {
            let ready = self.ready.notified();
            {
                let mut q = lock(&self.queue);
                if !q.bytes.is_empty() {
                    std::mem::swap(&mut q.bytes, into);
                    return true;
                }
                if q.closed {
                    return false;
                }
            }
            ready.await;
        }
    }
}

/// The worker's end of a [`Link`]; dropping it ends the connection once what
/// is queued is written.
pub struct LinkTx(Arc<Link>);

impl LinkTx {
    /// Queues `msg` as it goes on a stream (ChannelData padded to a
    /// multiple of 4). False, and the message dropped, when the client has
    /// not read [`OUT_LIMIT`] bytes already queued.
    pub fn push(&self, msg: &[u8]) -> bool {
        let padded = msg.len().next_multiple_of(4);
        {
            let mut q = lock(&self.0.queue);
            if q.bytes.len() + padded > OUT_LIMIT {
                return false;
            }
            let end = q.bytes.len() + padded;
            q.bytes.extend_from_slice(msg);
            q.bytes.resize(end, 0);
        }
        self.0.ready.notify_one();
        true
    }

    /// Hands a message's buffer back to the reader, for the next message.
    pub fn recycle(&self, mut msg: Vec<u8>) {
        if msg.capacity() > SPARE_CAPACITY {
            return;
        }
        let mut spares = lock(&self.0.spares);
        if spares.len() < SPARES {
            msg.clear();
            spares.push(msg);
        }
    }
}

impl Drop for LinkTx {
    fn drop(&mut self) {
        lock(&self.0.queue).closed = true;
        self.0.ready.notify_one();
    }
}

/// A byte stream a connection can be handed over as.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// A connection on an `auto` listener that turned out to speak HTTP.
pub struct HttpConn {
    /// The stream, first bytes included.
    pub io: Box<dyn Io>,
    pub remote: SocketAddr,
    /// The `auto` listener's address it came in on.
    pub local: SocketAddr,
    /// Inside TLS (serve the page) or plain (redirect to HTTPS).
    pub secure: bool,
    /// Its place under the connection limits, held while it lives.
    pub slot: super::tcp::Slot,
}

/// A stream whose first bytes were already read (to tell what it speaks):
/// they are read again first.
pub struct Rewound<S> {
    head: Vec<u8>,
    at: usize,
    inner: S,
}

impl<S> Rewound<S> {
    pub fn new(head: Vec<u8>, inner: S) -> Self {
        Self { head, at: 0, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewound<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.at < self.head.len() {
            let n = buf.remaining().min(self.head.len() - self.at);
            let at = self.at;
            buf.put_slice(&self.head[at..at + n]);
            self.at += n;
            if self.at == self.head.len() {
                self.head = Vec::new();
                self.at = 0;
            }
            return std::task::Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewound<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
