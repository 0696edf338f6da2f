//! One of the fuzz targets under libFuzzer, coverage-guided: the target is
//! named by `CAIRN_FUZZ_TARGET`. Built and run by scripts/fuzz-libfuzzer.sh
//! (SanitizerCoverage instrumentation). An input fails as it does under
//! `cairn-fuzz run`: by a panic (libFuzzer saves it as a crash) or by a
//! single allocation above the limit (reported, then aborted).
#![no_main]

use std::sync::OnceLock;

use cairn_fuzz::{Target, Tracking, ALLOCATION_LIMIT, TARGETS};

#[global_allocator]
static ALLOC: Tracking = Tracking;

fn target() -> &'static Target {
    static TARGET: OnceLock<&'static Target> = OnceLock::new();
    TARGET.get_or_init(|| {
        let name = std::env::var("CAIRN_FUZZ_TARGET").unwrap_or_default();
        TARGETS.iter().find(|t| t.name == name).unwrap_or_else(|| {
            let names: Vec<_> = TARGETS.iter().map(|t| t.name).collect();
            panic!(
                "CAIRN_FUZZ_TARGET must name a target ({}), not {name:?}",
                names.join(", ")
            )
        })
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let t = target();
    cairn_fuzz::reset_largest();
    (t.run)(data);
    let largest = cairn_fuzz::largest();
    assert!(
        largest <= ALLOCATION_LIMIT,
        "{}: allocated {largest} bytes at once (limit {ALLOCATION_LIMIT})",
        t.name
    );
});
