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

/// Handle of one relay socket. The core picks it; the driver keeps the socket
/// for it in a table indexed by [`RelayId::index`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelayId(pub u32);

impl RelayId {
    pub fn index(self) -> usize {
        self.0 as usize
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
