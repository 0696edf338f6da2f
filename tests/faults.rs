use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::{files_under, own_fixtures, random_bytes, Env};

const REPOSITORY_EXIT: i32 = 3;
const INTEGRITY_EXIT: i32 = 4;
const INTERRUPTED_EXIT: i32 = 130;

#[test]
fn missing_repository_path() {
    let env = Env::local();
    let (code, err) = env.fail(&["snapshots"]);
    assert_eq!(code, REPOSITORY_EXIT);
    assert!(err.contains("no such directory"), "{err}");
}

#[test]
fn directory_that_is_not_a_repository() {
    let env = Env::local();
    std::fs::create_dir_all(&env.repo).expect("mkdir");
    let (code, err) = env.fail(&["backup", own_fixtures().to_str().expect("utf8")]);
    assert_eq!(code, REPOSITORY_EXIT);
    assert!(err.contains("not a Cairn repository"), "{err}");
}

#[test]
fn init_twice_is_refused() {
    let env = Env::local();
    env.init(&[]);
    let (code, err) = env.fail(&["init"]);
    assert_eq!(code, REPOSITORY_EXIT);
    assert!(err.contains("already holds a Cairn repository"), "{err}");
}

#[test]
fn unknown_url_scheme() {
    let mut env = Env::local();
    env.repo = "ftp://example/backups".into();
    let (code, err) = env.fail(&["init"]);
    assert_eq!(code, REPOSITORY_EXIT);
    assert!(err.contains("unknown scheme ftp://"), "{err}");
}

#[test]
fn missing_repository_option() {
    let out = std::process::Command::new(crate::support::cairn_bin())
        .env_remove("CAIRN_REPOSITORY")
        .arg("snapshots")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("CAIRN_REPOSITORY"));
}

#[test]
fn repository_of_a_newer_format() {
    let env = Env::local();
    env.init(&[]);
    let config = Path::new(&env.repo).join("config");
    let mut v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config).expect("read")).expect("json");
    v["version"] = 99.into();
    v["some_future_field"] = true.into();
    std::fs::write(&config, serde_json::to_vec(&v).expect("json")).expect("write");
    let (code, err) = env.fail(&["snapshots"]);
    assert_eq!(code, REPOSITORY_EXIT);
    assert!(err.contains("format version 99 is newer"), "{err}");
}

/// A config whose settings are out of range is refused by name, and init
/// refuses such settings up front.
#[test]
fn config_out_of_range_is_refused() {
    let env = Env::local();
    let (code, err) = env.fail(&["init", "--compression-level", "99"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("zstd level 99"), "{err}");
    env.init(&[]);
    let config = Path::new(&env.repo).join("config");
    let mut v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config).expect("read")).expect("json");
    v["compression"]["min_saving_percent"] = 200.into();
    std::fs::write(&config, serde_json::to_vec(&v).expect("json")).expect("write");
    let (code, err) = env.fail(&["snapshots"]);
    assert_ne!(code, 0);
    assert!(err.contains("min_saving_percent 200 is above 100"), "{err}");
}

#[test]
fn unreadable_input_file() {
    let env = Env::local();
    env.init(&[]);
    let (code, err) = env.fail(&["backup", "/nonexistent/day0.snapshot"]);
    assert_eq!(code, 1);
    assert!(err.contains("/nonexistent/day0.snapshot"), "{err}");
    // A file that opens but cannot be read (EIO), even for root.
    let (code, err) = env.fail(&["backup", "/proc/self/mem"]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot read /proc/self/mem"), "{err}");
    // No snapshot was written by either attempt.
    assert_eq!(env.json(&["snapshots"]).as_array().expect("array").len(), 0);
}

/// Flip one byte inside a pack's chunk data: restore must fail naming the
/// snapshot, the file and the pack, and leave no file under the final name.
#[test]
fn altered_pack_byte_is_detected() {
    let env = Env::local();
    env.init(&["--compression-level", "0"]);
    let f = own_fixtures().join("shard0-node0-day0.snapshot");
    let b = env.backup(&[&f]);
    let snapshot = b["snapshot"].as_str().expect("id").to_string();
    let packs_dir = Path::new(&env.repo).join("packs");
    let packs = files_under(&packs_dir);
    assert_eq!(packs.len(), 1);
    let pack_path = packs_dir.join(&packs[0]);
    let mut bytes = std::fs::read(&pack_path).expect("read pack");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&pack_path, &bytes).expect("write pack");
    let out = env.path("out");
    let (code, err) = env.fail(&["restore", "latest", out.to_str().expect("utf8")]);
    assert_eq!(code, INTEGRITY_EXIT, "{err}");
    let pack_id = pack_path
        .file_name()
        .expect("name")
        .to_string_lossy()
        .to_string();
    assert!(
        err.contains(&snapshot),
        "error must name the snapshot: {err}"
    );
    assert!(
        err.contains("shard0-node0-day0.snapshot"),
        "error must name the file: {err}"
    );
    assert!(err.contains(&pack_id), "error must name the pack: {err}");
    assert!(
        files_under(&out).is_empty(),
        "no file may be left behind: {:?}",
        files_under(&out)
    );
}

#[test]
fn restore_target_that_is_not_writable() {
    let env = Env::local();
    env.init(&[]);
    env.backup(&[&own_fixtures().join("shard0-node0-day0.snapshot")]);
    // A path below a regular file can never be created, even by root.
    let blocker = env.path("blocker");
    std::fs::write(&blocker, b"x").expect("write");
    let target = blocker.join("out");
    let (code, err) = env.fail(&["restore", "latest", target.to_str().expect("utf8")]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot create"), "{err}");
}

/// The target file system fills up (a 1 MiB file-size limit makes the
/// kernel refuse writes past it): clean error, nothing under the final name,
/// no partial file left.
#[test]
fn restore_target_fills_up() {
    let env = Env::local();
    env.init(&[]);
    env.backup(&[&own_fixtures().join("cluster-collection-node0-day0.snapshot")]);
    let out = env.path("out");
    let script = format!(
        "trap '' XFSZ; ulimit -f 1024; exec \"$0\" --repo '{}' restore latest '{}'",
        env.repo,
        out.display()
    );
    let res = std::process::Command::new("sh")
        .arg("-c")
        .arg(&script)
        .arg(crate::support::cairn_bin())
        .env("CAIRN_CACHE_DIR", env.cache.path())
        .env("CAIRN_PASSWORD", crate::support::TEST_PASSWORD)
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&res.stderr);
    assert_eq!(res.status.code(), Some(1), "{err}");
    assert!(
        err.contains("cannot write") && err.contains("File too large"),
        "{err}"
    );
    assert!(
        files_under(&out).is_empty(),
        "left behind: {:?}",
        files_under(&out)
    );
    // Writing to a full device through dump reports ENOSPC.
    let full = std::fs::File::create("/dev/full").expect("/dev/full");
    let res = env
        .cmd()
        .args(["dump", "latest", "cluster-collection-node0-day0.snapshot"])
        .stdout(full)
        .output()
        .expect("run");
    assert_eq!(res.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&res.stderr).contains("No space left on device"));
}

fn index_files(env: &Env) -> usize {
    let dir = Path::new(&env.repo).join("index");
    if dir.is_dir() {
        files_under(&dir).len()
    } else {
        0
    }
}

/// Starts a `--stdin` backup with 1 MiB packs, feeds it until at least
/// three packs are indexed, then sends `signal` and returns the exit status.
fn interrupt_backup(env: &Env, data: &[u8], signal: &str) -> std::process::ExitStatus {
    let mut child = env
        .cmd()
        .args(["backup", "--stdin", "--stdin-name", "big.snapshot"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut fed = 0;
    while index_files(env) < 3 {
        assert!(Instant::now() < deadline, "backup made no progress");
        if fed < data.len() {
            let n = (data.len() - fed).min(1 << 20);
            stdin.write_all(&data[fed..fed + n]).expect("feed");
            fed += n;
        } else {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    assert!(
        fed < data.len(),
        "the backup must still be running when interrupted"
    );
    std::process::Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .expect("kill");
    drop(stdin);
    child.wait().expect("wait")
}

#[test]
fn interrupted_backup_keeps_the_repository_consistent() {
    for signal in ["-INT", "-KILL"] {
        let env = Env::local();
        env.init(&["--pack-size", "1MiB", "--compression-level", "0"]);
        let data = random_bytes(48 << 20, 11);
        let status = interrupt_backup(&env, &data, signal);
        if signal == "-INT" {
            assert_eq!(status.code(), Some(INTERRUPTED_EXIT), "SIGINT exits 130");
        } else {
            assert!(!status.success());
        }
        // No snapshot was written, and what was uploaded is indexed and reused.
        assert_eq!(env.json(&["snapshots"]).as_array().expect("array").len(), 0);
        let indexed_before = index_files(&env);
        let out = env.run_with_stdin(
            &[
                "--json",
                "backup",
                "--stdin",
                "--stdin-name",
                "big.snapshot",
            ],
            &data,
        );
        assert!(out.status.success(), "{signal}: second backup failed");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        let reused = v["bytes"].as_u64().expect("u64") - v["new_bytes"].as_u64().expect("u64");
        assert!(
            reused >= (indexed_before as u64 - 1) * (1 << 20) / 2,
            "{signal}: only {reused} bytes reused from {indexed_before} packs"
        );
        let dumped = env.run(&["dump", "latest", "big.snapshot"]).stdout;
        assert!(
            dumped == data,
            "{signal}: restore after an interrupted backup differs"
        );
    }
}
