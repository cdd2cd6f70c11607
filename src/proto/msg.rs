//! The wire format: STUN messages through the `stun` crate, behind a strict
//! validation layer, and the 4-byte ChannelData header by hand.
//!
//! `stun::message::Message::decode` accepts shapes RFC 8489 says to drop (a
//! length that is not a multiple of 4, bytes past the declared length, the
//! two leading bits set) and keeps attributes that follow
//! MESSAGE-INTEGRITY; [`decode`] rejects or trims those before anything reads
//! the message. ChannelData is the hot path and is parsed here without the
//! crate (whose `ChannelData::decode` copies the payload into a `Vec`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use stun::attributes::*;
use stun::fingerprint::FINGERPRINT;
use stun::integrity::MessageIntegrity;
use stun::message::{Message, MessageClass, MessageType, Setter, MAGIC_COOKIE, MESSAGE_HEADER_SIZE};

/// Size of the ChannelData header ([RFC 8656 §12.4](https://www.rfc-editor.org/rfc/rfc8656#section-12.4)).
pub const CHANNEL_HEADER: usize = 4;
/// Channel numbers a client may bind ([RFC 8656 §12](https://www.rfc-editor.org/rfc/rfc8656#section-12)):
/// 0x4000–0x4FFF; 0x5000–0xFFFF are reserved.
pub const CHANNEL_MIN: u16 = 0x4000;
pub const CHANNEL_MAX: u16 = 0x4FFF;
/// The RFC 5766 range, which coturn's `turnutils_uclient` and older pjnath
/// still pick from: bindable only with `relay.rfc5766-channels`, and the
/// range ChannelData is parsed in (a number nobody could bind finds no
/// route and is dropped there).
pub const CHANNEL_MAX_RFC5766: u16 = 0x7FFF;

/// What a datagram looks like from its first byte
/// ([RFC 8656 §12](https://www.rfc-editor.org/rfc/rfc8656#section-12): 0b00 STUN, 0b01 ChannelData).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Stun,
    ChannelData,
    Other,
}

pub fn classify(buf: &[u8]) -> Kind {
    match buf.first() {
        Some(b) if b >> 6 == 0 => Kind::Stun,
        Some(b) if b >> 6 == 1 => Kind::ChannelData,
        _ => Kind::Other,
    }
}

/// A ChannelData message's channel number and payload range, or `None` when
/// the header is short or the declared length runs past the buffer. Padding
/// after the payload is accepted and ignored.
#[inline]
pub fn channel_data(buf: &[u8]) -> Option<(u16, usize)> {
    if buf.len() < CHANNEL_HEADER {
        return None;
    }
    let channel = u16::from_be_bytes([buf[0], buf[1]]);
    let len = u16::from_be_bytes([buf[2], buf[3]]) as usize;
    if !(CHANNEL_MIN..=CHANNEL_MAX_RFC5766).contains(&channel) || CHANNEL_HEADER + len > buf.len() {
        return None;
    }
    Some((channel, len))
}

/// Writes a ChannelData header in front of `len` bytes of payload.
#[inline]
pub fn write_channel_header(header: &mut [u8; CHANNEL_HEADER], channel: u16, len: usize) {
    header[..2].copy_from_slice(&channel.to_be_bytes());
    header[2..].copy_from_slice(&(len as u16).to_be_bytes());
}

/// The next message on a TCP or TLS byte stream
/// ([RFC 8656 §12.5](https://www.rfc-editor.org/rfc/rfc8656#section-12.5)):
/// STUN messages carry their length, ChannelData its payload length and,
/// on a stream, padding to a multiple of 4 that the length leaves out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// The buffer does not hold a whole message yet.
    Partial,
    /// The first `len` bytes are a message; `skip` bytes (with padding) go.
    Message { len: usize, skip: usize },
    /// Neither STUN nor ChannelData: the stream cannot be framed.
    Garbage,
}

pub fn stream_frame(buf: &[u8]) -> Frame {
    match buf.first() {
        None => return Frame::Partial,
        Some(b) if b >> 6 > 1 => return Frame::Garbage,
        Some(_) if buf.len() < CHANNEL_HEADER => return Frame::Partial,
        Some(_) => {}
    }
    let len = u16::from_be_bytes([buf[2], buf[3]]) as usize;
    // A STUN header that cannot be one (unaligned length, wrong cookie)
    // means the stream is not STUN, or lost its framing: nothing after it
    // can be trusted.
    if buf[0] >> 6 == 0 && (len % 4 != 0 || buf.get(4..8).is_some_and(|c| c != MAGIC_COOKIE.to_be_bytes())) {
        return Frame::Garbage;
    }
    let (len, skip) = if buf[0] >> 6 == 0 {
        (MESSAGE_HEADER_SIZE + len, MESSAGE_HEADER_SIZE + len)
    } else {
        (CHANNEL_HEADER + len, (CHANNEL_HEADER + len + 3) & !3)
    };
    if buf.len() < skip {
        Frame::Partial
    } else {
        Frame::Message { len, skip }
    }
}

/// Why a datagram that looked like STUN was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("shorter than a STUN header")]
    Short,
    #[error("leading bits set")]
    LeadingBits,
    #[error("wrong magic cookie")]
    Cookie,
    #[error("length not a multiple of 4")]
    Unaligned,
    #[error("length does not match the datagram")]
    Length,
    #[error("malformed attributes")]
    Attributes,
    #[error("FINGERPRINT is not last or does not match")]
    Fingerprint,
}

/// A validated STUN message.
pub struct Decoded {
    pub msg: Message,
    /// Attributes that count: those before MESSAGE-INTEGRITY, plus it
    /// ([RFC 8489 §14.5](https://www.rfc-editor.org/rfc/rfc8489#section-14.5): what follows it, but FINGERPRINT, is ignored).
    pub counted: usize,
    pub has_integrity: bool,
    pub has_fingerprint: bool,
}

impl Decoded {
    pub fn class(&self) -> MessageClass {
        self.msg.typ.class
    }

    /// The value of the first counted attribute of type `t`.
    pub fn attr(&self, t: AttrType) -> Option<&[u8]> {
        self.counted_attrs().find(|a| a.typ == t).map(|a| a.value.as_slice())
    }

    pub fn counted_attrs(&self) -> impl Iterator<Item = &RawAttribute> {
        self.msg.attributes.0.iter().take(self.counted)
    }

    pub fn text(&self, t: AttrType) -> Option<&str> {
        self.attr(t).and_then(|v| std::str::from_utf8(v).ok())
    }

    pub fn txid(&self) -> [u8; 12] {
        self.msg.transaction_id.0
    }

    /// Checks MESSAGE-INTEGRITY against `key` in constant time (the crate
    /// compares with `subtle`).
    pub fn check_integrity(&mut self, key: &[u8]) -> bool {
        self.has_integrity && MessageIntegrity(key.to_vec()).check(&mut self.msg).is_ok()
    }

    /// Comprehension-required attributes ([RFC 8489 §15](https://www.rfc-editor.org/rfc/rfc8489#section-15))
    /// this server does not understand.
    pub fn unknown_required(&self) -> Vec<AttrType> {
        self.counted_attrs()
            .map(|a| a.typ)
            .filter(|t| t.0 < 0x8000 && !KNOWN_REQUIRED.contains(t))
            .collect()
    }
}

/// Comprehension-required attributes turnd understands.
const KNOWN_REQUIRED: &[AttrType] = &[
    ATTR_MAPPED_ADDRESS,
    ATTR_USERNAME,
    ATTR_MESSAGE_INTEGRITY,
    ATTR_ERROR_CODE,
    ATTR_UNKNOWN_ATTRIBUTES,
    ATTR_REALM,
    ATTR_NONCE,
    ATTR_XORMAPPED_ADDRESS,
    ATTR_CHANNEL_NUMBER,
    ATTR_LIFETIME,
    ATTR_XOR_PEER_ADDRESS,
    ATTR_DATA,
    ATTR_XOR_RELAYED_ADDRESS,
    ATTR_REQUESTED_ADDRESS_FAMILY,
    ATTR_EVEN_PORT,
    ATTR_REQUESTED_TRANSPORT,
    ATTR_DONT_FRAGMENT,
    ATTR_RESERVATION_TOKEN,
    ATTR_PRIORITY,
    ATTR_USE_CANDIDATE,
];

/// Validates and decodes a whole STUN message (a UDP datagram or one framed
/// message of a stream).
pub fn decode(buf: &[u8]) -> Result<Decoded, DecodeError> {
    if buf.len() < MESSAGE_HEADER_SIZE {
        return Err(DecodeError::Short);
    }
    if buf[0] >> 6 != 0 {
        return Err(DecodeError::LeadingBits);
    }
    if buf[4..8] != MAGIC_COOKIE.to_be_bytes() {
        return Err(DecodeError::Cookie);
    }
    let len = u16::from_be_bytes([buf[2], buf[3]]) as usize;
    if len % 4 != 0 {
        return Err(DecodeError::Unaligned);
    }
    if MESSAGE_HEADER_SIZE + len != buf.len() {
        return Err(DecodeError::Length);
    }
    let mut msg = Message::new();
    msg.raw.clear();
    msg.raw.extend_from_slice(buf);
    msg.decode().map_err(|_| DecodeError::Attributes)?;

    let attrs = &msg.attributes.0;
    let mi = attrs.iter().position(|a| a.typ == ATTR_MESSAGE_INTEGRITY);
    let fp = attrs.iter().position(|a| a.typ == ATTR_FINGERPRINT);
    let has_fingerprint = match fp {
        Some(i) if i + 1 == attrs.len() && FINGERPRINT.check(&msg).is_ok() => true,
        Some(_) => return Err(DecodeError::Fingerprint),
        None => false,
    };
    let counted = match (mi, fp) {
        (Some(i), _) => i + 1,
        (None, Some(i)) => i,
        (None, None) => attrs.len(),
    };
    Ok(Decoded {
        msg,
        counted,
        has_integrity: mi.is_some(),
        has_fingerprint,
    })
}

/// Decodes an XOR-encoded address attribute value
/// ([RFC 8489 §14.2](https://www.rfc-editor.org/rfc/rfc8489#section-14.2)).
pub fn xor_address(value: &[u8], txid: &[u8; 12]) -> Option<SocketAddr> {
    if value.len() < 4 {
        return None;
    }
    let cookie = MAGIC_COOKIE.to_be_bytes();
    let port = u16::from_be_bytes([value[2], value[3]]) ^ (MAGIC_COOKIE >> 16) as u16;
    let ip = match (value[1], value.len()) {
        (0x01, 8) => {
            let mut o = [0u8; 4];
            for i in 0..4 {
                o[i] = value[4 + i] ^ cookie[i];
            }
            IpAddr::V4(Ipv4Addr::from(o))
        }
        (0x02, 20) => {
            let mut o = [0u8; 16];
            for i in 0..16 {
                let k = if i < 4 { cookie[i] } else { txid[i - 4] };
                o[i] = value[4 + i] ^ k;
            }
            IpAddr::V6(Ipv6Addr::from(o))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Builds a STUN message answering (or, for Data indications, following)
/// `txid`: header, `attrs`, then MESSAGE-INTEGRITY when `key` is given and
/// FINGERPRINT when `fingerprint` is set.
pub fn build(
    typ: MessageType,
    txid: [u8; 12],
    attrs: &[&dyn Setter],
    key: Option<&[u8]>,
    fingerprint: bool,
) -> Vec<u8> {
    let mut m = Message::new();
    m.typ = typ;
    m.transaction_id.0 = txid;
    m.write_header();
    for a in attrs {
        // The setters used here only fail on values this server never builds
        // (over-long text); such an attribute is left out rather than panic.
        let _ = a.add_to(&mut m);
    }
    if let Some(k) = key {
        let _ = MessageIntegrity(k.to_vec()).add_to(&mut m);
    }
    if fingerprint {
        let _ = FINGERPRINT.add_to(&mut m);
    }
    m.raw
}

/// The byte range, within a validated message `buf`, of the value of the
/// first attribute of type `t` (used to relay a Send indication's DATA
/// without copying it).
pub fn attr_range(buf: &[u8], t: AttrType) -> Option<std::ops::Range<usize>> {
    let mut at = MESSAGE_HEADER_SIZE;
    while at + 4 <= buf.len() {
        let typ = u16::from_be_bytes([buf[at], buf[at + 1]]);
        let len = u16::from_be_bytes([buf[at + 2], buf[at + 3]]) as usize;
        let start = at + 4;
        if start + len > buf.len() {
            return None;
        }
        if typ == t.0 {
            return Some(start..start + len);
        }
        if typ == ATTR_MESSAGE_INTEGRITY.0 {
            return None;
        }
        at = start + len.div_ceil(4) * 4;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_frames_stun_and_padded_channel_data() {
        // A Binding request with 8 bytes of attributes.
        let mut stun = vec![0x00, 0x01, 0x00, 0x08];
        stun.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        stun.extend_from_slice(&[0; 12 + 8]);
        assert_eq!(stream_frame(&stun), Frame::Message { len: 28, skip: 28 });
        for cut in 0..stun.len() {
            assert_eq!(stream_frame(&stun[..cut]), Frame::Partial, "cut at {cut}");
        }
        // ChannelData with 5 bytes of payload: 9 bytes, 12 with padding.
        let cd = [0x40, 0x00, 0x00, 0x05, 1, 2, 3, 4, 5, 0, 0, 0];
        assert_eq!(stream_frame(&cd), Frame::Message { len: 9, skip: 12 });
        assert_eq!(stream_frame(&cd[..9]), Frame::Partial, "padding is part of the frame");
        // Two in one buffer: the first is cut off, the rest waits.
        let mut both = cd.to_vec();
        both.extend_from_slice(&stun);
        assert_eq!(stream_frame(&both), Frame::Message { len: 9, skip: 12 });
        assert_eq!(stream_frame(&both[12..]), Frame::Message { len: 28, skip: 28 });
        // An empty ChannelData payload is 4 bytes, already aligned.
        assert_eq!(stream_frame(&[0x40, 0x01, 0, 0]), Frame::Message { len: 4, skip: 4 });
        // Leading bits 10 and 11 are neither.
        assert_eq!(stream_frame(&[0x80]), Frame::Garbage);
        assert_eq!(stream_frame(&[0xC0, 0, 0, 0]), Frame::Garbage);
        assert_eq!(stream_frame(&[]), Frame::Partial);
        // STUN headers that cannot be: unaligned length, wrong cookie.
        assert_eq!(stream_frame(&[0, 1, 0, 6]), Frame::Garbage);
        assert_eq!(stream_frame(&[0, 1, 0, 8, 0x21, 0x12, 0xA4, 0x43]), Frame::Garbage);
        assert_eq!(stream_frame(&[0, 1, 0, 8, 0x21, 0x12]), Frame::Partial);
    }
}
