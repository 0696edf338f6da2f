use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use cairn_model::{IndexFile, Snapshot, SnapshotId};
use serde_json::Value;

use crate::support::{fresh, random_bytes, spawn_piped, Env};

fn listing(dir: &Path) -> BTreeSet<PathBuf> {
    crate::support::files_under(dir).into_iter().collect()
}

/// A repository with two snapshots of unrelated files, `a` and `b`; returns
/// their ids and the index files that only `b`'s backup wrote.
fn two_snapshots(env: &Env) -> (String, String, Vec<PathBuf>) {
    env.init(&["--avg-chunk-size", "16KiB", "--no-encryption"]);
    let dir = env.path("in");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("a"), random_bytes(1 << 20, 1)).expect("write");
    std::fs::write(dir.join("b"), random_bytes(1 << 20, 2)).expect("write");
    let a = env.backup(&[&dir.join("a")]);
    let index = Path::new(&env.repo).join("index");
    let before = listing(&index);
    let b = env.backup(&[&dir.join("b")]);
    let only_b: Vec<PathBuf> = listing(&index).difference(&before).cloned().collect();
    assert!(!only_b.is_empty());
    (
        a["snapshot"].as_str().expect("id").to_string(),
        b["snapshot"].as_str().expect("id").to_string(),
        only_b,
    )
}

#[test]
fn damaged_or_stray_index_files_only_fail_what_needs_them() {
    let env = Env::local();
    let (a, b, only_b) = two_snapshots(&env);
    let index = Path::new(&env.repo).join("index");
    std::fs::write(index.join("stray-object"), b"not an index file").expect("stray");
    let damaged = index.join(&only_b[0]);
    let bytes = std::fs::read(&damaged).expect("read");
    std::fs::write(&damaged, &bytes[..bytes.len() / 2]).expect("truncate");

    let out_a = env.path("out-a");
    let r = fresh(&env, &["restore", &a, out_a.to_str().expect("utf8")]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(r.status.success(), "a needs neither: {err}");
    assert!(
        err.contains("index/stray-object"),
        "the stray object is named: {err}"
    );
    assert!(
        err.contains(&format!("index/{}", only_b[0].display())),
        "{err}"
    );
    assert_eq!(
        std::fs::read(out_a.join("a")).expect("restored"),
        random_bytes(1 << 20, 1)
    );

    // b needs what the damaged file covered: its packs are intact and
    // self-describing, so the restore reads their trailers, succeeds, and
    // says to run `cairn repair index`.
    let out_b = env.path("out-b");
    let r = fresh(&env, &["restore", &b, out_b.to_str().expect("utf8")]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(r.status.success(), "b's packs are intact: {err}");
    assert!(
        err.contains("read from the packs' trailers") && err.contains("run `cairn repair index`"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(out_b.join("b")).expect("restored"),
        random_bytes(1 << 20, 2)
    );
    // A backup from a machine with no local state deduplicates against
    // those packs too.
    let b_path = env.path("in").join("b");
    let r = fresh(&env, &["--json", "backup", b_path.to_str().expect("utf8")]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let again: Value = serde_json::from_slice(&r.stdout).expect("json");
    assert_eq!(again["new_chunks"].as_u64(), Some(0), "{again}");
    // check still names the damaged file until it is repaired.
    let c = env.cmd().args(["--json", "check"]).output().expect("check");
    assert!(!c.status.success());
    assert!(String::from_utf8_lossy(&c.stdout).contains(&only_b[0].display().to_string()));
}

#[test]
fn stray_objects_under_snapshots_do_not_hide_the_others() {
    let env = Env::local();
    let (a, b, _) = two_snapshots(&env);
    let snaps = Path::new(&env.repo).join("snapshots");
    std::fs::write(snaps.join("README"), b"hello").expect("stray");
    let fake = "ab".repeat(32);
    std::fs::write(snaps.join(&fake), b"not zstd").expect("damaged");
    let out = env
        .cmd()
        .args(["--json", "snapshots"])
        .output()
        .expect("run");
    assert!(out.status.success());
    let listed: Value = serde_json::from_slice(&out.stdout).expect("json");
    let ids: Vec<&str> = listed
        .as_array()
        .expect("list")
        .iter()
        .map(|s| s["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&a.as_str()) && ids.contains(&b.as_str()));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("snapshots/README") && err.contains(&fake),
        "{err}"
    );
}

/// The old behaviour: the next backup still deduplicated against a deleted
/// pack and wrote a snapshot that could not be restored, with no error.
#[test]
fn a_deleted_pack_is_stored_again_by_the_next_backup() {
    let env = Env::local();
    env.init(&["--avg-chunk-size", "16KiB", "--no-encryption"]);
    let f = env.path("data");
    let data = random_bytes(3 << 20, 5);
    std::fs::write(&f, &data).expect("write");
    let first = env.backup(&[&f]);
    std::fs::remove_dir_all(Path::new(&env.repo).join("packs")).expect("delete packs");
    let second = env.backup(&[&f]);
    assert_eq!(
        second["new_chunks"], first["new_chunks"],
        "every chunk is stored again: {second}"
    );
    let out = env.path("out");
    let r = fresh(
        &env,
        &[
            "restore",
            second["snapshot"].as_str().expect("id"),
            out.to_str().expect("utf8"),
        ],
    );
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(std::fs::read(out.join("data")).expect("restored") == data);
}

/// Packs deleted while a backup runs: the last check before the manifest
/// catches them; no unrestorable snapshot is written, and the next backup
/// stores the chunks again.
#[test]
fn packs_deleted_during_a_backup_stop_it_before_its_manifest() {
    let env = Env::local();
    env.init(&["--avg-chunk-size", "16KiB", "--no-encryption"]);
    let data = random_bytes(4 << 20, 6);
    let args = ["--json", "backup", "--stdin", "--stdin-name", "d"];
    let first = env.run_with_stdin(&args, &data);
    assert!(first.status.success());
    let mut child = spawn_piped(env.cmd().args(args));
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(&data[..2 << 20]).expect("feed");
    std::fs::remove_dir_all(Path::new(&env.repo).join("packs")).expect("delete packs");
    stdin.write_all(&data[2 << 20..]).expect("feed");
    drop(stdin);
    let out = child.wait_with_output().expect("wait");
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("disappeared while it ran"));
    assert_eq!(env.json(&["snapshots"]).as_array().expect("list").len(), 1);
    let again = env.run_with_stdin(&args, &data);
    let again: Value = serde_json::from_slice(&again.stdout).expect("json");
    assert!(again["new_chunks"].as_u64().expect("n") > 0, "{again}");
    let dumped = env.run(&["dump", again["snapshot"].as_str().expect("id"), "d"]);
    assert!(dumped.stdout == data);
}

/// An index file whose entry claims a 4 GiB chunk: refused as damaged (no
/// allocation sized from it, no panic); the restore that needs the chunk
/// reads the pack's own trailer instead.
#[test]
fn crafted_lengths_are_refused_not_trusted() {
    let env = Env::local();
    let (_, b, only_b) = two_snapshots(&env);
    let index = Path::new(&env.repo).join("index");
    for name in &only_b {
        let path = index.join(name);
        let mut file = IndexFile::decode(&std::fs::read(&path).expect("read")).expect("decode");
        file.groups[0].entries[0].raw_length = u32::MAX;
        let bytes = file.encode();
        let crafted = blake3::hash(&bytes).to_hex().to_string();
        std::fs::remove_file(&path).expect("rm");
        std::fs::write(index.join(crafted), bytes).expect("write");
    }
    // The crafted files are skipped as damaged (named, no panic); the
    // restore reads the packs' own trailers instead and succeeds.
    let out = env.path("out");
    let r = fresh(&env, &["restore", &b, out.to_str().expect("utf8")]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.contains("more than the") && !err.contains("panicked"),
        "{err}"
    );
    assert!(r.status.success(), "{err}");
    assert_eq!(
        std::fs::read(out.join("b")).expect("restored"),
        random_bytes(1 << 20, 2)
    );
}

/// A manifest whose recorded size disagrees with its chunks: the restore
/// says so (integrity exit code) and leaves no file under the final name.
#[test]
fn restore_checks_each_file_against_its_recorded_size() {
    let env = Env::local();
    let (a, _, _) = two_snapshots(&env);
    let snaps = Path::new(&env.repo).join("snapshots");
    let packed = std::fs::read(snaps.join(&a)).expect("read");
    let mut snap: Snapshot =
        serde_json::from_slice(&zstd::decode_all(&packed[..]).expect("zstd")).expect("json");
    snap.files[0].size += 1;
    let json = serde_json::to_vec(&snap).expect("json");
    let id = SnapshotId::of(&json).to_hex();
    std::fs::write(
        snaps.join(&id),
        zstd::encode_all(&json[..], 3).expect("zstd"),
    )
    .expect("write");
    let out = env.path("out");
    let (code, err) = env.fail(&["restore", &id, out.to_str().expect("utf8")]);
    assert_eq!(code, 4);
    assert!(err.contains("the manifest records"), "{err}");
    assert!(!out.join("a").exists());
}

/// With every index file gone, restores fail; `repair index` rebuilds them
/// from the packs, and both a fresh machine and one with the old cache
/// restore again.
#[test]
fn repair_index_rebuilds_index_files_from_packs() {
    let env = Env::local();
    let (a, b, _) = two_snapshots(&env);
    let index = Path::new(&env.repo).join("index");
    std::fs::remove_dir_all(&index).expect("rm index");
    std::fs::create_dir_all(&index).expect("mkdir");
    let out = env.path("x");
    let r = fresh(&env, &["restore", &a, out.to_str().expect("utf8")]);
    assert_eq!(r.status.code(), Some(4));
    let s = env.json(&["repair", "index"]);
    assert!(s["packs"].as_u64().expect("n") >= 2, "{s}");
    assert!(s["unreadable"].as_array().expect("list").is_empty());
    let c = env.cmd().args(["--json", "check"]).output().expect("check");
    assert!(c.status.success(), "{}", String::from_utf8_lossy(&c.stdout));
    for (id, name, seed) in [(&a, "a", 1), (&b, "b", 2)] {
        let out = env.path(&format!("out-{name}"));
        env.run(&["restore", id, out.to_str().expect("utf8")]); // the old cache
        assert_eq!(
            std::fs::read(out.join(name)).expect("read"),
            random_bytes(1 << 20, seed)
        );
        let out = env.path(&format!("fresh-{name}"));
        let r = fresh(&env, &["restore", id, out.to_str().expect("utf8")]);
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    }
}

/// A snapshot of two files, one of which lost its pack: `check` names it,
/// `repair snapshots --forget` salvages the snapshot with that file marked
/// damaged (not dropped), restoring it restores the other file and names the
/// damaged one, and after a prune the repository checks clean.
#[test]
fn repair_snapshots_marks_damaged_files_and_keeps_the_rest() {
    let env = Env::local();
    env.init(&["--avg-chunk-size", "16KiB", "--no-encryption"]);
    let dir = env.path("in");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let a = random_bytes(1 << 20, 11);
    std::fs::write(dir.join("a"), &a).expect("write");
    env.backup(&[&dir]);
    let packs = Path::new(&env.repo).join("packs");
    let before = listing(&packs);
    std::fs::write(dir.join("b"), random_bytes(1 << 20, 13)).expect("write");
    let second = env.backup(&[&dir]);
    let id = second["snapshot"].as_str().expect("id");
    for p in listing(&packs).difference(&before) {
        std::fs::remove_file(packs.join(p)).expect("delete b's pack");
    }
    let c = env.cmd().args(["--json", "check"]).output().expect("check");
    assert_eq!(c.status.code(), Some(4));
    let report: Value = serde_json::from_slice(&c.stdout).expect("json");
    assert_eq!(report["damaged"][id][0]["path"], "in/b", "{report}");
    // Until then, a prune deletes nothing: what the damaged file needs is unknown.
    let (code, err) = env.fail(&["prune"]);
    assert_eq!(code, 4);
    assert!(err.contains("prune deletes nothing"), "{err}");

    let r = env.json(&["repair", "snapshots", "--forget"]);
    let salvaged = r["repaired"][0]["to"].as_str().expect("new id").to_string();
    assert_eq!(r["repaired"][0]["from"], id);
    let listed = env.json(&["snapshots"]);
    let ids: Vec<&str> = listed
        .as_array()
        .expect("list")
        .iter()
        .map(|s| s["id"].as_str().expect("id"))
        .collect();
    assert!(
        ids.contains(&salvaged.as_str()) && !ids.contains(&id),
        "{listed}"
    );
    let out = env.path("out");
    let (code, err) = env.fail(&["restore", &salvaged, out.to_str().expect("utf8")]);
    assert_eq!(code, 4);
    assert!(
        err.contains("in/b") && err.contains("marked damaged"),
        "{err}"
    );
    assert_eq!(std::fs::read(out.join("in/a")).expect("a restored"), a);
    assert!(!out.join("in/b").exists());

    env.json(&["prune"]);
    let c = env.cmd().args(["--json", "check"]).output().expect("check");
    assert!(c.status.success(), "{}", String::from_utf8_lossy(&c.stdout));
}
