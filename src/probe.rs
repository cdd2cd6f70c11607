//! `turnd probe URL`: checks a TURN server from wherever it runs, as a
//! WebRTC client would use it — STUN Binding, Allocate, CreatePermission and
//! ChannelBind between two allocations of its own, and data relayed from
//! one to the other and back — printing each step with its time and, on
//! failure, the likely cause. Whatever happens, the allocations it made are
//! deleted before it exits (Refresh with lifetime 0), so a probe never
//! leaves work for the server's drain.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::proto::wire::{self, attr, method, Class, Encoder, Frame, Message};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// turn:HOST[:PORT][?transport=udp|tcp] or turns:HOST[:PORT]
    pub url: String,
    /// The TURN REST shared secret (coturn's static-auth-secret). Other
    /// users see it in `ps`: prefer --secret-file or the TURND_SECRET
    /// environment variable.
    #[arg(long, conflicts_with_all = ["password", "secret_file"])]
    pub secret: Option<String>,
    /// A file holding the shared secret, e.g. the one turnd generated in its
    /// data directory (/var/lib/turnd/secret under systemd).
    #[arg(long, value_name = "FILE", conflicts_with = "password")]
    pub secret_file: Option<PathBuf>,
    /// With --secret: the user part of the REST username; with --password:
    /// the static user.
    #[arg(long, default_value = "probe")]
    pub user: String,
    /// A static user's password.
    #[arg(long)]
    pub password: Option<String>,
    /// turns: accept any certificate (self-signed test servers).
    #[arg(long, conflicts_with = "ca_file")]
    pub insecure: bool,
    /// turns: trust this PEM root (a private or test CA) instead of the
    /// public ones.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// How long to wait for each answer.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    Udp,
    Tcp,
    Tls,
}

struct Target {
    via: Via,
    host: String,
    port: u16,
}

fn parse(url: &str) -> anyhow::Result<Target> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("turns:") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("turn:") {
        (false, r)
    } else {
        anyhow::bail!("{url}: expected turn:HOST[:PORT][?transport=udp|tcp] or turns:HOST[:PORT]");
    };
    let (hostport, query) = rest.split_once('?').unwrap_or((rest, ""));
    let transport = query
        .strip_prefix("transport=")
        .unwrap_or(if tls { "tcp" } else { "udp" });
    let via = match (tls, transport) {
        (true, "tcp") => Via::Tls,
        (false, "tcp") => Via::Tcp,
        (false, "udp") => Via::Udp,
        _ => anyhow::bail!("{url}: transport must be udp or tcp (tcp for turns:)"),
    };
    let default_port = if tls { 5349 } else { 3478 };
    let (host, port) = if let Some(h) = hostport.strip_prefix('[') {
        let (h, p) = h.split_once(']').ok_or_else(|| anyhow::anyhow!("{url}: unclosed ["))?;
        (
            h.to_string(),
            p.strip_prefix(':').map(str::parse).transpose()?.unwrap_or(default_port),
        )
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p.parse()?),
            None => (hostport.to_string(), default_port),
        }
    };
    anyhow::ensure!(!host.is_empty(), "{url}: no host");
    Ok(Target { via, host, port })
}

/// One connection to the server: datagrams, or a framed stream.
enum Conn {
    Udp(UdpSocket),
    Tcp(TcpStream, Vec<u8>),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>, Vec<u8>),
}

impl Conn {
    fn open(t: &Target, addr: SocketAddr, args: &Args) -> anyhow::Result<Self> {
        match t.via {
            Via::Udp => {
                let bind: SocketAddr = if addr.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse()?;
                let s = UdpSocket::bind(bind)?;
                s.connect(addr)?;
                s.set_read_timeout(Some(args.timeout))?;
                Ok(Conn::Udp(s))
            }
            Via::Tcp | Via::Tls => {
                let s = TcpStream::connect_timeout(&addr, args.timeout)?;
                s.set_nodelay(true)?;
                s.set_read_timeout(Some(args.timeout))?;
                if t.via == Via::Tcp {
                    return Ok(Conn::Tcp(s, Vec::new()));
                }
                let config = match &args.ca_file {
                    Some(f) => crate::tls::client_config_with_root(f)?,
                    None => crate::tls::client_config(args.insecure),
                };
                let name = rustls::pki_types::ServerName::try_from(t.host.clone())?;
                let c = rustls::ClientConnection::new(config, name)?;
                let mut tls = rustls::StreamOwned::new(c, s);
                while tls.conn.is_handshaking() {
                    tls.conn.complete_io(&mut tls.sock).map_err(|e| {
                        let rustls = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>());
                        if matches!(rustls, Some(rustls::Error::InvalidCertificate(_))) {
                            anyhow::anyhow!("TLS handshake: {e} (a self-signed certificate needs --insecure)")
                        } else {
                            anyhow::anyhow!(
                                "TLS handshake: {e} (this port does not seem to speak TLS: for a plain TURN port use \
                                 turn:{}:{}?transport=tcp)",
                                t.host,
                                t.port
                            )
                        }
                    })?;
                }
                Ok(Conn::Tls(Box::new(tls), Vec::new()))
            }
        }
    }

    fn send(&mut self, m: &[u8]) -> std::io::Result<()> {
        // On a stream, ChannelData is padded to a multiple of 4.
        let padded = || {
            let mut v = m.to_vec();
            v.resize(m.len().next_multiple_of(4), 0);
            v
        };
        match self {
            Conn::Udp(s) => s.send(m).map(|_| ()),
            Conn::Tcp(s, _) => s.write_all(&padded()),
            Conn::Tls(s, _) => {
                s.write_all(&padded())?;
                s.flush()
            }
        }
    }

    /// The next message, or an error on timeout or close.
    fn recv(&mut self) -> std::io::Result<Vec<u8>> {
        let mut chunk = [0u8; 4096];
        match self {
            Conn::Udp(s) => {
                let n = s.recv(&mut chunk)?;
                Ok(chunk[..n].to_vec())
            }
            Conn::Tcp(s, buf) => framed(s, buf, &mut chunk),
            Conn::Tls(s, buf) => framed(s.as_mut(), buf, &mut chunk),
        }
    }
}

fn framed(s: &mut impl Read, buf: &mut Vec<u8>, chunk: &mut [u8]) -> std::io::Result<Vec<u8>> {
    loop {
        match wire::stream_frame(buf) {
            Frame::Message { len, skip } => {
                let m = buf[..len].to_vec();
                buf.drain(..skip);
                return Ok(m);
            }
            Frame::Garbage => return Err(std::io::Error::other("the server sent something that is not STUN")),
            Frame::Partial => {}
        }
        let n = s.read(chunk)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Why the probe stopped: printed with a likely cause, exit status 1.
struct Failed(String);

/// A client of one connection with its long-term credentials once known.
struct Client {
    conn: Conn,
    user: String,
    password: String,
    auth: Option<(String, String, crate::auth::Key)>,
    /// Whether it holds an allocation, to delete when the probe ends.
    allocated: bool,
}

/// An answer, kept whole.
struct Answer {
    raw: Vec<u8>,
    code: Option<u16>,
}

impl Answer {
    fn message(&self) -> Option<Message<'_>> {
        Message::decode(&self.raw).ok()
    }

    fn address(&self, t: u16) -> Option<SocketAddr> {
        self.message()?.xor_address(t)
    }

    fn text(&self, t: u16) -> Option<String> {
        self.message()?.text(t).map(str::to_string)
    }
}

impl Client {
    /// Sends a request of `method` with the attributes `add` writes, signed
    /// once the server has challenged (following 438s), and returns the
    /// answer.
    fn transact(&mut self, method: u16, add: impl Fn(&mut Encoder)) -> Result<Answer, Failed> {
        for _ in 0..3 {
            let txid: [u8; 12] = rand::random();
            let auth = self.auth.clone();
            let mut m = Vec::new();
            let mut e = Encoder::new(&mut m, method, Class::Request, txid);
            add(&mut e);
            if let Some((realm, nonce, _)) = &auth {
                e.attr(attr::USERNAME, self.user.as_bytes())
                    .attr(attr::REALM, realm.as_bytes())
                    .attr(attr::NONCE, nonce.as_bytes());
            }
            e.finish(auth.as_ref().map(|a| &a.2[..]), true);
            let a = self.roundtrip(&m, txid)?;
            match a.code {
                // The first challenge: sign from now on.
                Some(401) if auth.is_none() => {
                    let realm = a.text(attr::REALM).unwrap_or_default();
                    let nonce = a.text(attr::NONCE).unwrap_or_default();
                    let key = crate::auth::long_term_key(&self.user, &realm, &self.password);
                    self.auth = Some((realm, nonce, key));
                }
                Some(438) => {
                    if let (Some((realm, _, key)), Some(n)) = (self.auth.clone(), a.text(attr::NONCE)) {
                        self.auth = Some((realm, n, key));
                    }
                }
                _ => return Ok(a),
            }
        }
        Err(Failed(
            "the server keeps challenging (401/438) the signed request".into(),
        ))
    }

    /// Sends `m` (retransmitting over UDP) until the answer to `txid` comes.
    fn roundtrip(&mut self, m: &[u8], txid: [u8; 12]) -> Result<Answer, Failed> {
        let tries = if matches!(self.conn, Conn::Udp(_)) { 3 } else { 1 };
        for _ in 0..tries {
            self.conn.send(m).map_err(|e| Failed(format!("send failed: {e}")))?;
            loop {
                match self.conn.recv() {
                    Ok(b) => {
                        let code = match Message::decode(&b) {
                            Ok(d) if d.txid == txid && d.class != Class::Request => d.error_code(),
                            _ => continue,
                        };
                        return Ok(Answer { raw: b, code });
                    }
                    Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                        break
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                        return Err(Failed("refused: nothing listens on that port".into()))
                    }
                    Err(e) => return Err(Failed(format!("{e}"))),
                }
            }
        }
        Err(Failed("no answer (timeout)".into()))
    }
}

impl Client {
    /// Deletes the allocation, if it has one (Refresh with lifetime 0).
    fn release(&mut self) -> Result<(), Failed> {
        if !self.allocated {
            return Ok(());
        }
        match self.transact(method::REFRESH, |e| {
            e.u32(attr::LIFETIME, 0);
        })? {
            Answer { code: None, .. } => {
                self.allocated = false;
                Ok(())
            }
            Answer { code: Some(c), .. } => Err(Failed(format!("error {c}"))),
        }
    }
}

fn elapsed(t: Instant) -> String {
    format!("{:>6.1} ms", t.elapsed().as_secs_f64() * 1000.0)
}

/// The shared secret from --secret, --secret-file or `TURND_SECRET`.
fn secret(args: &Args) -> anyhow::Result<Option<String>> {
    if let Some(s) = &args.secret {
        return Ok(Some(s.clone()));
    }
    if let Some(f) = &args.secret_file {
        let s = std::fs::read_to_string(f).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", f.display()))?;
        let s = s.trim();
        anyhow::ensure!(!s.is_empty(), "{} is empty", f.display());
        return Ok(Some(s.to_string()));
    }
    if args.password.is_some() {
        return Ok(None);
    }
    Ok(std::env::var("TURND_SECRET").ok().filter(|s| !s.is_empty()))
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let target = parse(&args.url)?;
    let addr = (target.host.as_str(), target.port)
        .to_socket_addrs()
        .map_err(|e| anyhow::anyhow!("cannot resolve {}: {e}", target.host))?
        .next()
        .ok_or_else(|| anyhow::anyhow!("{} has no address", target.host))?;
    let (user, password) = match (secret(&args)?, &args.password) {
        (Some(s), _) => crate::auth::rest_credentials(
            s.as_bytes(),
            Some(&args.user),
            Duration::from_secs(600),
            crate::serve::unix_now(),
            ':',
        ),
        (None, Some(p)) => (args.user.clone(), p.clone()),
        (None, None) => anyhow::bail!(
            "give the TURN REST secret (--secret-file FILE, TURND_SECRET or --secret) or --user and --password"
        ),
    };
    println!("probing {} ({addr}) over {:?}", args.url, target.via);
    let start = Instant::now();
    let mut clients = Vec::new();
    let outcome = probe(&target, addr, &args, &user, &password, &mut clients, start);
    // Whatever happened, nothing stays behind on the server.
    let mut deleted = 0;
    for c in clients.iter_mut().filter(|c| c.allocated) {
        match c.release() {
            Ok(()) => deleted += 1,
            Err(Failed(why)) => println!("[{}] could not delete an allocation: {why}", elapsed(start)),
        }
    }
    if deleted > 0 {
        println!("[{}] {deleted} allocation(s) deleted", elapsed(start));
    }
    match outcome {
        Ok(()) => {
            println!("ok: data went through the relay");
            Ok(ExitCode::SUCCESS)
        }
        Err(Failed(why)) => {
            println!("FAILED: {why}");
            Ok(ExitCode::FAILURE)
        }
    }
}

fn hint_for(code: Option<u16>, via: Via) -> &'static str {
    match code {
        Some(401) => "wrong secret or password, or this machine's clock is off (REST usernames carry an expiry)",
        Some(403) => {
            "the server's peer policy refuses the other relayed address (turnd always permits its own relays; \
             other servers may need their relay range allowed, e.g. coturn's allowed-peer-ip)"
        }
        Some(437) => "this connection already has an allocation",
        Some(486) => "the user's allocation quota is full",
        Some(508) => "the server is out of relay ports or allocations, or shutting down",
        _ if via == Via::Udp => {
            "UDP may be blocked on this network: try turn:HOST:PORT?transport=tcp or turns:HOST:443"
        }
        _ => "",
    }
}

/// The probe's steps; the clients it opens go to `clients`, so the caller
/// can delete their allocations however it ends.
fn probe(
    t: &Target,
    addr: SocketAddr,
    args: &Args,
    user: &str,
    password: &str,
    clients: &mut Vec<Client>,
    start: Instant,
) -> Result<(), Failed> {
    let connect = |what: &str| -> Result<Client, Failed> {
        let conn = Conn::open(t, addr, args).map_err(|e| Failed(format!("{what}: cannot connect: {e:#}")))?;
        Ok(Client {
            conn,
            user: user.to_string(),
            password: password.to_string(),
            auth: None,
            allocated: false,
        })
    };
    let step = |what: &str, r: Result<Answer, Failed>, want: Option<u16>| -> Result<Answer, Failed> {
        match r {
            Ok(a) if a.code == want => Ok(a),
            Ok(a) => Err(Failed(format!(
                "{what}: error {} — {}",
                a.code.map_or("?".to_string(), |c| c.to_string()),
                hint_for(a.code, t.via)
            ))),
            Err(Failed(e)) if e.contains("timeout") => Err(Failed(format!("{what}: {e} — {}", hint_for(None, t.via)))),
            Err(Failed(e)) => Err(Failed(format!("{what}: {e}"))),
        }
    };
    clients.push(connect("first connection")?);
    println!("[{}] connected", elapsed(start));
    if let Conn::Tls(s, _) = &clients[0].conn {
        if let Some(leaf) = s.conn.peer_certificates().and_then(|c| c.first()) {
            let until = crate::tls::describe(leaf).map_or(0, |(_, until, _)| until);
            let until = crate::tls::date(until);
            let how = if args.insecure {
                "not verified (--insecure)"
            } else {
                "verified"
            };
            println!(
                "[{}] TLS certificate SHA-256 {}, valid until {until}, {how}",
                elapsed(start),
                crate::tls::fingerprint(leaf)
            );
        }
    }
    let a = &mut clients[0];
    let d = step("STUN Binding", a.transact(method::BINDING, |_| {}), None)?;
    let mapped = d.address(attr::XOR_MAPPED_ADDRESS);
    println!(
        "[{}] STUN Binding: this machine is seen as {}",
        elapsed(start),
        mapped.map_or("?".into(), |m| m.to_string())
    );
    let udp = |e: &mut Encoder| {
        e.attr(attr::REQUESTED_TRANSPORT, &[wire::PROTO_UDP, 0, 0, 0]);
    };
    let relayed = |d: &Answer| {
        d.address(attr::XOR_RELAYED_ADDRESS)
            .ok_or_else(|| Failed("Allocate: no relayed address in the answer".into()))
    };
    let d = a.transact(method::ALLOCATE, udp);
    // A draining server names where it sends new clients (a sibling of its
    // fleet, or `alternate-server`): say where.
    if let Ok(Answer { code: Some(300), raw }) = &d {
        let alt = Message::decode(raw)
            .ok()
            .and_then(|m| m.attr(attr::ALTERNATE_SERVER))
            .and_then(wire::plain_address);
        return Err(Failed(format!(
            "Allocate: error 300 — the server is draining (shutting down) and sends new clients to {}",
            alt.map_or("? (no ALTERNATE-SERVER)".to_string(), |a| a.to_string())
        )));
    }
    let d = step("Allocate", d, None)?;
    a.allocated = true;
    let ra = relayed(&d)?;
    println!("[{}] Allocate: relayed address {ra}", elapsed(start));
    clients.push(connect("second connection")?);
    let [a, b] = &mut clients[..] else {
        return Err(Failed("two connections expected".into()));
    };
    let d = step("second Allocate", b.transact(method::ALLOCATE, udp), None)?;
    b.allocated = true;
    let rb = relayed(&d)?;
    println!("[{}] second Allocate: relayed address {rb}", elapsed(start));
    let peer = |r: SocketAddr| {
        move |e: &mut Encoder| {
            e.xor_address(attr::XOR_PEER_ADDRESS, r);
        }
    };
    step(
        "CreatePermission",
        a.transact(method::CREATE_PERMISSION, peer(rb)),
        None,
    )?;
    step(
        "CreatePermission (second)",
        b.transact(method::CREATE_PERMISSION, peer(ra)),
        None,
    )?;
    println!("[{}] CreatePermission: both ways", elapsed(start));
    let bind = |n: u16, r: SocketAddr| {
        move |e: &mut Encoder| {
            let [hi, lo] = n.to_be_bytes();
            e.attr(attr::CHANNEL_NUMBER, &[hi, lo, 0, 0])
                .xor_address(attr::XOR_PEER_ADDRESS, r);
        }
    };
    step("ChannelBind", a.transact(method::CHANNEL_BIND, bind(0x4000, rb)), None)?;
    step(
        "ChannelBind (second)",
        b.transact(method::CHANNEL_BIND, bind(0x4001, ra)),
        None,
    )?;
    println!("[{}] ChannelBind: 0x4000 and 0x4001", elapsed(start));
    let payload = b"turnd probe";
    let data = |channel: u16| {
        let mut m = channel.to_be_bytes().to_vec();
        m.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        m.extend_from_slice(payload);
        m
    };
    let sent = Instant::now();
    let mut through = false;
    for _ in 0..3 {
        a.conn.send(&data(0x4000)).map_err(|e| Failed(format!("send: {e}")))?;
        match b.conn.recv() {
            Ok(m) if m.get(4..4 + payload.len()) == Some(&payload[..]) => {
                through = true;
                break;
            }
            _ => continue,
        }
    }
    if !through {
        return Err(Failed("data sent on the first relay never reached the second".into()));
    }
    b.conn.send(&data(0x4001)).map_err(|e| Failed(format!("send: {e}")))?;
    match a.conn.recv() {
        Ok(m) if m.get(4..4 + payload.len()) == Some(&payload[..]) => {}
        _ => return Err(Failed("data came through one way, not back".into())),
    }
    println!(
        "[{}] data relayed both ways (round trip {:.1} ms)",
        elapsed(start),
        sent.elapsed().as_secs_f64() * 1000.0
    );
    Ok(())
}
