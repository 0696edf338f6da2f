//! CI's fuzzing: every target replays its checked-in corpus, then runs
//! 3,000 mutations of it from a fixed seed (the same inputs every run);
//! no input may panic or allocate more than the limit at once.

use std::path::Path;

use cairn_fuzz::{corpus, fuzz, Tracking, ALLOCATION_LIMIT, TARGETS};

#[global_allocator]
static ALLOC: Tracking = Tracking;

#[test]
fn every_target_replays_its_corpus_and_survives_brief_fuzzing() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
    let mut rows = Vec::new();
    for t in TARGETS {
        let inputs: Vec<Vec<u8>> = corpus(&dir, t.name)
            .unwrap_or_else(|e| panic!("fuzz/corpus/{}: {e}", t.name))
            .into_iter()
            .map(|(_, b)| b)
            .collect();
        assert!(!inputs.is_empty(), "fuzz/corpus/{} is empty", t.name);
        let out = fuzz(t, &inputs, 3_000, 7, None);
        assert!(
            out.panics.is_empty(),
            "{}: {} input(s) panicked; first: {:?} on {:?}",
            t.name,
            out.panics.len(),
            out.panics[0].1,
            &out.panics[0].0[..out.panics[0].0.len().min(64)]
        );
        assert!(
            out.allocations.is_empty(),
            "{}: an input allocated {} bytes at once (limit {ALLOCATION_LIMIT})",
            t.name,
            out.allocations[0].1
        );
        assert_eq!(out.execs, inputs.len() as u64 + 3_000);
        rows.push(format!(
            "{} {} inputs, largest allocation {} KiB",
            t.name,
            out.execs,
            out.largest >> 10
        ));
    }
    eprintln!("{}", rows.join("\n"));
}
