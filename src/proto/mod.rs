//! The protocol core: pure, sans-IO. See [`server::Server`].

pub mod addr;
pub mod allocation;
pub mod channels;
mod handlers;
pub mod nonce;
pub mod policy;
pub mod ratelimit;
pub mod server;
pub mod shared;
pub mod stats;
pub mod wire;

pub use addr::{ClientAddr, PeerAddr, RelayHandle, RelayId, Transport};
pub use server::{
    Command, CoreConfig, Event, Now, Offload, OpenError, Opened, Relayed, Server, Session, Transmit, Usage,
};
pub use shared::{Held, SharedState};
pub use stats::Stats;
