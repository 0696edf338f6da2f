//! Prune's mark sorts its records on local disk when they outgrow its sort
//! buffer. Whatever the buffer, it decides the same, and a prune through
//! many sorted runs keeps every kept snapshot restorable.

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

use cairn_engine::{
    BackupOptions, BackupSource, ChunkerParams, ForgetOptions, InitOptions, NoProgress,
    PruneOptions, RepoStore, Repository, RetentionPolicy,
};

#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn noise(mut x: u64, n: usize) -> Vec<u8> {
    std::iter::repeat_with(move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 24) as u8
    })
    .take(n)
    .collect()
}

/// Version `v`: a shared base with its own changed stretch and a new tail.
fn data(v: u64) -> Vec<u8> {
    let mut d = noise(0x9E37_79B9_7F4A_7C15, 2_000_000);
    let at = (v as usize * 150_000) % 1_500_000;
    d[at..at + 200_000].copy_from_slice(&noise(v * 7919 + 1, 200_000));
    d.extend(noise(v * 104_729 + 3, 300_000));
    d
}

async fn open(dir: &Path, cache: &Path) -> Repository {
    let store = RepoStore::open(dir.to_str().expect("utf8"), false).expect("store");
    Repository::open(store, cache).await.expect("open")
}

fn mark_without_scratch(s: &cairn_engine::PruneSummary) -> serde_json::Value {
    let mut v = serde_json::to_value(&s.mark).expect("json");
    v.as_object_mut().expect("object").remove("scratch_bytes");
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mark_through_sorted_runs_decides_as_one_in_memory() {
    let root = tempfile::tempdir().expect("tmp");
    let dir = root.path().join("repo");
    let cache = root.path().join("cache");
    let store = RepoStore::open(dir.to_str().expect("utf8"), true).expect("store");
    Repository::init(
        store,
        InitOptions {
            chunker: ChunkerParams::with_average(2048),
            pack_size: 1024 * 1024,
            ..InitOptions::default()
        },
        &cache,
    )
    .await
    .expect("init");
    let input = root.path().join("in");
    std::fs::create_dir_all(&input).expect("mkdir");
    let repo = open(&dir, &cache).await;
    for v in 0..6 {
        std::fs::write(input.join("data"), data(v)).expect("write");
        repo.backup(
            BackupSource::Paths(vec![input.join("data")]),
            BackupOptions::default(),
            Arc::new(NoProgress),
        )
        .await
        .expect("backup");
    }
    // Keep the newest three: the others' chunks become garbage spread over
    // packs that also hold kept chunks.
    repo.forget(&ForgetOptions {
        policy: RetentionPolicy {
            last: Some(3),
            ..RetentionPolicy::default()
        },
        ..ForgetOptions::default()
    })
    .await
    .expect("forget");

    let dry = |sort_buffer| PruneOptions {
        dry_run: true,
        sort_buffer,
        ..PruneOptions::default()
    };
    let in_memory = repo
        .prune(
            &dry(PruneOptions::default().sort_buffer),
            Arc::new(NoProgress),
        )
        .await
        .expect("prune");
    let on_disk = repo
        .prune(&dry(64), Arc::new(NoProgress))
        .await
        .expect("prune");
    assert_eq!(
        in_memory.mark.scratch_bytes, 0,
        "a small repository is sorted in memory"
    );
    assert!(
        on_disk.mark.scratch_bytes > 44 * on_disk.mark.index_entries,
        "a 64-byte buffer writes every record to runs: {} bytes for {} entries",
        on_disk.mark.scratch_bytes,
        on_disk.mark.index_entries
    );
    assert_eq!(
        mark_without_scratch(&in_memory),
        mark_without_scratch(&on_disk)
    );
    assert!(
        in_memory.mark.packs_repacked + in_memory.mark.packs_unused > 0,
        "{:?}",
        in_memory.mark
    );
    assert!(
        in_memory.mark.chunks_needed > 0
            && in_memory.mark.index_entries > in_memory.mark.chunks_needed
    );

    // The real prune, through runs: everything kept still restores.
    let done = repo
        .prune(
            &PruneOptions {
                sort_buffer: 64,
                ..PruneOptions::default()
            },
            Arc::new(NoProgress),
        )
        .await
        .expect("prune");
    assert!(
        done.swept.iter().map(|s| s.packs_deleted).sum::<usize>() > 0,
        "{done:?}"
    );
    let fresh = tempfile::tempdir().expect("tmp");
    let truth = open(&dir, fresh.path()).await;
    let kept = truth.snapshots().await.expect("list");
    assert_eq!(kept.len(), 3);
    for info in &kept {
        let sink = Sink::default();
        truth
            .dump(info, "data", sink.clone())
            .await
            .expect("restore");
        let got = sink.0.lock().expect("lock").clone();
        assert!(
            (3..6).any(|v| got == data(v)),
            "snapshot {} restores other bytes",
            info.id
        );
    }
    // Nothing left to do: a second mark finds every pack fully used.
    let again = repo
        .prune(&dry(64), Arc::new(NoProgress))
        .await
        .expect("prune");
    assert_eq!(
        again.mark.packs_repacked + again.mark.packs_unused,
        0,
        "{:?}",
        again.mark
    );
}
