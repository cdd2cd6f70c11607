//! The wire format, turnd's own: one borrowed parser turns a datagram into a
//! validated [`Message`] and its typed request ([`Request`]), attributes
//! checked once; one [`Encoder`] writes answers into a caller's buffer; one
//! [`ErrorCode`] carries a code, its reason phrase and its metrics slot.
//! STUN: [RFC 8489 §5, §14](https://www.rfc-editor.org/rfc/rfc8489#section-5);
//! TURN attributes and ChannelData: [RFC 8656 §12, §14](https://www.rfc-editor.org/rfc/rfc8656#section-14).
//!
//! A message is dropped (a [`DecodeError`]) for every shape RFC 8489 says to
//! drop: a length that is not a multiple of 4 or does not match the datagram,
//! the two leading bits set, a wrong magic cookie, attributes that run past
//! the end, a FINGERPRINT that is not last or does not match. Attributes
//! after MESSAGE-INTEGRITY, but FINGERPRINT, are ignored
//! ([§14.5](https://www.rfc-editor.org/rfc/rfc8489#section-14.5)).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Range;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha1::Sha1;

/// Size of a STUN header.
pub const HEADER: usize = 20;
/// Size of the ChannelData header ([RFC 8656 §12.4](https://www.rfc-editor.org/rfc/rfc8656#section-12.4)).
pub const CHANNEL_HEADER: usize = 4;
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
const FINGERPRINT_XOR: u32 = 0x5354_554e;
/// Channel numbers a client may bind ([RFC 8656 §12](https://www.rfc-editor.org/rfc/rfc8656#section-12)):
/// 0x4000–0x4FFF; 0x5000–0xFFFF are reserved.
pub const CHANNEL_MIN: u16 = 0x4000;
pub const CHANNEL_MAX: u16 = 0x4FFF;
/// The RFC 5766 range, which coturn's `turnutils_uclient` and older pjnath
/// still pick from: bindable only with `relay.rfc5766-channels`, and the
/// range ChannelData is parsed in (a number nobody could bind finds no
/// route and is dropped there).
pub const CHANNEL_MAX_RFC5766: u16 = 0x7FFF;
/// Attributes a message may count; more is malformed.
const MAX_ATTRS: usize = 40;
const CRC32: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);

/// STUN and TURN methods.
pub mod method {
    pub const BINDING: u16 = 0x001;
    pub const ALLOCATE: u16 = 0x003;
    pub const REFRESH: u16 = 0x004;
    pub const SEND: u16 = 0x006;
    pub const DATA: u16 = 0x007;
    pub const CREATE_PERMISSION: u16 = 0x008;
    pub const CHANNEL_BIND: u16 = 0x009;
}

/// Attribute types.
pub mod attr {
    pub const MAPPED_ADDRESS: u16 = 0x0001;
    /// RFC 5780: change IP (0x04) and/or port (0x02) for the answer.
    pub const CHANGE_REQUEST: u16 = 0x0003;
    pub const USERNAME: u16 = 0x0006;
    pub const MESSAGE_INTEGRITY: u16 = 0x0008;
    pub const ERROR_CODE: u16 = 0x0009;
    pub const UNKNOWN_ATTRIBUTES: u16 = 0x000A;
    pub const CHANNEL_NUMBER: u16 = 0x000C;
    pub const LIFETIME: u16 = 0x000D;
    pub const XOR_PEER_ADDRESS: u16 = 0x0012;
    pub const DATA: u16 = 0x0013;
    pub const REALM: u16 = 0x0014;
    pub const NONCE: u16 = 0x0015;
    pub const XOR_RELAYED_ADDRESS: u16 = 0x0016;
    pub const REQUESTED_ADDRESS_FAMILY: u16 = 0x0017;
    pub const EVEN_PORT: u16 = 0x0018;
    pub const REQUESTED_TRANSPORT: u16 = 0x0019;
    pub const DONT_FRAGMENT: u16 = 0x001A;
    pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
    pub const RESERVATION_TOKEN: u16 = 0x0022;
    pub const PRIORITY: u16 = 0x0024;
    /// RFC 5780: fills a request up (to test fragmentation); ignored.
    pub const PADDING: u16 = 0x0026;
    pub const USE_CANDIDATE: u16 = 0x0025;
    pub const SOFTWARE: u16 = 0x8022;
    pub const ALTERNATE_SERVER: u16 = 0x8023;
    pub const FINGERPRINT: u16 = 0x8028;
    /// RFC 8656 §18.12: also a relay of this family (IPv6 only).
    pub const ADDITIONAL_ADDRESS_FAMILY: u16 = 0x8000;
    /// The same, as coturn 4.6's clients send it (the draft's codepoint,
    /// before RFC 8656 assigned 0x8000).
    pub const ADDITIONAL_ADDRESS_FAMILY_DRAFT: u16 = 0x8032;
    /// RFC 8656 §18.13: why the additional family got no relay.
    pub const ADDRESS_ERROR_CODE: u16 = 0x8001;
    /// RFC 5780: where the answer was sent from.
    pub const RESPONSE_ORIGIN: u16 = 0x802B;
    /// RFC 5780: the server's address differing in both IP and port.
    pub const OTHER_ADDRESS: u16 = 0x802C;
}

/// Comprehension-required attributes turnd understands; any other below
/// 0x8000 in a request gets 420.
const KNOWN_REQUIRED: &[u16] = &[
    attr::MAPPED_ADDRESS,
    attr::USERNAME,
    attr::MESSAGE_INTEGRITY,
    attr::ERROR_CODE,
    attr::UNKNOWN_ATTRIBUTES,
    attr::REALM,
    attr::NONCE,
    attr::XOR_MAPPED_ADDRESS,
    attr::CHANNEL_NUMBER,
    attr::LIFETIME,
    attr::XOR_PEER_ADDRESS,
    attr::DATA,
    attr::XOR_RELAYED_ADDRESS,
    attr::REQUESTED_ADDRESS_FAMILY,
    attr::EVEN_PORT,
    attr::REQUESTED_TRANSPORT,
    attr::DONT_FRAGMENT,
    attr::RESERVATION_TOKEN,
    attr::PRIORITY,
    attr::USE_CANDIDATE,
];

/// REQUESTED-TRANSPORT's protocol number for UDP.
pub const PROTO_UDP: u8 = 17;

/// A message's class ([RFC 8489 §5](https://www.rfc-editor.org/rfc/rfc8489#section-5)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Request,
    Indication,
    Success,
    Error,
}

impl Class {
    fn bits(self) -> u16 {
        match self {
            Class::Request => 0b00,
            Class::Indication => 0b01,
            Class::Success => 0b10,
            Class::Error => 0b11,
        }
    }
}

/// The 16-bit message type of `method` and `class`.
pub fn message_type(method: u16, class: Class) -> u16 {
    let m = method & 0x0FFF;
    let c = class.bits();
    (m & 0x000F) | ((m & 0x0070) << 1) | ((m & 0x0F80) << 2) | ((c & 1) << 4) | ((c & 2) << 7)
}

fn split_type(t: u16) -> (u16, Class) {
    let method = (t & 0x000F) | ((t & 0x00E0) >> 1) | ((t & 0x3E00) >> 2);
    let class = match ((t >> 7) & 2) | ((t >> 4) & 1) {
        0 => Class::Request,
        1 => Class::Indication,
        2 => Class::Success,
        _ => Class::Error,
    };
    (method, class)
}

// ------------------------------------------------------------ error codes

/// Every error turnd answers with: its code, its reason phrase (sent only
/// on signed answers) and its slot in the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    TryAlternate,
    BadRequest,
    Unauthorized,
    Forbidden,
    UnknownAttribute,
    AllocationMismatch,
    StaleNonce,
    AddressFamilyNotSupported,
    WrongCredentials,
    UnsupportedTransportProtocol,
    PeerAddressFamilyMismatch,
    AllocationQuotaReached,
    InsufficientCapacity,
    /// 508 while draining, without an alternate server.
    ShuttingDown,
}

impl ErrorCode {
    /// The codes counted in the metrics, in slot order.
    pub const CODES: [u16; 13] = [300, 400, 401, 403, 420, 437, 438, 440, 441, 442, 443, 486, 508];

    pub fn code(self) -> u16 {
        match self {
            Self::TryAlternate => 300,
            Self::BadRequest => 400,
            Self::Unauthorized => 401,
            Self::Forbidden => 403,
            Self::UnknownAttribute => 420,
            Self::AllocationMismatch => 437,
            Self::StaleNonce => 438,
            Self::AddressFamilyNotSupported => 440,
            Self::WrongCredentials => 441,
            Self::UnsupportedTransportProtocol => 442,
            Self::PeerAddressFamilyMismatch => 443,
            Self::AllocationQuotaReached => 486,
            Self::InsufficientCapacity | Self::ShuttingDown => 508,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            Self::TryAlternate => "Try Alternate",
            Self::BadRequest => "Bad Request",
            Self::Unauthorized => "Unauthorized",
            Self::Forbidden => "Forbidden",
            Self::UnknownAttribute => "Unknown Attribute",
            Self::AllocationMismatch => "Allocation Mismatch",
            Self::StaleNonce => "Stale Nonce",
            Self::AddressFamilyNotSupported => "Address Family not Supported",
            Self::WrongCredentials => "Wrong Credentials",
            Self::UnsupportedTransportProtocol => "Unsupported Transport Protocol",
            Self::PeerAddressFamilyMismatch => "Peer Address Family Mismatch",
            Self::AllocationQuotaReached => "Allocation Quota Reached",
            Self::InsufficientCapacity => "Insufficient Capacity",
            Self::ShuttingDown => "Server Shutting Down",
        }
    }

    /// Where it is counted: its index in [`ErrorCode::CODES`].
    pub fn slot(self) -> usize {
        let code = self.code();
        Self::CODES
            .iter()
            .position(|c| *c == code)
            .unwrap_or(Self::CODES.len() - 1)
    }
}

// ------------------------------------------------------------ ChannelData and framing

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

/// A ChannelData message's channel number and payload length, or `None`
/// when the header is short or the declared length runs past the buffer.
/// Padding after the payload is accepted and ignored.
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
        (HEADER + len, HEADER + len)
    } else {
        (CHANNEL_HEADER + len, (CHANNEL_HEADER + len + 3) & !3)
    };
    if buf.len() < skip {
        Frame::Partial
    } else {
        Frame::Message { len, skip }
    }
}

// ------------------------------------------------------------ decoding

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

#[derive(Debug, Clone, Copy, Default)]
struct AttrAt {
    typ: u16,
    /// Offset of the value in the message, and its length.
    at: u16,
    len: u16,
}

/// A validated STUN message, borrowing its bytes.
#[derive(Debug, Clone)]
pub struct Message<'a> {
    raw: &'a [u8],
    pub method: u16,
    pub class: Class,
    pub txid: [u8; 12],
    /// The attributes that count: those before MESSAGE-INTEGRITY and it.
    attrs: [AttrAt; MAX_ATTRS],
    counted: usize,
    /// Offset of the MESSAGE-INTEGRITY attribute.
    integrity: Option<usize>,
    pub fingerprint: bool,
}

impl<'a> Message<'a> {
    /// Validates and decodes a whole message (a UDP datagram or one framed
    /// message of a stream).
    pub fn decode(buf: &'a [u8]) -> Result<Self, DecodeError> {
        if buf.len() < HEADER {
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
        if HEADER + len != buf.len() {
            return Err(DecodeError::Length);
        }
        let (method, class) = split_type(u16::from_be_bytes([buf[0], buf[1]]));
        let mut m = Message {
            raw: buf,
            method,
            class,
            txid: buf[8..20].try_into().map_err(|_| DecodeError::Short)?,
            attrs: [AttrAt::default(); MAX_ATTRS],
            counted: 0,
            integrity: None,
            fingerprint: false,
        };
        let mut at = HEADER;
        while at < buf.len() {
            if at + 4 > buf.len() {
                return Err(DecodeError::Attributes);
            }
            let typ = u16::from_be_bytes([buf[at], buf[at + 1]]);
            let alen = u16::from_be_bytes([buf[at + 2], buf[at + 3]]) as usize;
            let value = at + 4;
            let next = value + alen.div_ceil(4) * 4;
            if next > buf.len() {
                return Err(DecodeError::Attributes);
            }
            if typ == attr::FINGERPRINT {
                let ok = next == buf.len()
                    && alen == 4
                    && CRC32.checksum(&buf[..at]) ^ FINGERPRINT_XOR
                        == u32::from_be_bytes([buf[value], buf[value + 1], buf[value + 2], buf[value + 3]]);
                if !ok {
                    return Err(DecodeError::Fingerprint);
                }
                m.fingerprint = true;
            } else if m.integrity.is_none() {
                if m.counted == MAX_ATTRS {
                    return Err(DecodeError::Attributes);
                }
                m.attrs[m.counted] = AttrAt {
                    typ,
                    at: value as u16,
                    len: alen as u16,
                };
                m.counted += 1;
                if typ == attr::MESSAGE_INTEGRITY {
                    m.integrity = Some(at);
                }
            }
            at = next;
        }
        Ok(m)
    }

    /// The message's bytes.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    fn counted(&self) -> impl Iterator<Item = &AttrAt> {
        self.attrs[..self.counted].iter()
    }

    fn value(&self, a: &AttrAt) -> &'a [u8] {
        &self.raw[a.at as usize..a.at as usize + a.len as usize]
    }

    /// The value of the first counted attribute of type `t`.
    pub fn attr(&self, t: u16) -> Option<&'a [u8]> {
        self.counted().find(|a| a.typ == t).map(|a| self.value(a))
    }

    /// Every counted attribute of type `t`, in order.
    pub fn attrs(&self, t: u16) -> impl Iterator<Item = &'a [u8]> + '_ {
        self.counted().filter(move |a| a.typ == t).map(|a| self.value(a))
    }

    /// Where the value of the first counted attribute of type `t` is in the
    /// message (to relay a Send indication's DATA without copying it).
    pub fn attr_range(&self, t: u16) -> Option<Range<usize>> {
        self.counted()
            .find(|a| a.typ == t)
            .map(|a| a.at as usize..a.at as usize + a.len as usize)
    }

    /// A text attribute, when it is UTF-8.
    pub fn text(&self, t: u16) -> Option<&'a str> {
        self.attr(t).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The first XOR-encoded address attribute of type `t`.
    pub fn xor_address(&self, t: u16) -> Option<SocketAddr> {
        xor_address(self.attr(t)?, &self.txid)
    }

    /// CHANGE-REQUEST's flags (RFC 5780 §7.2): (change IP, change port);
    /// None without the attribute or with a malformed one.
    pub fn change_request(&self) -> Option<(bool, bool)> {
        let v = self.attr(attr::CHANGE_REQUEST)?;
        let flags = u32::from_be_bytes(v.try_into().ok()?);
        Some((flags & 0x4 != 0, flags & 0x2 != 0))
    }

    pub fn has_integrity(&self) -> bool {
        self.integrity.is_some()
    }

    /// Checks MESSAGE-INTEGRITY (HMAC-SHA1 with `key`) in constant time
    /// ([RFC 8489 §14.5](https://www.rfc-editor.org/rfc/rfc8489#section-14.5)).
    pub fn check_integrity(&self, key: &[u8]) -> bool {
        let Some(at) = self.integrity else { return false };
        let Some(value) = self.raw.get(at + 4..at + 24) else {
            return false;
        };
        if u16::from_be_bytes([self.raw[at + 2], self.raw[at + 3]]) != 20 {
            return false;
        }
        let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
        // The header's length as if MESSAGE-INTEGRITY ended the message.
        let len = (at + 24 - HEADER) as u16;
        mac.update(&self.raw[..2]);
        mac.update(&len.to_be_bytes());
        mac.update(&self.raw[4..at]);
        mac.verify_slice(value).is_ok()
    }

    /// Comprehension-required attributes ([RFC 8489 §15](https://www.rfc-editor.org/rfc/rfc8489#section-15))
    /// turnd does not understand.
    pub fn unknown_required(&self) -> Vec<u16> {
        self.counted()
            .map(|a| a.typ)
            .filter(|t| *t < 0x8000 && !KNOWN_REQUIRED.contains(t))
            .collect()
    }

    /// Whether some counted attribute is comprehension-required and unknown.
    pub fn has_unknown_required(&self) -> bool {
        self.counted()
            .any(|a| a.typ < 0x8000 && !KNOWN_REQUIRED.contains(&a.typ))
    }

    /// USERNAME, REALM and NONCE of a signed request, when all three are
    /// there (and text).
    pub fn credentials(&self) -> Option<Credentials<'a>> {
        Some(Credentials {
            username: self.text(attr::USERNAME)?,
            realm: self.text(attr::REALM)?,
            nonce: self.text(attr::NONCE)?,
        })
    }

    /// The request, typed, its attributes validated (`None`: not a method
    /// turnd serves). Binding and indications are not requests of this kind
    /// ([`Message::send`] reads Send indications).
    pub fn request(&self) -> Option<Request> {
        Some(match self.method {
            method::ALLOCATE => Request::Allocate(self.allocate()),
            method::REFRESH => Request::Refresh(Refresh {
                family: self
                    .attr(attr::REQUESTED_ADDRESS_FAMILY)
                    .map(|v| Family::from_byte(v.first())),
                lifetime: self.lifetime(),
            }),
            method::CREATE_PERMISSION => Request::CreatePermission(self.peers()),
            method::CHANNEL_BIND => Request::ChannelBind(ChannelBind {
                number: self
                    .attr(attr::CHANNEL_NUMBER)
                    .filter(|v| v.len() == 4)
                    .map(|v| u16::from_be_bytes([v[0], v[1]])),
                peers: self.peers(),
            }),
            _ => return None,
        })
    }

    fn lifetime(&self) -> Option<Duration> {
        let v = self.attr(attr::LIFETIME)?;
        let b: [u8; 4] = v.get(..4)?.try_into().ok()?;
        Some(Duration::from_secs(u64::from(u32::from_be_bytes(b))))
    }

    fn peers(&self) -> Peers {
        let mut p = Peers::default();
        for v in self.attrs(attr::XOR_PEER_ADDRESS) {
            if p.n < p.list.len() {
                p.list[p.n] = xor_address(v, &self.txid);
                p.n += 1;
            } else {
                p.too_many = true;
            }
        }
        p
    }

    /// Allocate's attributes, checked in the order RFC 8656 §7.2 lists.
    fn allocate(&self) -> Result<Allocate, ErrorCode> {
        match self.attr(attr::REQUESTED_TRANSPORT) {
            None => return Err(ErrorCode::BadRequest),
            Some(v) if v.first() != Some(&PROTO_UDP) => return Err(ErrorCode::UnsupportedTransportProtocol),
            Some(_) => {}
        }
        let token = self.attr(attr::RESERVATION_TOKEN);
        let even = self.attr(attr::EVEN_PORT);
        let family = self.attr(attr::REQUESTED_ADDRESS_FAMILY);
        let additional = self
            .attr(attr::ADDITIONAL_ADDRESS_FAMILY)
            .or_else(|| self.attr(attr::ADDITIONAL_ADDRESS_FAMILY_DRAFT));
        if token.is_some() && (even.is_some() || family.is_some()) {
            return Err(ErrorCode::BadRequest);
        }
        // Dual stack (RFC 8656 §7.2): not with REQUESTED-ADDRESS-FAMILY or
        // a reservation, and only IPv6 in addition to IPv4. EVEN-PORT
        // applies to the IPv4 relay (coturn's client sends it along).
        if let Some(a) = additional {
            if family.is_some() || token.is_some() || Family::from_byte(a.first()) != Family::V6 {
                return Err(ErrorCode::BadRequest);
            }
        }
        let family = match family.map(|f| Family::from_byte(f.first())) {
            None => Family::V4,
            Some(Family::Unknown) => return Err(ErrorCode::AddressFamilyNotSupported),
            Some(f) => f,
        };
        let token = match token.map(<[u8; 8]>::try_from) {
            None => None,
            Some(Ok(t)) => Some(u64::from_be_bytes(t)),
            Some(Err(_)) => return Err(ErrorCode::BadRequest),
        };
        Ok(Allocate {
            family,
            additional_v6: additional.is_some(),
            lifetime: self.lifetime(),
            even_port: even.map(|v| EvenPort {
                reserve_next: v.first().is_some_and(|b| b & 0x80 != 0),
            }),
            token,
        })
    }

    /// A Send indication's peer and DATA (its place in the message).
    pub fn send(&self) -> Option<(SocketAddr, Range<usize>)> {
        Some((self.xor_address(attr::XOR_PEER_ADDRESS)?, self.attr_range(attr::DATA)?))
    }

    /// ERROR-CODE's number, for clients (the probe, the tests).
    pub fn error_code(&self) -> Option<u16> {
        let v = self.attr(attr::ERROR_CODE)?;
        (v.len() >= 4).then(|| u16::from(v[2] & 7) * 100 + u16::from(v[3]))
    }
}

/// The long-term credential attributes of a signed request.
#[derive(Debug, Clone, Copy)]
pub struct Credentials<'a> {
    pub username: &'a str,
    pub realm: &'a str,
    pub nonce: &'a str,
}

/// REQUESTED-ADDRESS-FAMILY ([RFC 8656 §14.1](https://www.rfc-editor.org/rfc/rfc8656#section-14.1)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
    /// Any other value (or none): 440.
    Unknown,
}

impl Family {
    fn from_byte(b: Option<&u8>) -> Self {
        match b {
            Some(0x01) => Self::V4,
            Some(0x02) => Self::V6,
            _ => Self::Unknown,
        }
    }
}

/// A typed request.
#[derive(Debug, Clone)]
pub enum Request {
    /// An Allocate's choices, or what is wrong with its attributes (answered
    /// only after the checks that come first: authentication, an existing
    /// allocation, draining).
    Allocate(Result<Allocate, ErrorCode>),
    Refresh(Refresh),
    CreatePermission(Peers),
    ChannelBind(ChannelBind),
}

/// An Allocate's choices ([RFC 8656 §7.2](https://www.rfc-editor.org/rfc/rfc8656#section-7.2)).
#[derive(Debug, Clone)]
pub struct Allocate {
    pub family: Family,
    /// ADDITIONAL-ADDRESS-FAMILY: an IPv6 relay beside the IPv4 one.
    pub additional_v6: bool,
    pub lifetime: Option<Duration>,
    pub even_port: Option<EvenPort>,
    /// RESERVATION-TOKEN: a port reserved by an earlier Allocate.
    pub token: Option<u64>,
}

/// EVEN-PORT ([RFC 8656 §14.6](https://www.rfc-editor.org/rfc/rfc8656#section-14.6)).
#[derive(Debug, Clone, Copy)]
pub struct EvenPort {
    /// The R bit: also reserve the next port.
    pub reserve_next: bool,
}

#[derive(Debug, Clone)]
pub struct Refresh {
    pub family: Option<Family>,
    pub lifetime: Option<Duration>,
}

/// The XOR-PEER-ADDRESS attributes of a request, in order (`None`: one that
/// does not parse).
#[derive(Debug, Clone, Default)]
pub struct Peers {
    list: [Option<SocketAddr>; 16],
    n: usize,
    /// More than fit: the request is refused (400).
    pub too_many: bool,
}

impl Peers {
    pub fn iter(&self) -> impl Iterator<Item = Option<SocketAddr>> + '_ {
        self.list[..self.n].iter().copied()
    }

    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }
}

#[derive(Debug, Clone)]
pub struct ChannelBind {
    /// CHANNEL-NUMBER, when present and well formed.
    pub number: Option<u16>,
    pub peers: Peers,
}

/// Decodes an XOR-encoded address attribute value
/// ([RFC 8489 §14.2](https://www.rfc-editor.org/rfc/rfc8489#section-14.2)).
pub fn xor_address(value: &[u8], txid: &[u8; 12]) -> Option<SocketAddr> {
    if value.len() < 4 {
        return None;
    }
    let port = u16::from_be_bytes([value[2], value[3]]) ^ (MAGIC_COOKIE >> 16) as u16;
    let ip = match (value[1], value.len()) {
        (0x01, 8) => {
            let mut o = [0u8; 4];
            for (i, b) in o.iter_mut().enumerate() {
                *b = value[4 + i] ^ xor_key(i, txid);
            }
            IpAddr::V4(Ipv4Addr::from(o))
        }
        (0x02, 20) => {
            let mut o = [0u8; 16];
            for (i, b) in o.iter_mut().enumerate() {
                *b = value[4 + i] ^ xor_key(i, txid);
            }
            IpAddr::V6(Ipv6Addr::from(o))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Byte `i` of the magic cookie followed by the transaction id.
fn xor_key(i: usize, txid: &[u8; 12]) -> u8 {
    if i < 4 {
        MAGIC_COOKIE.to_be_bytes()[i]
    } else {
        txid[i - 4]
    }
}

/// A plain (MAPPED-ADDRESS format) address attribute value.
pub fn plain_address(value: &[u8]) -> Option<SocketAddr> {
    if value.len() < 4 {
        return None;
    }
    let port = u16::from_be_bytes([value[2], value[3]]);
    let ip = match (value[1], value.len()) {
        (0x01, 8) => IpAddr::V4(Ipv4Addr::new(value[4], value[5], value[6], value[7])),
        (0x02, 20) => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&value[4..20]).ok()?)),
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

// ------------------------------------------------------------ encoding

/// Writes one STUN message at the end of a caller's buffer: the header,
/// attributes in the order they are added, then (in [`Encoder::finish`])
/// MESSAGE-INTEGRITY and FINGERPRINT.
pub struct Encoder<'b> {
    out: &'b mut Vec<u8>,
    start: usize,
    txid: [u8; 12],
}

impl<'b> Encoder<'b> {
    pub fn new(out: &'b mut Vec<u8>, method: u16, class: Class, txid: [u8; 12]) -> Self {
        let start = out.len();
        out.extend_from_slice(&message_type(method, class).to_be_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        out.extend_from_slice(&txid);
        Self { out, start, txid }
    }

    fn set_length(&mut self, extra: usize) {
        let len = (self.out.len() - self.start - HEADER + extra) as u16;
        self.out[self.start + 2..self.start + 4].copy_from_slice(&len.to_be_bytes());
    }

    /// An attribute with `value` (padded to 4 bytes with zeros). Values
    /// longer than an attribute can hold are cut.
    pub fn attr(&mut self, t: u16, value: &[u8]) -> &mut Self {
        let value = &value[..value.len().min(u16::MAX as usize - 3)];
        self.out.extend_from_slice(&t.to_be_bytes());
        self.out.extend_from_slice(&(value.len() as u16).to_be_bytes());
        self.out.extend_from_slice(value);
        self.out.resize(self.out.len() + (4 - value.len() % 4) % 4, 0);
        self
    }

    pub fn u32(&mut self, t: u16, v: u32) -> &mut Self {
        self.attr(t, &v.to_be_bytes())
    }

    /// An XOR-encoded address (XOR-MAPPED-, XOR-RELAYED-, XOR-PEER-ADDRESS).
    pub fn xor_address(&mut self, t: u16, a: SocketAddr) -> &mut Self {
        let mut v = [0u8; 20];
        let n = address_value(&mut v, a);
        let port = a.port() ^ (MAGIC_COOKIE >> 16) as u16;
        v[2..4].copy_from_slice(&port.to_be_bytes());
        for i in 0..n - 4 {
            v[4 + i] ^= xor_key(i, &self.txid);
        }
        self.attr(t, &v[..n])
    }

    /// A plain address (ALTERNATE-SERVER, MAPPED-ADDRESS).
    pub fn address(&mut self, t: u16, a: SocketAddr) -> &mut Self {
        let mut v = [0u8; 20];
        let n = address_value(&mut v, a);
        self.attr(t, &v[..n])
    }

    /// ERROR-CODE, with the reason phrase only when `reason`.
    pub fn error(&mut self, e: ErrorCode, reason: bool) -> &mut Self {
        let code = e.code();
        let mut v = vec![0, 0, (code / 100) as u8, (code % 100) as u8];
        if reason {
            v.extend_from_slice(e.reason().as_bytes());
        }
        self.attr(attr::ERROR_CODE, &v)
    }

    /// ADDRESS-ERROR-CODE (RFC 8656 §18.13): why the relay of the IPv6
    /// family asked for in ADDITIONAL-ADDRESS-FAMILY was not allocated.
    pub fn address_error_v6(&mut self, e: ErrorCode) -> &mut Self {
        let code = e.code();
        self.attr(
            attr::ADDRESS_ERROR_CODE,
            &[0x02, 0, (code / 100) as u8, (code % 100) as u8],
        )
    }

    pub fn unknown_attributes(&mut self, types: &[u16]) -> &mut Self {
        let v: Vec<u8> = types.iter().flat_map(|t| t.to_be_bytes()).collect();
        self.attr(attr::UNKNOWN_ATTRIBUTES, &v)
    }

    /// Ends the message: MESSAGE-INTEGRITY with `key`, when given, then
    /// FINGERPRINT, when asked; the header's length set.
    pub fn finish(mut self, key: Option<&[u8]>, fingerprint: bool) {
        if let Some(key) = key {
            self.set_length(24);
            let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
            mac.update(&self.out[self.start..]);
            let digest = mac.finalize().into_bytes();
            self.attr(attr::MESSAGE_INTEGRITY, &digest);
        }
        if fingerprint {
            self.set_length(8);
            let crc = CRC32.checksum(&self.out[self.start..]) ^ FINGERPRINT_XOR;
            self.attr(attr::FINGERPRINT, &crc.to_be_bytes());
        }
        self.set_length(0);
    }
}

/// The family, port and address of `a` into `v`; the length used.
fn address_value(v: &mut [u8; 20], a: SocketAddr) -> usize {
    v[2..4].copy_from_slice(&a.port().to_be_bytes());
    match a.ip() {
        IpAddr::V4(ip) => {
            v[1] = 0x01;
            v[4..8].copy_from_slice(&ip.octets());
            8
        }
        IpAddr::V6(ip) => {
            v[1] = 0x02;
            v[4..20].copy_from_slice(&ip.octets());
            20
        }
    }
}

/// A Data indication carrying `data` from `peer` ([RFC 8656 §11.4](https://www.rfc-editor.org/rfc/rfc8656#section-11.4)).
pub fn data_indication(txid: [u8; 12], peer: SocketAddr, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + 24 + 4 + data.len() + 3);
    let mut e = Encoder::new(&mut out, method::DATA, Class::Indication, txid);
    e.xor_address(attr::XOR_PEER_ADDRESS, peer).attr(attr::DATA, data);
    e.finish(None, false);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_types_round_trip() {
        for (m, c, t) in [
            (method::BINDING, Class::Request, 0x0001),
            (method::BINDING, Class::Success, 0x0101),
            (method::ALLOCATE, Class::Error, 0x0113),
            (method::SEND, Class::Indication, 0x0016),
            (method::DATA, Class::Indication, 0x0017),
            (method::CHANNEL_BIND, Class::Success, 0x0109),
        ] {
            assert_eq!(message_type(m, c), t);
            assert_eq!(split_type(t), (m, c));
        }
    }

    #[test]
    fn error_codes_have_one_slot_each() {
        for (i, c) in ErrorCode::CODES.iter().enumerate() {
            let e = [
                ErrorCode::TryAlternate,
                ErrorCode::BadRequest,
                ErrorCode::Unauthorized,
                ErrorCode::Forbidden,
                ErrorCode::UnknownAttribute,
                ErrorCode::AllocationMismatch,
                ErrorCode::StaleNonce,
                ErrorCode::AddressFamilyNotSupported,
                ErrorCode::WrongCredentials,
                ErrorCode::UnsupportedTransportProtocol,
                ErrorCode::PeerAddressFamilyMismatch,
                ErrorCode::AllocationQuotaReached,
                ErrorCode::InsufficientCapacity,
            ][i];
            assert_eq!((e.code(), e.slot()), (*c, i));
        }
        assert_eq!(ErrorCode::ShuttingDown.slot(), ErrorCode::InsufficientCapacity.slot());
    }

    #[test]
    fn encode_then_decode_with_integrity_and_fingerprint() {
        let txid = [7u8; 12];
        let key = [3u8; 16];
        let mut out = vec![0xAA];
        let mut e = Encoder::new(&mut out, method::ALLOCATE, Class::Success, txid);
        e.xor_address(attr::XOR_RELAYED_ADDRESS, "192.0.2.1:50000".parse().expect("addr"))
            .xor_address(attr::XOR_MAPPED_ADDRESS, "[2001:db8::1]:7".parse().expect("addr"))
            .u32(attr::LIFETIME, 600)
            .attr(attr::SOFTWARE, b"abc");
        e.finish(Some(&key), true);
        let m = Message::decode(&out[1..]).expect("valid");
        assert_eq!((m.method, m.class, m.txid), (method::ALLOCATE, Class::Success, txid));
        assert!(m.fingerprint && m.check_integrity(&key) && !m.check_integrity(&[4u8; 16]));
        assert_eq!(m.xor_address(attr::XOR_RELAYED_ADDRESS), "192.0.2.1:50000".parse().ok());
        assert_eq!(m.xor_address(attr::XOR_MAPPED_ADDRESS), "[2001:db8::1]:7".parse().ok());
        assert_eq!(m.attr(attr::SOFTWARE), Some(&b"abc"[..]));
        // A flipped bit anywhere before FINGERPRINT breaks the fingerprint
        // (or the integrity). (A flipped FINGERPRINT type makes it an
        // unknown attribute after MESSAGE-INTEGRITY, ignored.)
        for i in 0..out.len() - 1 - 8 {
            let mut bad = out[1..].to_vec();
            bad[i] ^= 0x10;
            if let Ok(d) = Message::decode(&bad) {
                assert!(!d.check_integrity(&key), "byte {i}");
            }
        }
    }
}
