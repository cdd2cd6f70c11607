pub mod process;
pub mod server;
pub mod streamc;
pub mod stunc;
pub mod turnc;
