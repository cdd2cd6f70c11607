pub mod stunc;
