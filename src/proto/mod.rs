//! The protocol core: pure, sans-IO. See [`server::Server`].

pub mod addr;
pub mod allocation;
mod handlers;
pub mod msg;
pub mod nonce;
pub mod policy;
pub mod ratelimit;
pub mod server;
pub mod shared;
pub mod stats;

pub use addr::{ClientAddr, PeerAddr, RelayHandle, RelayId, Transport};
pub use server::{Command, CoreConfig, Now, OpenError, Server, Session, Transmit};
pub use shared::Shared;
pub use stats::Stats;
