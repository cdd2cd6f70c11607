//! Address roles. A client, a peer and a relay port are all "a socket address"
//! on the wire; the newtypes keep them from being mixed up (Firezone
//! `proto/src/lib.rs` does the same).

use std::fmt;
use std::net::SocketAddr;

/// How a client reached turnd. Over TCP and TLS the 5-tuple names one
/// connection; relays are UDP whatever the client transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp = 0,
    Tcp = 1,
    Tls = 2,
}

impl Transport {
    /// A byte stream (TCP or TLS): messages are framed, ChannelData padded.
    pub fn is_stream(self) -> bool {
        self != Transport::Udp
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        })
    }
}

/// The client's 5-tuple as turnd sees it ([RFC 8656 §2](https://www.rfc-editor.org/rfc/rfc8656#section-2)):
/// the client's source address, the local address it reached and the transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientAddr {
    pub transport: Transport,
    pub remote: SocketAddr,
    pub local: SocketAddr,
}

impl ClientAddr {
    pub fn udp(remote: SocketAddr, local: SocketAddr) -> Self {
        Self {
            transport: Transport::Udp,
            remote,
            local,
        }
    }

    /// A client on a TCP connection, with TLS or without.
    pub fn stream(tls: bool, remote: SocketAddr, local: SocketAddr) -> Self {
        Self {
            transport: if tls { Transport::Tls } else { Transport::Tcp },
            remote,
            local,
        }
    }
}

impl fmt::Display for ClientAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}->{}", self.transport, self.remote, self.local)
    }
}

/// A peer: where relayed data goes to, or comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PeerAddr(pub SocketAddr);

/// Handle of one relay socket. The core picks it: an allocation's index,
/// and for the IPv6 relay of a dual-stack allocation (RFC 8656
/// ADDITIONAL-ADDRESS-FAMILY) the same index marked [`RelayId::second`].
/// The driver keeps each socket in a table indexed by [`RelayId::slot`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelayId(pub u32);

impl RelayId {
    const SECOND: u32 = 1 << 31;

    /// The allocation's index (the same for both sockets of a dual-stack
    /// allocation).
    pub fn index(self) -> usize {
        (self.0 & !Self::SECOND) as usize
    }

    /// The allocation's additional (IPv6) relay socket.
    pub fn second(self) -> Self {
        Self(self.0 | Self::SECOND)
    }

    /// The allocation's first relay socket.
    pub fn first(self) -> Self {
        Self(self.0 & !Self::SECOND)
    }

    pub fn is_second(self) -> bool {
        self.0 & Self::SECOND != 0
    }

    /// A dense index for the driver's socket table: both sockets of one
    /// allocation side by side.
    pub fn slot(self) -> usize {
        self.index() * 2 + usize::from(self.is_second())
    }

    pub fn from_slot(slot: usize) -> Self {
        let id = Self((slot / 2) as u32);
        if slot % 2 == 1 {
            id.second()
        } else {
            id
        }
    }
}

/// A live relay of this turnd, wherever it runs: the worker whose core owns
/// it, its id there and the serial of the allocation (an id is reused once
/// its allocation is gone; the serial is not).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RelayHandle {
    pub worker: u16,
    pub relay: RelayId,
    pub serial: u64,
}
