//! Signaling rooms, sans-IO: text in from a connection, [`Out`] back. The
//! WebSocket driver ([`super::ws`]) owns the sockets, the clock and the
//! randomness.
//!
//! A *participant* outlives its connection: a phone that changes networks
//! mid-call reconnects and resumes as the same participant, so the others
//! keep their peer connection to it. Protocol (JSON text messages):
//! - client `{"type":"join","room":"name"}` → client
//!   `{"type":"peers","you":id,"room":…,"token":…,"peers":[ids]}`, every other
//!   member `{"type":"join","from":id}`;
//! - client `{"type":"offer"|"answer"|"candidate","to":id,"payload":…,"seq":n}`
//!   → that member `{"type":…,"from":id,"payload":…,"seq":m}`;
//! - client `{"type":"ping","ack":m}` → client `{"type":"pong","ack":n}`: the
//!   client's heartbeat, and each side's acknowledgement of the other's
//!   sequenced messages (everything relayed, joins and leaves carry `seq`);
//! - client `{"type":"join","room":…,"resume":token,"ack":m}` on a new
//!   connection → `{"type":"resumed","you":id,…,"ack":n}`, then every
//!   message after `m` again; the client sends again what came after `n`
//!   (duplicates by `seq` are dropped on both sides). An unknown or expired
//!   token joins afresh (`peers`, a new id);
//! - client `{"type":"leave"}`, a close frame, or a dropped connection not
//!   resumed within [`RESUME_GRACE`] → others `{"type":"leave","from":id}`;
//! - anything wrong → the sender alone gets `{"type":"error","code":…,"message":…}`.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{json, Value};

/// One WebSocket connection.
pub type ConnId = u64;
/// One participant, across the connections it resumes on.
type MemberId = u64;

/// Largest message accepted from a client.
pub const MAX_MESSAGE: usize = 64 * 1024;
/// Longest room name.
pub const MAX_ROOM_NAME: usize = 64;
/// How long a participant whose connection dropped may resume before the
/// room is told it left.
pub const RESUME_GRACE: Duration = Duration::from_secs(30);
/// Messages kept for a participant until it acknowledges them; one that
/// falls further behind is cut (it stopped reading).
pub const MAX_UNACKED: usize = 256;

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
enum ClientMsg {
    Join {
        room: String,
        #[serde(default)]
        resume: Option<String>,
        #[serde(default)]
        ack: u64,
    },
    Offer {
        to: String,
        payload: Value,
        #[serde(default)]
        seq: Option<u64>,
    },
    Answer {
        to: String,
        payload: Value,
        #[serde(default)]
        seq: Option<u64>,
    },
    Candidate {
        to: String,
        payload: Value,
        #[serde(default)]
        seq: Option<u64>,
    },
    Ping {
        #[serde(default)]
        ack: u64,
    },
    Leave,
}

const TYPES: [&str; 6] = ["join", "offer", "answer", "candidate", "ping", "leave"];

/// What the driver does.
#[derive(Debug, PartialEq, Eq)]
pub enum Out {
    Send(ConnId, String),
    /// The connection no longer stands for anyone (its participant resumed
    /// on another, or was cut): close it.
    Close(ConnId),
}

struct Member {
    room: String,
    conn: Option<ConnId>,
    token: String,
    /// Since when it has had no connection.
    away: Option<Instant>,
    /// The last `seq` sent to it, and what it has not acknowledged.
    sent: u64,
    unacked: VecDeque<(u64, String)>,
    /// The last `seq` heard from it.
    heard: u64,
}

/// Every room and who is in it.
pub struct Rooms {
    capacity: usize,
    rooms: HashMap<String, Vec<MemberId>>,
    members: HashMap<MemberId, Member>,
    by_conn: HashMap<ConnId, MemberId>,
    by_token: HashMap<String, MemberId>,
    next: MemberId,
    tokens: Box<dyn FnMut() -> String + Send>,
}

/// The id a participant is known by to others in its room.
pub fn peer_id(m: MemberId) -> String {
    format!("p{m}")
}

fn parse_peer_id(s: &str) -> Option<MemberId> {
    s.strip_prefix('p')?.parse().ok()
}

/// An error message for one connection.
pub fn error(code: &str, message: &str) -> String {
    json!({"type": "error", "code": code, "message": message}).to_string()
}

fn valid_room(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_ROOM_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl Rooms {
    /// Rooms of at most `capacity` members; `tokens` makes the secret
    /// resume tokens (unguessable: whoever holds one is that participant).
    pub fn new(capacity: usize, tokens: impl FnMut() -> String + Send + 'static) -> Self {
        Self {
            capacity,
            rooms: HashMap::new(),
            members: HashMap::new(),
            by_conn: HashMap::new(),
            by_token: HashMap::new(),
            next: 1,
            tokens: Box::new(tokens),
        }
    }

    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    /// The ids of the members of `room`.
    pub fn members(&self, room: &str) -> Vec<String> {
        self.rooms
            .get(room)
            .map_or_else(Vec::new, |m| m.iter().map(|id| peer_id(*id)).collect())
    }

    /// Call for each text message `from` sends; returns what to do.
    pub fn handle(&mut self, from: ConnId, text: &str) -> Vec<Out> {
        if text.len() > MAX_MESSAGE {
            return vec![Out::Send(from, error("too-large", "messages are limited to 64 KiB"))];
        }
        let msg: ClientMsg = match serde_json::from_str(text) {
            Ok(m) => m,
            Err(e) => {
                let (code, what) = match serde_json::from_str::<Value>(text) {
                    Err(_) => ("bad-json", "not JSON".to_string()),
                    Ok(v) => match v.get("type").and_then(Value::as_str) {
                        Some(t) if !TYPES.contains(&t) => ("unknown-type", format!("unknown message type `{t}`")),
                        _ => ("bad-message", e.to_string()),
                    },
                };
                return vec![Out::Send(from, error(code, &what))];
            }
        };
        match msg {
            ClientMsg::Join { room, resume, ack } => self.join(from, room, resume, ack),
            ClientMsg::Leave => self.leave(from),
            ClientMsg::Ping { ack } => self.ping(from, ack),
            ClientMsg::Offer { to, payload, seq } => self.forward(from, "offer", &to, payload, seq),
            ClientMsg::Answer { to, payload, seq } => self.forward(from, "answer", &to, payload, seq),
            ClientMsg::Candidate { to, payload, seq } => self.forward(from, "candidate", &to, payload, seq),
        }
    }

    /// Call when `conn` has closed: with `clean` (a close frame: the page
    /// was closed or left) its participant leaves at once; otherwise (the
    /// connection dropped, or the page is reconnecting) it may resume
    /// within [`RESUME_GRACE`].
    pub fn disconnect(&mut self, conn: ConnId, clean: bool, now: Instant) -> Vec<Out> {
        if clean {
            return self.leave(conn);
        }
        if let Some(id) = self.by_conn.remove(&conn) {
            if let Some(m) = self.members.get_mut(&id) {
                m.conn = None;
                m.away = Some(now);
            }
        }
        Vec::new()
    }

    /// Participants away for [`RESUME_GRACE`] leave; call every second or so.
    pub fn expire(&mut self, now: Instant) -> Vec<Out> {
        let gone: Vec<MemberId> = self
            .members
            .iter()
            .filter(|(_, m)| m.away.is_some_and(|t| now.saturating_duration_since(t) >= RESUME_GRACE))
            .map(|(id, _)| *id)
            .collect();
        let mut out = Vec::new();
        for id in gone {
            out.extend(self.remove(id));
        }
        out
    }

    fn join(&mut self, from: ConnId, room: String, resume: Option<String>, ack: u64) -> Vec<Out> {
        if !valid_room(&room) {
            return vec![Out::Send(
                from,
                error("bad-room", "room names are 1-64 characters of A-Z a-z 0-9 - _ ."),
            )];
        }
        if let Some(id) = resume.and_then(|t| self.by_token.get(&t).copied()) {
            if self.members.get(&id).is_some_and(|m| m.room == room) {
                return self.resume(from, id, ack);
            }
        }
        if self
            .by_conn
            .get(&from)
            .is_some_and(|id| self.members.get(id).is_some_and(|m| m.room == room))
        {
            return vec![Out::Send(from, error("already-joined", "already in this room"))];
        }
        let count = self.rooms.get(&room).map_or(0, Vec::len);
        if count >= self.capacity {
            let text = format!("room `{room}` is full ({} people)", self.capacity);
            return vec![Out::Send(from, error("room-full", &text))];
        }
        let mut out = self.leave(from);
        let id = self.next;
        self.next += 1;
        let others = self.rooms.get(&room).cloned().unwrap_or_default();
        for o in &others {
            let joined = json!({"type": "join", "from": peer_id(id)});
            out.extend(self.post(*o, joined));
        }
        let token = (self.tokens)();
        out.push(Out::Send(
            from,
            json!({"type": "peers", "you": peer_id(id), "room": room, "token": token,
                   "peers": others.iter().map(|o| peer_id(*o)).collect::<Vec<_>>()})
            .to_string(),
        ));
        self.rooms.entry(room.clone()).or_default().push(id);
        self.by_token.insert(token.clone(), id);
        self.by_conn.insert(from, id);
        self.members.insert(
            id,
            Member {
                room,
                conn: Some(from),
                token,
                away: None,
                sent: 0,
                unacked: VecDeque::new(),
                heard: 0,
            },
        );
        out
    }

    /// `from` takes over participant `id`: told where things stand, then
    /// sent again what it has not acknowledged.
    fn resume(&mut self, from: ConnId, id: MemberId, ack: u64) -> Vec<Out> {
        let mut out = Vec::new();
        if self.by_conn.get(&from).is_some_and(|m| *m != id) {
            out.extend(self.leave(from));
        }
        let peers = self.members_except(id);
        let Some(m) = self.members.get_mut(&id) else {
            return out;
        };
        if let Some(old) = m.conn.replace(from) {
            if old != from {
                self.by_conn.remove(&old);
                out.push(Out::Close(old));
            }
        }
        m.away = None;
        m.unacked.retain(|(seq, _)| *seq > ack);
        out.push(Out::Send(
            from,
            json!({"type": "resumed", "you": peer_id(id), "room": m.room, "token": m.token,
                   "peers": peers, "ack": m.heard})
            .to_string(),
        ));
        out.extend(m.unacked.iter().map(|(_, t)| Out::Send(from, t.clone())));
        self.by_conn.insert(from, id);
        out
    }

    fn members_except(&self, id: MemberId) -> Vec<String> {
        let room = self.members.get(&id).map(|m| m.room.as_str()).unwrap_or_default();
        self.rooms.get(room).map_or_else(Vec::new, |l| {
            l.iter().filter(|o| **o != id).map(|o| peer_id(*o)).collect()
        })
    }

    fn ping(&mut self, from: ConnId, ack: u64) -> Vec<Out> {
        let Some(m) = self.by_conn.get(&from).and_then(|id| self.members.get_mut(id)) else {
            return vec![Out::Send(from, json!({"type": "pong", "ack": 0}).to_string())];
        };
        m.unacked.retain(|(seq, _)| *seq > ack);
        vec![Out::Send(from, json!({"type": "pong", "ack": m.heard}).to_string())]
    }

    /// The participant on `conn` leaves (an explicit leave, a close frame,
    /// or another join).
    fn leave(&mut self, conn: ConnId) -> Vec<Out> {
        match self.by_conn.get(&conn).copied() {
            Some(id) => self.remove(id),
            None => Vec::new(),
        }
    }

    /// Participant `id` is gone; the others hear it.
    fn remove(&mut self, id: MemberId) -> Vec<Out> {
        let Some(m) = self.members.remove(&id) else {
            return Vec::new();
        };
        self.by_token.remove(&m.token);
        if let Some(c) = m.conn {
            self.by_conn.remove(&c);
        }
        let others = match self.rooms.get_mut(&m.room) {
            Some(list) => {
                list.retain(|o| *o != id);
                let others = list.clone();
                if list.is_empty() {
                    self.rooms.remove(&m.room);
                }
                others
            }
            None => Vec::new(),
        };
        let mut out = Vec::new();
        for o in others {
            out.extend(self.post(o, json!({"type": "leave", "from": peer_id(id)})));
        }
        out
    }

    /// Sends `msg` to participant `to` with its next `seq`, keeping it until
    /// acknowledged (and sent again on a resume). A participant too far
    /// behind is cut.
    fn post(&mut self, to: MemberId, mut msg: Value) -> Vec<Out> {
        let Some(m) = self.members.get_mut(&to) else {
            return Vec::new();
        };
        m.sent += 1;
        msg["seq"] = json!(m.sent);
        let text = msg.to_string();
        m.unacked.push_back((m.sent, text.clone()));
        if m.unacked.len() > MAX_UNACKED {
            let conn = m.conn;
            let mut out = self.remove(to);
            out.extend(conn.map(Out::Close));
            return out;
        }
        m.conn.map(|c| Out::Send(c, text)).into_iter().collect()
    }

    fn forward(&mut self, from: ConnId, kind: &str, to: &str, payload: Value, seq: Option<u64>) -> Vec<Out> {
        let Some(&me) = self.by_conn.get(&from) else {
            return vec![Out::Send(from, error("not-joined", "join a room first"))];
        };
        let Some(m) = self.members.get_mut(&me) else {
            return Vec::new();
        };
        if let Some(seq) = seq {
            if seq <= m.heard {
                return Vec::new(); // sent again after a resume: already passed on
            }
            m.heard = seq;
        }
        let room = m.room.clone();
        let target = parse_peer_id(to).filter(|t| *t != me && self.rooms.get(&room).is_some_and(|l| l.contains(t)));
        match target {
            Some(t) => self.post(t, json!({"type": kind, "from": peer_id(me), "payload": payload})),
            None => vec![Out::Send(
                from,
                error("no-such-peer", &format!("`{to}` is not in this room")),
            )],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rooms(capacity: usize) -> Rooms {
        let mut n = 0;
        Rooms::new(capacity, move || {
            n += 1;
            format!("t{n}")
        })
    }

    fn v(s: &str) -> Value {
        serde_json::from_str(s).expect("server sends JSON")
    }

    fn sent(out: Vec<Out>) -> Vec<(ConnId, Value)> {
        out.into_iter()
            .map(|o| match o {
                Out::Send(c, t) => (c, v(&t)),
                Out::Close(c) => (c, json!({"type": "closed"})),
            })
            .collect()
    }

    fn only(out: Vec<Out>) -> (ConnId, Value) {
        let out = sent(out);
        assert_eq!(out.len(), 1, "{out:?}");
        out.into_iter().next().expect("one")
    }

    fn at(secs: u64) -> Instant {
        // One base instant for a whole test: offsets from it.
        thread_local!(static BASE: Instant = Instant::now());
        BASE.with(|b| *b + Duration::from_secs(secs))
    }

    fn h(r: &mut Rooms, c: ConnId, text: &str) -> Vec<Out> {
        r.handle(c, text)
    }

    #[test]
    fn join_announces_and_lists() {
        let mut r = rooms(4);
        let (c, m) = only(h(&mut r, 1, r#"{"type":"join","room":"a"}"#));
        assert_eq!(
            (
                c,
                m["type"].as_str(),
                m["peers"].as_array().map(Vec::len),
                m["token"].as_str()
            ),
            (1, Some("peers"), Some(0), Some("t1"))
        );
        let out = sent(h(&mut r, 2, r#"{"type":"join","room":"a"}"#));
        assert_eq!(out.len(), 2);
        assert_eq!(out[0], (1, json!({"type": "join", "from": "p2", "seq": 1})));
        assert_eq!(out[1].1["peers"], json!(["p1"]));
        assert_eq!(out[1].1["you"], json!("p2"));
    }

    #[test]
    fn fifth_member_is_refused_and_others_unaffected() {
        let mut r = rooms(4);
        for c in 1..=4 {
            h(&mut r, c, r#"{"type":"join","room":"a"}"#);
        }
        let (c, m) = only(h(&mut r, 5, r#"{"type":"join","room":"a"}"#));
        assert_eq!((c, m["code"].as_str()), (5, Some("room-full")));
        assert_eq!(r.members("a"), ["p1", "p2", "p3", "p4"]);
        let (c, _) = only(h(&mut r, 5, r#"{"type":"join","room":"b"}"#));
        assert_eq!(c, 5);
    }

    #[test]
    fn forwards_only_to_the_addressed_member_of_the_same_room() {
        let mut r = rooms(4);
        for c in 1..=3 {
            h(&mut r, c, r#"{"type":"join","room":"a"}"#);
        }
        h(&mut r, 9, r#"{"type":"join","room":"b"}"#);
        let (c, m) = only(h(&mut r, 1, r#"{"type":"offer","to":"p3","payload":{"sdp":"x"}}"#));
        assert_eq!(
            (c, m["from"].as_str(), m["payload"]["sdp"].as_str()),
            (3, Some("p1"), Some("x"))
        );
        let (c, m) = only(h(&mut r, 1, r#"{"type":"candidate","to":"p4","payload":{}}"#));
        assert_eq!((c, m["code"].as_str()), (1, Some("no-such-peer")));
        let (c, m) = only(h(&mut r, 1, r#"{"type":"answer","to":"p1","payload":{}}"#));
        assert_eq!((c, m["code"].as_str()), (1, Some("no-such-peer")));
        let (c, m) = only(h(&mut r, 7, r#"{"type":"offer","to":"p1","payload":{}}"#));
        assert_eq!((c, m["code"].as_str()), (7, Some("not-joined")));
    }

    #[test]
    fn malformed_and_unknown_messages_get_errors() {
        let mut r = rooms(4);
        h(&mut r, 1, r#"{"type":"join","room":"a"}"#);
        h(&mut r, 2, r#"{"type":"join","room":"a"}"#);
        for (text, code) in [
            ("{", "bad-json"),
            ("[]", "bad-message"),
            (r#"{"type":"hello"}"#, "unknown-type"),
            (r#"{"type":"offer","to":"p2"}"#, "bad-message"),
            (r#"{"type":"join","room":"no spaces"}"#, "bad-room"),
            (r#"{"type":"join","room":""}"#, "bad-room"),
            (r#"{"type":"join","room":"a"}"#, "already-joined"),
            (r#"{"type":"ping","ack":"x"}"#, "bad-message"),
        ] {
            let (c, m) = only(h(&mut r, 1, text));
            assert_eq!((c, m["code"].as_str()), (1, Some(code)), "{text}");
        }
        let big = format!(
            r#"{{"type":"offer","to":"p2","payload":"{}"}}"#,
            "x".repeat(MAX_MESSAGE)
        );
        let (c, m) = only(h(&mut r, 1, &big));
        assert_eq!((c, m["code"].as_str()), (1, Some("too-large")));
        assert_eq!(r.members("a"), ["p1", "p2"]);
    }

    #[test]
    fn leaving_and_closing_clean_up() {
        let mut r = rooms(4);
        h(&mut r, 1, r#"{"type":"join","room":"a"}"#);
        h(&mut r, 2, r#"{"type":"join","room":"a"}"#);
        let (c, m) = only(h(&mut r, 1, r#"{"type":"leave"}"#));
        assert_eq!(
            (c, m["type"].as_str(), m["from"].as_str()),
            (2, Some("leave"), Some("p1"))
        );
        assert!(r.disconnect(2, true, at(0)).is_empty());
        assert_eq!(r.room_count(), 0);
        assert!(r.disconnect(3, true, at(0)).is_empty());
        // Joining another room leaves the first.
        h(&mut r, 1, r#"{"type":"join","room":"a"}"#);
        h(&mut r, 2, r#"{"type":"join","room":"a"}"#);
        let out = h(&mut r, 1, r#"{"type":"join","room":"b"}"#);
        assert_eq!(out.len(), 2);
        assert_eq!(r.members("a"), ["p4"]);
        assert_eq!(r.members("b"), ["p5"]);
    }

    /// A participant whose connection dropped resumes on a new one as the
    /// same id, gets what was sent meanwhile (and what it had not
    /// acknowledged), and its own messages sent again are passed on once.
    #[test]
    fn a_dropped_participant_resumes_where_it_was() {
        let mut r = rooms(4);
        let (_, joined) = only(h(&mut r, 1, r#"{"type":"join","room":"a"}"#));
        let token = joined["token"].as_str().expect("token").to_string();
        h(&mut r, 2, r#"{"type":"join","room":"a"}"#);
        // p1 got p2's join (seq 1) and acknowledges it.
        let (_, pong) = only(h(&mut r, 1, r#"{"type":"ping","ack":1}"#));
        assert_eq!(pong, json!({"type": "pong", "ack": 0}));
        // p2's offer reaches p1's connection, which dies unnoticed (seq 2 lost).
        let (c, m) = only(h(&mut r, 2, r#"{"type":"offer","to":"p1","payload":"o1","seq":1}"#));
        assert_eq!((c, m["seq"].as_u64()), (1, Some(2)));
        // p1's offer, seq 1, arrives; its candidate, seq 2, is lost.
        h(&mut r, 1, r#"{"type":"offer","to":"p2","payload":"x","seq":1}"#);
        assert!(r.disconnect(1, false, at(1)).is_empty(), "the room is not told yet");
        // Meanwhile p2 restarts: kept for p1.
        assert!(h(&mut r, 2, r#"{"type":"offer","to":"p1","payload":"o2","seq":2}"#).is_empty());
        // p1 resumes on connection 3: told p2 is there and that its seq 1 came,
        // then sent seq 2 and 3 again.
        let text = format!(r#"{{"type":"join","room":"a","resume":"{token}","ack":1}}"#);
        let out = sent(r.handle(3, &text));
        assert_eq!(out.len(), 3, "{out:?}");
        assert_eq!(
            (
                out[0].0,
                out[0].1["type"].as_str(),
                out[0].1["you"].as_str(),
                out[0].1["ack"].as_u64()
            ),
            (3, Some("resumed"), Some("p1"), Some(1))
        );
        assert_eq!(out[0].1["peers"], json!(["p2"]));
        assert_eq!(
            (out[1].1["payload"].as_str(), out[1].1["seq"].as_u64()),
            (Some("o1"), Some(2))
        );
        assert_eq!(
            (out[2].1["payload"].as_str(), out[2].1["seq"].as_u64()),
            (Some("o2"), Some(3))
        );
        // p1 sends seq 1 again (dropped: already passed on) and 2.
        assert!(h(&mut r, 3, r#"{"type":"offer","to":"p2","payload":"x","seq":1}"#).is_empty());
        let (c, m) = only(h(&mut r, 3, r#"{"type":"candidate","to":"p2","payload":"c","seq":2}"#));
        assert_eq!((c, m["from"].as_str()), (2, Some("p1")));
        // The old connection speaks for nobody now.
        let (_, m) = only(h(&mut r, 1, r#"{"type":"candidate","to":"p2","payload":"c","seq":3}"#));
        assert_eq!(m["code"], "not-joined");
        assert!(r.disconnect(1, true, at(6)).is_empty());
        assert_eq!(r.members("a"), ["p1", "p2"]);
    }

    /// Resuming while the old connection still seems open (the server has
    /// not noticed it died) closes the old one.
    #[test]
    fn resuming_replaces_a_connection_not_yet_known_dead() {
        let mut r = rooms(4);
        let (_, joined) = only(h(&mut r, 1, r#"{"type":"join","room":"a"}"#));
        let text = format!(
            r#"{{"type":"join","room":"a","resume":"{}"}}"#,
            joined["token"].as_str().unwrap_or("")
        );
        let out = r.handle(2, &text);
        assert_eq!(out[0], Out::Close(1));
        assert!(r.disconnect(1, false, at(2)).is_empty());
        assert_eq!(r.members("a"), ["p1"]);
        // A wrong token, or the right one for another room: a fresh join.
        let (_, m) = only(h(&mut r, 3, r#"{"type":"join","room":"b","resume":"t1"}"#));
        assert_eq!((m["type"].as_str(), m["you"].as_str()), (Some("peers"), Some("p2")));
        let (_, m) = only(h(&mut r, 4, r#"{"type":"join","room":"c","resume":"nope"}"#));
        assert_eq!(m["you"], "p3");
    }

    /// Not resumed within the grace: the room is told it left, and its token
    /// no longer resumes.
    #[test]
    fn a_participant_not_back_in_time_leaves() {
        let mut r = rooms(4);
        h(&mut r, 1, r#"{"type":"join","room":"a"}"#);
        h(&mut r, 2, r#"{"type":"join","room":"a"}"#);
        r.disconnect(2, false, at(10));
        assert!(r.expire(at(10) + RESUME_GRACE - Duration::from_millis(1)).is_empty());
        let (c, m) = only(r.expire(at(10) + RESUME_GRACE));
        assert_eq!(
            (c, m["type"].as_str(), m["from"].as_str()),
            (1, Some("leave"), Some("p2"))
        );
        assert_eq!(r.members("a"), ["p1"]);
        let out = sent(r.handle(3, r#"{"type":"join","room":"a","resume":"t2"}"#));
        assert_eq!(out[0].1["type"], "join", "p1 hears of a newcomer");
        assert_eq!(
            (out[1].1["type"].as_str(), out[1].1["you"].as_str()),
            (Some("peers"), Some("p3"))
        );
    }

    /// A participant that never acknowledges is cut after MAX_UNACKED
    /// messages rather than allowed to grow memory.
    #[test]
    fn unacknowledged_messages_are_bounded() {
        let mut r = rooms(4);
        h(&mut r, 1, r#"{"type":"join","room":"a"}"#);
        h(&mut r, 2, r#"{"type":"join","room":"a"}"#);
        h(&mut r, 2, r#"{"type":"ping","ack":1}"#);
        for i in 1..MAX_UNACKED {
            let out = h(&mut r, 1, &format!(r#"{{"type":"candidate","to":"p2","payload":{i}}}"#));
            assert_eq!(out.len(), 1);
        }
        // p2 acknowledges: nothing cut; p1 never did (one join kept).
        h(&mut r, 2, &format!(r#"{{"type":"ping","ack":{MAX_UNACKED}}}"#));
        let out = h(&mut r, 1, r#"{"type":"candidate","to":"p2","payload":0}"#);
        assert_eq!(out.len(), 1);
        for _ in 0..MAX_UNACKED {
            h(&mut r, 2, r#"{"type":"candidate","to":"p1","payload":0}"#);
        }
        assert_eq!(r.members("a"), ["p2"], "p1 was cut");
    }
}
