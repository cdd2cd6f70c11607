//! AFL++ target: [`harness::channel_data`].

#[path = "../harness.rs"]
mod harness;

fn main() {
    afl::fuzz!(|data: &[u8]| harness::channel_data(data));
}
