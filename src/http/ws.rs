//! The WebSocket driver for [`super::rooms`]: one task per connection, an
//! outbox per connection, a message rate limit, keepalive pings and an idle
//! deadline (short once the client shows it sends heartbeats). A connection
//! whose outbox overflows (it stopped reading) is cut rather than allowed
//! to grow memory.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::ws::{Message, WebSocket};
use tokio::sync::mpsc;

use rand::Rng;

use super::rooms::{self, ConnId, Out, Rooms};
use super::AppState;

/// Protocol-level frame limit; [`rooms::MAX_MESSAGE`] is the one clients see
/// an error for, this one only stops a connection from buffering more.
pub const MAX_FRAME: usize = 4 * rooms::MAX_MESSAGE;
/// Messages waiting for one connection before it counts as stuck.
const OUTBOX: usize = 256;
/// Pings keep NAT and proxy mappings alive; three intervals without a word
/// from the client (pongs included) end it.
const PING_EVERY: Duration = Duration::from_secs(25);

/// The ping interval under the HTTP idle timeout `idle`: at most
/// [`PING_EVERY`], and half of `idle`, so a live WebSocket is never idle.
pub fn ping_interval(idle: Duration) -> Duration {
    PING_EVERY.min(idle / 2).max(Duration::from_millis(100))
}
/// Rate-limited messages tolerated before the connection is closed.
const STRIKES: u32 = 200;
/// A client that sends heartbeats (the page: every second) and is silent this
/// long has lost its connection, whatever TCP says.
const HEARTBEAT_LOST: Duration = Duration::from_secs(10);
/// The close code a page uses when it drops a connection to open another
/// (it suspects the network changed): its participant stays, to resume.
const CLOSE_RECONNECTING: u16 = 4000;

/// Rooms plus the outbox of every connection.
pub struct Hub {
    inner: Mutex<HubInner>,
}

struct HubInner {
    rooms: Rooms,
    outboxes: HashMap<ConnId, mpsc::Sender<String>>,
    next: ConnId,
}

impl Hub {
    pub fn new(room_size: usize) -> Self {
        Self {
            inner: Mutex::new(HubInner {
                rooms: Rooms::new(room_size, || format!("{:032x}", rand::rng().random::<u128>())),
                outboxes: HashMap::new(),
                next: 1,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HubInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn register(&self, tx: mpsc::Sender<String>) -> ConnId {
        let mut h = self.lock();
        let id = h.next;
        h.next += 1;
        h.outboxes.insert(id, tx);
        id
    }

    fn handle(&self, from: ConnId, text: &str) {
        let mut h = self.lock();
        let out = h.rooms.handle(from, text);
        h.deliver(out);
    }

    fn disconnect(&self, id: ConnId, clean: bool) {
        let mut h = self.lock();
        h.outboxes.remove(&id);
        let out = h.rooms.disconnect(id, clean, Instant::now());
        h.deliver(out);
    }

    /// Participants whose connection dropped and who did not resume in
    /// time leave (their rooms are told). Call every second or so.
    pub fn expire(&self) {
        let mut h = self.lock();
        let out = h.rooms.expire(Instant::now());
        h.deliver(out);
    }

    /// Sends `text` to `id` alone.
    fn tell(&self, id: ConnId, text: String) {
        self.lock().deliver(vec![Out::Send(id, text)]);
    }
}

impl HubInner {
    fn deliver(&mut self, out: Vec<Out>) {
        for o in out {
            let (to, stuck) = match o {
                Out::Send(to, text) => (to, self.outboxes.get(&to).is_some_and(|tx| tx.try_send(text).is_err())),
                Out::Close(to) => (to, true),
            };
            if stuck {
                // Dropping the only sender ends that connection's task
                // (its participant, if it still has one, may resume).
                tracing::debug!(conn = to, "closing a signaling connection (not reading, or replaced)");
                self.outboxes.remove(&to);
            }
        }
    }
}

/// Runs one signaling connection until it closes.
pub async fn serve(mut socket: WebSocket, state: Arc<AppState>, peer: SocketAddr) {
    let (tx, mut rx) = mpsc::channel::<String>(OUTBOX);
    let id = state.hub.register(tx);
    tracing::debug!(%peer, conn = id, "signaling connection opened");
    let rate = NonZeroU32::new(state.ws_rate).unwrap_or(NonZeroU32::MIN);
    let burst = rate.saturating_mul(NonZeroU32::new(10).unwrap_or(NonZeroU32::MIN));
    let limiter = governor::RateLimiter::direct(governor::Quota::per_second(rate).allow_burst(burst));
    let mut strikes = 0u32;
    let mut last_heard = Instant::now();
    let mut heartbeats = false;
    // Pings on their own clock (the byte stream's idle timeout is twice
    // the interval: a ping late by one check could let it fire), the
    // silence check every second.
    let mut ping = tokio::time::interval(state.ws_ping);
    let mut check = tokio::time::interval(Duration::from_secs(1));
    let idle_limit = state.ws_ping * 3;
    let mut clean = false;
    ping.tick().await;
    check.tick().await;
    loop {
        tokio::select! {
            m = socket.recv() => {
                let m = match m {
                    Some(Ok(m)) => m,
                    _ => break,
                };
                last_heard = Instant::now();
                match m {
                    Message::Text(t) => {
                        if limiter.check().is_err() {
                            strikes += 1;
                            if strikes > STRIKES {
                                break;
                            }
                            state.hub.tell(id, rooms::error("rate-limited", "too many messages; this one was dropped"));
                            continue;
                        }
                        heartbeats |= t.as_str().starts_with(r#"{"type":"ping""#);
                        state.hub.handle(id, t.as_str());
                    }
                    Message::Binary(_) => state.hub.tell(id, rooms::error("bad-json", "text messages only")),
                    Message::Close(frame) => {
                        clean = frame.is_none_or(|f| f.code != CLOSE_RECONNECTING);
                        break;
                    }
                    Message::Ping(_) | Message::Pong(_) => {}
                }
            }
            out = rx.recv() => {
                let Some(text) = out else { break };
                if socket.send(Message::Text(text.into())).await.is_err() {
                    break;
                }
            }
            _ = check.tick() => {
                let limit = if heartbeats { HEARTBEAT_LOST } else { idle_limit };
                if last_heard.elapsed() > limit {
                    tracing::debug!(%peer, conn = id, "signaling connection silent; closing it");
                    break;
                }
            }
            _ = ping.tick() => {
                if socket.send(Message::Ping(Vec::new().into())).await.is_err() {
                    break;
                }
            }
        }
    }
    state.hub.disconnect(id, clean);
    tracing::debug!(%peer, conn = id, "signaling connection closed");
}
