pub mod frames;
pub mod netns;
pub mod process;
pub mod server;
pub mod soak;
pub mod streamc;
pub mod stunc;
pub mod turnc;
