//! `cairn-fuzz`: runs the fuzz targets, or writes their seed corpus.
//!
//! ```text
//! cairn-fuzz run [TARGET…] [--seconds N] [--seed S] [--corpus DIR]
//! cairn-fuzz seed [--corpus DIR] [--api FILE…]
//! ```
//!
//! `run` fuzzes each target (all by default) for N seconds (60) from the
//! corpus (`fuzz/corpus`), prints inputs run, inputs a second, panics and
//! the largest allocation, and saves each failing input under
//! `fuzz/failures/<target>/`; it exits 1 when anything failed. `seed`
//! writes inputs made by the real writers (a pack, an index file, a
//! manifest, a config, a key object, a sealed string, plans and leases, a
//! tar, Qdrant answers from recorded API fixtures, a cairn.toml).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_fuzz::{corpus, fuzz, Tracking, ALLOCATION_LIMIT, TARGETS};

#[global_allocator]
static ALLOC: Tracking = Tracking;

#[derive(clap::Parser)]
#[command(about = "Fuzz Cairn's parsers, or write their seed corpus")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Fuzz targets (all by default) from the corpus.
    Run {
        /// Targets to run.
        targets: Vec<String>,
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Seed of the mutations.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// The corpus directory.
        #[arg(long, default_value = "fuzz/corpus")]
        corpus: PathBuf,
    },
    /// Write the seed corpus.
    Seed {
        /// The corpus directory.
        #[arg(long, default_value = "fuzz/corpus")]
        corpus: PathBuf,
        /// Recorded Qdrant API answers (JSON) to take answers from.
        #[arg(long, num_args = 1.., default_value = "../shared/fixtures/qdrant-api/cluster-3-nodes.json")]
        api: Vec<PathBuf>,
    },
}

fn main() {
    match <Cli as clap::Parser>::parse().command {
        Command::Seed { corpus, api } => seed(&corpus, &api),
        Command::Run {
            targets,
            seconds,
            seed,
            corpus,
        } => std::process::exit(run(&corpus, &targets, seconds, seed)),
    }
}

fn run(dir: &Path, named: &[String], seconds: u64, seed: u64) -> i32 {
    let mut failed = false;
    println!(
        "{:<11} {:>11} {:>10} {:>7} {:>14}",
        "target", "inputs", "inputs/s", "panics", "largest alloc"
    );
    for t in TARGETS
        .iter()
        .filter(|t| named.is_empty() || named.iter().any(|n| n == t.name))
    {
        let inputs: Vec<Vec<u8>> = corpus(dir, t.name)
            .unwrap_or_default()
            .into_iter()
            .map(|(_, b)| b)
            .collect();
        let started = Instant::now();
        let out = fuzz(
            t,
            &inputs,
            u64::MAX,
            seed,
            Some(started + Duration::from_secs(seconds)),
        );
        let secs = started.elapsed().as_secs_f64();
        println!(
            "{:<11} {:>11} {:>10.0} {:>7} {:>10.1} MiB",
            t.name,
            out.execs,
            out.execs as f64 / secs,
            out.panics.len(),
            out.largest as f64 / 1_048_576.0
        );
        let failures = Path::new("fuzz/failures").join(t.name);
        let found = out
            .panics
            .iter()
            .take(20)
            .enumerate()
            .map(|(i, (input, msg))| (format!("panic-{i}"), input, format!("panic: {msg}")))
            .chain(
                out.allocations
                    .iter()
                    .take(20)
                    .enumerate()
                    .map(|(i, (input, big))| {
                        (
                            format!("alloc-{i}"),
                            input,
                            format!("allocated {big} bytes at once (limit {ALLOCATION_LIMIT})"),
                        )
                    }),
            );
        for (name, input, what) in found {
            failed = true;
            let _ = std::fs::create_dir_all(&failures);
            let _ = std::fs::write(failures.join(name), input);
            eprintln!("  {}: {what}", t.name);
        }
    }
    i32::from(failed)
}

fn write(dir: &Path, target: &str, name: &str, bytes: &[u8]) {
    let d = dir.join(target);
    std::fs::create_dir_all(&d).expect("corpus directory");
    std::fs::write(d.join(name), bytes).expect("corpus file");
}

const MANIFEST: &str = r#"{"version":2,"time":"2026-11-25T04:00:00.000000Z","host":"db-1","tags":["nightly"],"source":["/var/lib/qdrant/snapshots/docs"],"files":[{"path":"docs/docs-1.snapshot","size":11979264,"mode":420,"mtime":1764043200,"chunk_lists":["e7c028dbbe8d8bd3cde966a21341449780d4ddccfc047201b8e26385b84bc5aa"]},{"path":"docs/config.json","size":638,"mode":420,"mtime":0,"chunks":["ea8f163db38682925e4491c5e58d4bb3506ef8c14eb78a86e908c5624a67200f"]}],"totals":{"files":2,"bytes":11979902,"chunks":180,"new_chunks":12,"new_bytes":786432,"new_stored_bytes":742011,"new_packs":1,"requests":{"puts":3,"gets":1,"lists":2,"heads":0,"deletes":0}}}"#;

const CONFIG: &str = r#"{"version":3,"id":"ab00000000000000000000000000000000000000000000000000000000000000","chunker":{"min_size":16384,"avg_size":65536,"max_size":262144,"normalization":1,"tar_aware":true,"members":{"vectors":{"min_size":1024,"avg_size":4096,"max_size":16384}}},"compression":{"zstd_level":1,"min_saving_percent":10},"pack_size":33554432,"created":"2026-11-25T04:00:00+00:00","encryption":{"cipher":"xchacha20-poly1305","chunk_ids":"blake3-keyed","key_agreement":"x25519"}}"#;

const PLAN: &str = r#"{"host":"db-1","condemned_packs":["e7c028dbbe8d8bd3cde966a21341449780d4ddccfc047201b8e26385b84bc5aa"],"superseded_index":[],"snapshots":["ea8f163db38682925e4491c5e58d4bb3506ef8c14eb78a86e908c5624a67200f"]}"#;

const LEASE: &str = r#"{"kind":"backup","host":"db-1","pid":4242,"started":"2026-11-25T04:00:00Z","lease_secs":900}"#;

fn seed(dir: &Path, api_files: &[PathBuf]) {
    use cairn_model::{Compression, IndexFile, IndexGroup};
    let sealing = cairn_pack::Sealing::with_keys(Arc::new(cairn_crypto::Keys::full(
        &cairn_crypto::MasterKey::generate(),
    )));
    for (name, s) in [("plain", cairn_pack::Sealing::plain()), ("sealed", sealing)] {
        let mut w = cairn_pack::PackWriter::new().sealed(&s);
        let text = b"a chunk of text, a chunk of text, a chunk of text".repeat(8);
        w.push(
            s.ids().id(&text),
            &text,
            cairn_pack::compress(&text, Compression::default()).as_deref(),
        );
        w.push(s.ids().id(b"raw"), b"raw", None);
        let p = w.finish();
        write(dir, "pack", name, &p.bytes);
        let index = IndexFile {
            supersedes: vec![],
            groups: vec![IndexGroup {
                pack: p.id,
                pack_length: p.bytes.len() as u64,
                entries: p.entries.clone(),
            }],
        };
        write(dir, "index", name, &index.encode());
    }
    write(
        dir,
        "index",
        "empty",
        &IndexFile {
            supersedes: vec![],
            groups: vec![],
        }
        .encode(),
    );
    write(dir, "manifest", "json", MANIFEST.as_bytes());
    write(
        dir,
        "manifest",
        "zstd",
        &zstd::bulk::compress(MANIFEST.as_bytes(), 3).expect("zstd"),
    );
    write(dir, "config", "encrypted", CONFIG.as_bytes());
    let cheap = cairn_crypto::KdfParams {
        memory_kib: 8 * 1024,
        iterations: 1,
        parallelism: 1,
    };
    let master = cairn_crypto::MasterKey::generate();
    for (name, material) in [
        ("key", cairn_crypto::KeyMaterial::Full(master.clone())),
        (
            "write-only",
            cairn_crypto::KeyMaterial::WriteOnly(master.write_only()),
        ),
    ] {
        let key = cairn_crypto::KeyFile::wrap(
            &material,
            &cairn_crypto::Password::new("seed".into()),
            cheap,
            "seed-host",
            "seed",
        )
        .expect("key");
        write(dir, "key", name, &key.to_json());
    }
    let k = cairn_crypto::Keys::full(&master);
    for (name, kind) in [
        ("manifest", cairn_crypto::Kind::Object("snapshots")),
        ("index", cairn_crypto::Kind::Object("index")),
    ] {
        write(dir, "sealed", name, &k.seal(b"a sealed object", kind));
    }
    write(dir, "records", "plan", PLAN.as_bytes());
    write(dir, "records", "lease", LEASE.as_bytes());
    // The first 64 KiB of a real shard snapshot (headers, a config.json,
    // segment tars) and its last 16 KiB.
    let snap = std::fs::read("tests/fixtures/shard0-node0-day0.snapshot").expect("fixture");
    write(dir, "tar", "shard-head", &snap[..64 << 10]);
    write(dir, "tar", "shard-tail", &snap[snap.len() - (16 << 10)..]);
    let mut n = 0;
    for f in api_files {
        let Ok(text) = std::fs::read(&f) else {
            eprintln!("skipping {}: unreadable", f.display());
            continue;
        };
        let v: serde_json::Value = serde_json::from_slice(&text).expect("recorded API JSON");
        for call in v.as_array().into_iter().flatten() {
            if let Some(body) = call.get("body").filter(|b| b.is_object()) {
                write(
                    dir,
                    "qdrant",
                    &format!("answer-{n:02}"),
                    body.to_string().as_bytes(),
                );
                n += 1;
            }
        }
    }
    write(
        dir,
        "cairn_toml",
        "starter",
        cairn_config::starter("s3://bucket/qdrant", &["http://qdrant-0:6333".into()]).as_bytes(),
    );
    println!("wrote the seed corpus under {}", dir.display());
}
