//! The test vectors (tests/vectors/README.md): a tiny repository checked in
//! byte for byte, and a test that writes it again from its inputs with the
//! same id, times and host and requires every file to come out identical
//! (a manifest: its JSON, see [`content`]).
//! Set `CAIRN_BLESS_VECTORS=1` to rewrite it after a deliberate format
//! change (and say so in docs/format.md).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cairn_engine::seams::{Input, InputSource, RunShape};
use cairn_engine::{
    BackupOptions, Compression, InitOptions, NoProgress, RepoStore, Repository, Snapshot,
};

use crate::support::{files_under, project_dir, Env};

fn vectors() -> PathBuf {
    project_dir().join("tests/vectors")
}

/// Night 1 at 2026-11-01T02:00:00Z, night 2 a day later.
fn night_time(night: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339("2026-10-31T02:00:00Z")
        .expect("time")
        .with_timezone(&chrono::Utc)
        + chrono::Duration::days(night)
}

/// Writes the vector repository into `dir` from the inputs, hashing and
/// compressing on `threads` threads, reading `block` bytes at a time.
async fn write_repository(dir: &Path, cache: &Path, threads: usize, block: usize) {
    let store = RepoStore::open(dir.to_str().expect("utf8"), true).expect("store");
    let repo = Repository::init(
        store,
        InitOptions {
            pack_size: 1 << 20,
            // Raw blobs: zstd's output depends on the library's version,
            // so a compressed vector could not be written again by anyone.
            compression: Compression {
                zstd_level: 0,
                ..Compression::default()
            },
            id: Some([7; 32]),
            created: Some(night_time(0)),
            ..InitOptions::default()
        },
        cache,
    )
    .await
    .expect("init");
    for night in [1, 2] {
        let time = night_time(night);
        let path = vectors().join(format!("input/night{night}.tar"));
        let input = Input {
            name: "shard-0.snapshot".into(),
            size: Some(std::fs::metadata(&path).expect("input").len()),
            mode: 0o644,
            mtime: time.timestamp(),
            source: InputSource::File(path),
        };
        let opts = BackupOptions {
            host: Some("vectors".into()),
            time: Some(time),
            cpu_threads: threads,
            block_size: block,
            ..BackupOptions::default()
        };
        let run = repo
            .run_inputs(
                vec![input],
                opts,
                RunShape::SEQUENTIAL,
                Arc::new(NoProgress),
            )
            .await
            .expect("run");
        let snapshot = Snapshot {
            version: repo.config().version,
            time,
            host: "vectors".into(),
            tags: vec![format!("night{night}")],
            source: vec!["shard-0.snapshot".into()],
            files: run.files.into_iter().flatten().collect(),
            totals: run.totals,
            qdrant: None,
        };
        repo.commit_snapshot(snapshot, run.commit)
            .await
            .expect("commit");
    }
}

#[test]
fn the_vector_repository_is_rebuilt_byte_for_byte() {
    let work = tempfile::TempDir::new().expect("tempdir");
    let built = work.path().join("repo");
    let again = work.path().join("again");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(write_repository(
        &built,
        &work.path().join("cache"),
        1,
        8 << 20,
    ));
    // The bytes do not depend on the machine: other thread counts and block
    // sizes write the same repository.
    rt.block_on(write_repository(
        &again,
        &work.path().join("cache2"),
        4,
        16 << 10,
    ));
    let checked_in = vectors().join("repo");
    if std::env::var_os("CAIRN_BLESS_VECTORS").is_some() {
        let _ = std::fs::remove_dir_all(&checked_in);
        for f in files_under(&built) {
            let to = checked_in.join(&f);
            std::fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
            std::fs::copy(built.join(&f), to).expect("copy");
        }
    }
    let files = files_under(&built);
    assert_eq!(files, files_under(&again), "the same files on any machine");
    assert_eq!(files, files_under(&checked_in), "the same files");
    // config, two manifests, a pack and an index file per night.
    assert_eq!(files.len(), 7, "{files:?}");
    for f in &files {
        let [built, again, checked_in] =
            [&built, &again, &checked_in].map(|root| content(&root.join(f)));
        assert!(
            built == again,
            "{} depends on threads or block size",
            f.display()
        );
        assert!(
            built == checked_in,
            "{} differs from the checked-in vector",
            f.display()
        );
    }
}

/// A file's bytes; for a manifest, its JSON: manifests are zstd frames, and
/// zstd's output depends on the library's version (their names, the
/// BLAKE3 of the JSON, pin the JSON all the same).
fn content(path: &Path) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    if path.parent().and_then(Path::file_name) == Some("snapshots".as_ref()) {
        zstd::decode_all(&bytes[..]).expect("a manifest is a zstd frame")
    } else {
        bytes
    }
}

/// The checked-in repository is a repository: each night restores to its
/// input, and a full check finds nothing wrong.
#[test]
fn the_vector_repository_restores_its_inputs() {
    let env = Env::local();
    for f in files_under(&vectors().join("repo")) {
        let to = Path::new(&env.repo).join(&f);
        std::fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
        std::fs::copy(vectors().join("repo").join(&f), to).expect("copy");
    }
    let list = env.json(&["snapshots"]);
    let list = list.as_array().expect("list");
    assert_eq!(list.len(), 2, "{list:?}");
    for (night, s) in [1, 2].iter().zip(list) {
        let out = env.path(&format!("night{night}"));
        env.run(&[
            "restore",
            s["id"].as_str().expect("id"),
            out.to_str().expect("utf8"),
        ]);
        assert_eq!(
            std::fs::read(out.join("shard-0.snapshot")).expect("restored"),
            std::fs::read(vectors().join(format!("input/night{night}.tar"))).expect("input"),
            "night {night}"
        );
    }
    let report = env.json(&["check", "--read-data"]);
    assert_eq!(report["errors"], serde_json::json!([]), "{report}");
}
