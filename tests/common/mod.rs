pub mod server;
pub mod stunc;
pub mod turnc;
