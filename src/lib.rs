//! turnd: a STUN/TURN relay for self-hosted WebRTC.
//!
//! - [`proto`] decides (pure, sans-IO),
//! - [`net`] moves bytes,
//! - [`http`] serves people: the call page, credentials, signaling,
//! - [`lifecycle`] starts and stops everything async (one runtime, one
//!   cancellation token),
//! - [`auth`] derives keys, [`config`] reads the TOML file, [`cli`] the
//!   command line.

pub mod acme;
pub mod auth;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod http;
pub mod lifecycle;
pub mod metrics;
pub mod net;
pub mod probe;
pub mod proto;
pub mod qr;
pub mod secret;
pub mod serve;
pub mod tls;
