//! AFL++ target: [`harness::stun_decode`].

#[path = "../harness.rs"]
mod harness;

fn main() {
    afl::fuzz!(|data: &[u8]| harness::stun_decode(data));
}
