//! A relayed message costs turnd no heap allocation, either way, over UDP
//! and over TCP: every allocation in this process (turnd in-process, the
//! client and the echo peer, which reuse their buffers) is counted while
//! ChannelData goes client → peer → client a few thousand times, one
//! message at a time (each one wakes every thread on its way).

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};

use common::server::*;
use common::stunc::*;
use stun::message::*;

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator, counting calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Binds channel 0x4001 of a new allocation on `c` to an echo peer, then
/// counts the allocations of `MESSAGES` round trips of `frame` through it.
fn allocations_per_round_trips<S: Read + Write>(c: &mut common::streamc::Framed<S>, frame: &[u8]) -> u64 {
    let (peer, _echo) = echo_peer();
    let (cred, _) = c.allocate("alloc");
    let bind = build(
        req(METHOD_CHANNEL_BIND),
        vec![channel(0x4001), common::stunc::peer(peer)],
        Some(&cred),
        false,
    );
    c.send(&bind.raw);
    assert!(is_success(&c.recv_stun()), "channel bound");
    let mut back = vec![0u8; frame.len()];
    let mut round_trip = |c: &mut common::streamc::Framed<S>| {
        c.io.write_all(frame).expect("write");
        c.io.read_exact(&mut back).expect("the echo comes back");
        assert_eq!(back, frame);
    };
    // Buffers and queues reach their working size first.
    for _ in 0..200 {
        round_trip(c);
    }
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..MESSAGES {
        round_trip(c);
    }
    let made = ALLOCATIONS.load(Ordering::Relaxed) - before;
    eprintln!("{made} allocations for {MESSAGES} round trips");
    made
}

const MESSAGES: u64 = 3000;

/// One test at a time: the count is the whole process's.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn channel_data_over_tcp_is_relayed_without_allocating() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let srv = TestServer::start_streams("");
    let mut c = common::streamc::tcp(srv.stream("tcp"));
    // 101 bytes of payload: padded to 108 on the stream both ways.
    let frame = channel_data(0x4001, &[0x5a; 101], true);
    assert_eq!(frame.len(), 108);
    let made = allocations_per_round_trips(&mut c, &frame);
    // Before buffers were reused: at least two per round trip (one copy of
    // each message read, one padded copy of each written). What is left is
    // the runtime's own housekeeping, not per message.
    assert!(
        made < MESSAGES / 10,
        "{made} allocations for {MESSAGES} messages relayed each way"
    );
}

#[test]
fn channel_data_over_udp_is_relayed_without_allocating() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let srv = TestServer::start("");
    let mut c = common::streamc::udp(srv.addr);
    let frame = channel_data(0x4001, &[0x5a; 101], false);
    let made = allocations_per_round_trips(&mut c, &frame);
    // Before the worker kept its list of ready sockets: one per wakeup.
    assert!(
        made < MESSAGES / 10,
        "{made} allocations for {MESSAGES} messages relayed each way"
    );
}
