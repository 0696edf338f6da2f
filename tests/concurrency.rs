use std::io::Write;
use std::path::Path;
use std::process::Child;

use serde_json::Value;

use crate::support::{random_bytes, spawn_piped, Env};

/// `cairn --json backup --stdin` reading from a pipe the test holds.
fn stdin_backup(env: &Env, cache: &Path, name: &str) -> Child {
    spawn_piped(env.cmd().env("CAIRN_CACHE_DIR", cache).args([
        "--json",
        "backup",
        "--stdin",
        "--stdin-name",
        name,
    ]))
}

fn finish(child: Child) -> Value {
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "backup failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

fn dump(env: &Env, cache: &Path, id: &str, name: &str) -> Vec<u8> {
    let out = env
        .cmd()
        .env("CAIRN_CACHE_DIR", cache)
        .args(["dump", id, name])
        .output()
        .expect("dump");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Two backups on one host with one cache, provably at the same time: the
/// first is still reading its input (and holds the cache) while the second
/// runs from start to end. Neither fails, nothing is wiped, both restore.
#[test]
fn two_processes_back_up_at_once_on_one_cache() {
    let env = Env::local();
    env.init(&["--avg-chunk-size", "16KiB"]);
    let cache = env.cache.path();
    let shared = random_bytes(6 << 20, 1);
    let a_data = [shared.as_slice(), &random_bytes(2 << 20, 2)].concat();
    let b_data = [&random_bytes(2 << 20, 3)[..], shared.as_slice()].concat();

    let mut a = stdin_backup(&env, cache, "a.snapshot");
    let mut a_in = a.stdin.take().expect("stdin");
    // More than a pipe buffer: `a` is reading, so it has opened the cache.
    a_in.write_all(&a_data[..4 << 20]).expect("feed a");

    let mut b = stdin_backup(&env, cache, "b.snapshot");
    b.stdin
        .take()
        .expect("stdin")
        .write_all(&b_data)
        .expect("feed b");
    let b_out = finish(b);

    a_in.write_all(&a_data[4 << 20..]).expect("feed a");
    drop(a_in);
    let a_out = finish(a);

    // The second process had a cache slot of its own.
    assert!(cache.read_dir().expect("cache").count() >= 1);
    let slots: Vec<String> = std::fs::read_dir(
        cache
            .read_dir()
            .expect("cache")
            .flatten()
            .next()
            .expect("repository cache")
            .path(),
    )
    .expect("slots")
    .flatten()
    .map(|e| e.file_name().to_string_lossy().into_owned())
    .collect();
    assert!(
        slots.iter().any(|s| s == "chunk-index.1"),
        "second slot in use: {slots:?}"
    );
    for (out, name, data) in [
        (&a_out, "a.snapshot", &a_data),
        (&b_out, "b.snapshot", &b_data),
    ] {
        let id = out["snapshot"].as_str().expect("id");
        assert!(dump(&env, cache, id, name) == *data, "{name} restores");
    }
    // Later runs find their own uploads and each other's: nothing is stored twice.
    let mut c = stdin_backup(&env, cache, "c.snapshot");
    c.stdin
        .take()
        .expect("stdin")
        .write_all(&b_data)
        .expect("feed");
    assert_eq!(finish(c)["new_chunks"], 0);
}

/// Several hosts, each with its own cache, write one repository at once;
/// every snapshot restores on a machine with no cache at all.
pub fn hosts_write_one_repository_at_once(env: &Env) {
    env.init(&["--avg-chunk-size", "16KiB"]);
    let common = random_bytes(3 << 20, 9);
    let inputs: Vec<Vec<u8>> = (0..3)
        .map(|i| [&random_bytes(1 << 20, 100 + i)[..], common.as_slice()].concat())
        .collect();
    let caches: Vec<tempfile::TempDir> = (0..3)
        .map(|_| tempfile::TempDir::new().expect("tmp"))
        .collect();
    let children: Vec<Child> = inputs
        .iter()
        .zip(&caches)
        .enumerate()
        .map(|(i, (data, cache))| {
            let mut c = stdin_backup(env, cache.path(), &format!("host{i}.snapshot"));
            let mut stdin = c.stdin.take().expect("stdin");
            let data = data.clone();
            std::thread::spawn(move || stdin.write_all(&data).expect("feed"));
            c
        })
        .collect();
    let outs: Vec<Value> = children.into_iter().map(finish).collect();
    let fresh = tempfile::TempDir::new().expect("tmp");
    for (i, (out, data)) in outs.iter().zip(&inputs).enumerate() {
        let id = out["snapshot"].as_str().expect("id");
        assert!(
            dump(env, fresh.path(), id, &format!("host{i}.snapshot")) == *data,
            "host {i}'s snapshot restores"
        );
    }
    let listed = env.json(&["snapshots"]);
    assert_eq!(listed.as_array().expect("list").len(), 3);
}

#[test]
fn hosts_write_one_local_repository_at_once() {
    hosts_write_one_repository_at_once(&Env::local());
}

#[test]
fn hosts_write_one_s3_repository_at_once() {
    hosts_write_one_repository_at_once(&Env::s3());
}
