//! The fuzz targets' seed corpus and every input that once crashed them
//! (`fuzz/corpus/<target>`, `fuzz/regressions/<target>`), replayed through
//! the same code AFL++ runs (`fuzz/harness.rs`), in the normal test run.

#[path = "../fuzz/harness.rs"]
mod harness;

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut n = 0;
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for e in entries {
            let path = e.expect("dir entry").path();
            let data = std::fs::read(&path).expect("readable input");
            let outcome = std::panic::catch_unwind(|| run(&data));
            assert!(outcome.is_ok(), "{} fails again", path.display());
            n += 1;
        }
    }
    n
}

#[test]
fn stun_decode_inputs() {
    assert!(
        replay("stun_decode", harness::stun_decode) >= 10,
        "the seed corpus is there"
    );
}

#[test]
fn channel_data_inputs() {
    assert!(
        replay("channel_data", harness::channel_data) >= 5,
        "the seed corpus is there"
    );
}

#[test]
fn core_inputs() {
    assert!(replay("core", harness::core) >= 4, "the seed corpus is there");
}

/// The captured requests, signed again by the harness, reach the
/// authenticated paths: each core seed makes allocations.
#[test]
fn captured_requests_allocate_when_re_signed() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/core");
    for e in std::fs::read_dir(dir).expect("core seeds") {
        let path = e.expect("dir entry").path();
        let made = harness::drive(&std::fs::read(&path).expect("seed")).expect("no leak");
        assert!(made >= 1, "{}: no allocation", path.display());
    }
}
