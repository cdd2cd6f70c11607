//! A minimal STUN/TURN client-side message builder for tests, on the `stun`
//! and `turn` crates (not on turnd's own codec).

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use stun::agent::TransactionId;
use stun::attributes::*;
use stun::error_code::ErrorCodeAttribute;
use stun::fingerprint::FINGERPRINT;
use stun::integrity::MessageIntegrity;
use stun::message::*;
use stun::textattrs::TextAttribute;
use stun::xoraddr::XorMappedAddress;
use turn::proto::channum::ChannelNumber;
use turn::proto::data::Data;
use turn::proto::lifetime::Lifetime;
use turn::proto::peeraddr::PeerAddress;
use turn::proto::relayaddr::RelayedAddress;
use turn::proto::reqtrans::RequestedTransport;

pub type Attrs = Vec<Box<dyn Setter>>;

/// Long-term credentials for signing: user, realm, password, nonce.
#[derive(Clone, Debug)]
pub struct Cred {
    pub user: String,
    pub realm: String,
    pub pass: String,
    pub nonce: String,
}

pub fn build(typ: MessageType, mut attrs: Attrs, cred: Option<&Cred>, fingerprint: bool) -> Message {
    let mut setters: Attrs = vec![Box::new(typ), Box::new(TransactionId::new())];
    setters.append(&mut attrs);
    if let Some(c) = cred {
        setters.push(Box::new(TextAttribute::new(ATTR_USERNAME, c.user.clone())));
        setters.push(Box::new(TextAttribute::new(ATTR_REALM, c.realm.clone())));
        setters.push(Box::new(TextAttribute::new(ATTR_NONCE, c.nonce.clone())));
        setters.push(Box::new(MessageIntegrity::new_long_term_integrity(
            c.user.clone(),
            c.realm.clone(),
            c.pass.clone(),
        )));
    }
    if fingerprint {
        setters.push(Box::new(FINGERPRINT));
    }
    let mut m = Message::new();
    m.build(&setters).expect("test message builds");
    m
}

pub fn decode(bytes: &[u8]) -> Message {
    let mut m = Message::new();
    m.unmarshal_binary(bytes).expect("a STUN message");
    m
}

pub fn req(method: Method) -> MessageType {
    MessageType::new(method, CLASS_REQUEST)
}

pub fn error_code(m: &Message) -> Option<u16> {
    let mut e = ErrorCodeAttribute::default();
    e.get_from(m).ok().map(|_| e.code.0)
}

pub fn is_success(m: &Message) -> bool {
    m.typ.class == CLASS_SUCCESS_RESPONSE
}

pub fn text(m: &Message, t: AttrType) -> Option<String> {
    TextAttribute::get_from_as(m, t).ok().map(|a| a.text)
}

pub fn mapped(m: &Message) -> Option<SocketAddr> {
    let mut a = XorMappedAddress::default();
    a.get_from(m).ok().map(|_| SocketAddr::new(a.ip, a.port))
}

pub fn relayed(m: &Message) -> Option<SocketAddr> {
    let mut a = RelayedAddress::default();
    a.get_from(m).ok().map(|_| SocketAddr::new(a.ip, a.port))
}

pub fn lifetime(m: &Message) -> Option<Duration> {
    let mut l = Lifetime::default();
    l.get_from(m).ok().map(|_| l.0)
}

pub fn transport_udp() -> Box<dyn Setter> {
    Box::new(RequestedTransport {
        protocol: turn::proto::PROTO_UDP,
    })
}

pub fn peer(addr: SocketAddr) -> Box<dyn Setter> {
    Box::new(PeerAddress {
        ip: addr.ip(),
        port: addr.port(),
    })
}

pub fn channel(n: u16) -> Box<dyn Setter> {
    Box::new(ChannelNumber(n))
}

pub fn lifetime_attr(secs: u64) -> Box<dyn Setter> {
    Box::new(Lifetime(Duration::from_secs(secs)))
}

pub fn data(d: &[u8]) -> Box<dyn Setter> {
    Box::new(Data(d.to_vec()))
}

pub fn raw(t: u16, v: &[u8]) -> Box<dyn Setter> {
    Box::new(RawAttribute {
        typ: AttrType(t),
        length: v.len() as u16,
        value: v.to_vec(),
    })
}

/// ChannelData framing, optionally padded to 4 bytes.
pub fn channel_data(n: u16, payload: &[u8], pad: bool) -> Vec<u8> {
    let mut v = Vec::with_capacity(payload.len() + 8);
    v.extend_from_slice(&n.to_be_bytes());
    v.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    v.extend_from_slice(payload);
    if pad {
        while v.len() % 4 != 0 {
            v.push(0);
        }
    }
    v
}

/// A Data indication's peer and payload.
pub fn data_indication(m: &Message) -> Option<(SocketAddr, Vec<u8>)> {
    if m.typ != MessageType::new(METHOD_DATA, CLASS_INDICATION) {
        return None;
    }
    let mut p = PeerAddress::default();
    p.get_from(m).ok()?;
    let mut d = Data::default();
    d.get_from(m).ok()?;
    Some((SocketAddr::new(p.ip, p.port), d.0))
}
