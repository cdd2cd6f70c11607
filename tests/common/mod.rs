pub mod server;
pub mod stunc;
