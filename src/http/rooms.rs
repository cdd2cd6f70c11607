//! Signaling rooms, sans-IO: text in from a connection, `(recipient, text)`
//! out. The WebSocket driver ([`super::ws`]) owns the sockets and the clock.
//!
//! Protocol (JSON text messages):
//! - client `{"type":"join","room":"name"}` → client `{"type":"peers","you":id,"room":…,"peers":[ids]}`,
//!   every other member `{"type":"join","from":id}`;
//! - client `{"type":"offer"|"answer"|"candidate","to":id,"payload":…}` → that member
//!   `{"type":…,"from":id,"payload":…}`;
//! - client `{"type":"leave"}`, or the socket closing → others `{"type":"leave","from":id}`;
//! - anything wrong → the sender alone gets `{"type":"error","code":…,"message":…}`.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{json, Value};

/// One WebSocket connection.
pub type ConnId = u64;

/// Largest message accepted from a client.
pub const MAX_MESSAGE: usize = 64 * 1024;
/// Longest room name.
pub const MAX_ROOM_NAME: usize = 64;

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
enum ClientMsg {
    Join { room: String },
    Offer { to: String, payload: Value },
    Answer { to: String, payload: Value },
    Candidate { to: String, payload: Value },
    Leave,
}

/// Every room and who is in it.
pub struct Rooms {
    capacity: usize,
    rooms: HashMap<String, Vec<ConnId>>,
    member_of: HashMap<ConnId, String>,
}

/// The id a connection is known by to others in its room.
pub fn peer_id(c: ConnId) -> String {
    format!("p{c}")
}

fn parse_peer_id(s: &str) -> Option<ConnId> {
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
    /// Rooms of at most `capacity` members.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            rooms: HashMap::new(),
            member_of: HashMap::new(),
        }
    }

    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    /// The members of `room`.
    pub fn members(&self, room: &str) -> &[ConnId] {
        self.rooms.get(room).map_or(&[], |m| m.as_slice())
    }

    /// Call for each text message `from` sends; returns what to send to whom.
    pub fn handle(&mut self, from: ConnId, text: &str) -> Vec<(ConnId, String)> {
        if text.len() > MAX_MESSAGE {
            return vec![(from, error("too-large", "messages are limited to 64 KiB"))];
        }
        let msg: ClientMsg = match serde_json::from_str(text) {
            Ok(m) => m,
            Err(e) => {
                let (code, what) = match serde_json::from_str::<Value>(text) {
                    Err(_) => ("bad-json", "not JSON".to_string()),
                    Ok(v) => match v.get("type").and_then(Value::as_str) {
                        Some(t) if !["join", "offer", "answer", "candidate", "leave"].contains(&t) => {
                            ("unknown-type", format!("unknown message type `{t}`"))
                        }
                        _ => ("bad-message", e.to_string()),
                    },
                };
                return vec![(from, error(code, &what))];
            }
        };
        match msg {
            ClientMsg::Join { room } => self.join(from, room),
            ClientMsg::Leave => self.leave(from),
            ClientMsg::Offer { to, payload } => self.forward(from, "offer", &to, payload),
            ClientMsg::Answer { to, payload } => self.forward(from, "answer", &to, payload),
            ClientMsg::Candidate { to, payload } => self.forward(from, "candidate", &to, payload),
        }
    }

    /// Call when `conn`'s socket has closed.
    pub fn disconnect(&mut self, conn: ConnId) -> Vec<(ConnId, String)> {
        self.leave(conn)
    }

    fn join(&mut self, from: ConnId, room: String) -> Vec<(ConnId, String)> {
        if !valid_room(&room) {
            return vec![(
                from,
                error("bad-room", "room names are 1-64 characters of A-Z a-z 0-9 - _ ."),
            )];
        }
        if self.member_of.get(&from) == Some(&room) {
            return vec![(from, error("already-joined", "already in this room"))];
        }
        let members = self.rooms.get(&room).map_or(0, Vec::len);
        if members >= self.capacity {
            let text = format!("room `{room}` is full ({} people)", self.capacity);
            return vec![(from, error("room-full", &text))];
        }
        let mut out = self.leave(from);
        let list = self.rooms.entry(room.clone()).or_default();
        let others: Vec<String> = list.iter().map(|c| peer_id(*c)).collect();
        let joined = json!({"type": "join", "from": peer_id(from)}).to_string();
        out.extend(list.iter().map(|c| (*c, joined.clone())));
        list.push(from);
        out.push((
            from,
            json!({"type": "peers", "you": peer_id(from), "room": room, "peers": others}).to_string(),
        ));
        self.member_of.insert(from, room);
        out
    }

    fn leave(&mut self, from: ConnId) -> Vec<(ConnId, String)> {
        let Some(room) = self.member_of.remove(&from) else {
            return Vec::new();
        };
        let Some(list) = self.rooms.get_mut(&room) else {
            return Vec::new();
        };
        list.retain(|c| *c != from);
        let left = json!({"type": "leave", "from": peer_id(from)}).to_string();
        let out = list.iter().map(|c| (*c, left.clone())).collect();
        if list.is_empty() {
            self.rooms.remove(&room);
        }
        out
    }

    fn forward(&mut self, from: ConnId, kind: &str, to: &str, payload: Value) -> Vec<(ConnId, String)> {
        let Some(room) = self.member_of.get(&from) else {
            return vec![(from, error("not-joined", "join a room first"))];
        };
        let target = parse_peer_id(to).filter(|t| *t != from && self.members(room).contains(t));
        match target {
            Some(t) => vec![(
                t,
                json!({"type": kind, "from": peer_id(from), "payload": payload}).to_string(),
            )],
            None => vec![(from, error("no-such-peer", &format!("`{to}` is not in this room")))],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Value {
        serde_json::from_str(s).expect("server sends JSON")
    }

    fn only(out: Vec<(ConnId, String)>) -> (ConnId, Value) {
        assert_eq!(out.len(), 1, "{out:?}");
        let (c, t) = out.into_iter().next().expect("one");
        (c, v(&t))
    }

    #[test]
    fn join_announces_and_lists() {
        let mut r = Rooms::new(4);
        let (c, m) = only(r.handle(1, r#"{"type":"join","room":"a"}"#));
        assert_eq!(
            (c, m["type"].as_str(), m["peers"].as_array().map(Vec::len)),
            (1, Some("peers"), Some(0))
        );
        let out = r.handle(2, r#"{"type":"join","room":"a"}"#);
        assert_eq!(out.len(), 2);
        assert_eq!((out[0].0, v(&out[0].1)["type"].clone()), (1, json!("join")));
        assert_eq!(v(&out[1].1)["peers"], json!(["p1"]));
        assert_eq!(v(&out[1].1)["you"], json!("p2"));
    }

    #[test]
    fn fifth_member_is_refused_and_others_unaffected() {
        let mut r = Rooms::new(4);
        for c in 1..=4 {
            r.handle(c, r#"{"type":"join","room":"a"}"#);
        }
        let (c, m) = only(r.handle(5, r#"{"type":"join","room":"a"}"#));
        assert_eq!((c, m["code"].as_str()), (5, Some("room-full")));
        assert_eq!(r.members("a"), &[1, 2, 3, 4]);
        let (c, _) = only(r.handle(5, r#"{"type":"join","room":"b"}"#));
        assert_eq!(c, 5);
    }

    #[test]
    fn forwards_only_to_the_addressed_member_of_the_same_room() {
        let mut r = Rooms::new(4);
        for c in 1..=3 {
            r.handle(c, r#"{"type":"join","room":"a"}"#);
        }
        r.handle(9, r#"{"type":"join","room":"b"}"#);
        let (c, m) = only(r.handle(1, r#"{"type":"offer","to":"p3","payload":{"sdp":"x"}}"#));
        assert_eq!(
            (c, m["from"].as_str(), m["payload"]["sdp"].as_str()),
            (3, Some("p1"), Some("x"))
        );
        let (c, m) = only(r.handle(1, r#"{"type":"candidate","to":"p9","payload":{}}"#));
        assert_eq!((c, m["code"].as_str()), (1, Some("no-such-peer")));
        let (c, m) = only(r.handle(1, r#"{"type":"answer","to":"p1","payload":{}}"#));
        assert_eq!((c, m["code"].as_str()), (1, Some("no-such-peer")));
        let (c, m) = only(r.handle(7, r#"{"type":"offer","to":"p1","payload":{}}"#));
        assert_eq!((c, m["code"].as_str()), (7, Some("not-joined")));
    }

    #[test]
    fn malformed_and_unknown_messages_get_errors() {
        let mut r = Rooms::new(4);
        r.handle(1, r#"{"type":"join","room":"a"}"#);
        r.handle(2, r#"{"type":"join","room":"a"}"#);
        for (text, code) in [
            ("{", "bad-json"),
            ("[]", "bad-message"),
            (r#"{"type":"hello"}"#, "unknown-type"),
            (r#"{"type":"offer","to":"p2"}"#, "bad-message"),
            (r#"{"type":"join","room":"no spaces"}"#, "bad-room"),
            (r#"{"type":"join","room":""}"#, "bad-room"),
            (r#"{"type":"join","room":"a"}"#, "already-joined"),
        ] {
            let (c, m) = only(r.handle(1, text));
            assert_eq!((c, m["code"].as_str()), (1, Some(code)), "{text}");
        }
        let big = format!(
            r#"{{"type":"offer","to":"p2","payload":"{}"}}"#,
            "x".repeat(MAX_MESSAGE)
        );
        let (c, m) = only(r.handle(1, &big));
        assert_eq!((c, m["code"].as_str()), (1, Some("too-large")));
        assert_eq!(r.members("a"), &[1, 2]);
    }

    #[test]
    fn leaving_and_disconnecting_clean_up() {
        let mut r = Rooms::new(4);
        r.handle(1, r#"{"type":"join","room":"a"}"#);
        r.handle(2, r#"{"type":"join","room":"a"}"#);
        let (c, m) = only(r.handle(1, r#"{"type":"leave"}"#));
        assert_eq!(
            (c, m["type"].as_str(), m["from"].as_str()),
            (2, Some("leave"), Some("p1"))
        );
        assert!(r.disconnect(2).is_empty());
        assert_eq!(r.room_count(), 0);
        assert!(r.disconnect(3).is_empty());
        // Joining another room leaves the first.
        r.handle(1, r#"{"type":"join","room":"a"}"#);
        r.handle(2, r#"{"type":"join","room":"a"}"#);
        let out = r.handle(1, r#"{"type":"join","room":"b"}"#);
        assert_eq!(out.len(), 2);
        assert_eq!(r.members("a"), &[2]);
        assert_eq!(r.members("b"), &[1]);
    }
}
