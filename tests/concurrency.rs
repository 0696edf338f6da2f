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

/// A restore that has located its chunks, stopped (SIGSTOP) before it reads
/// its second file, while `forget` and `prune` repack and condemn every pack
/// that file's data is in: the prune's sweep waits for the restore's
/// reader lease (it says so), the restore, continued, finishes with every
/// byte right, and the next prune, with the restore gone, sweeps. The
/// overlap is proven, not hoped for: the test checks that the second file
/// was not begun when the restore stopped (and tries again otherwise).
#[test]
fn a_restore_survives_a_prune_that_repacks_what_it_reads() {
    let env = Env::local();
    env.init(&[]);
    let src = env.path("src");
    std::fs::create_dir_all(src.join("a-kept")).expect("mkdir");
    std::fs::create_dir_all(src.join("z-gone")).expect("mkdir");
    let a1 = random_bytes(24 << 20, 1);
    let a2 = random_bytes(4 << 20, 2);
    std::fs::write(src.join("a-kept/a1"), &a1).expect("write");
    std::fs::write(src.join("a-kept/a2"), &a2).expect("write");
    std::fs::write(src.join("z-gone/b"), random_bytes(24 << 20, 3)).expect("write");
    // One backup of everything (a1, a2 and b share packs), one of a1 and a2.
    let first = env.backup(&[&src]);
    let second = env.backup(&[&src.join("a-kept")]);
    let first = first["snapshot"].as_str().expect("id").to_string();
    let second = second["snapshot"].as_str().expect("id").to_string();

    let mut caught = None;
    for attempt in 0..20 {
        let out = env.path(&format!("out{attempt}"));
        let mut child = env
            .cmd()
            .args(["-q", "restore", &second])
            .arg(&out)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("restore");
        let pid = libc::pid_t::try_from(child.id()).expect("pid");
        // Stop it while it writes a1 (its partial file exists).
        let partial = out.join("a-kept/.a1.cairn-partial");
        let t = std::time::Instant::now();
        while !partial.exists() && t.elapsed() < std::time::Duration::from_secs(60) {
            if child.try_wait().expect("wait").is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
        #[allow(unsafe_code)]
        let stopped = unsafe { libc::kill(pid, libc::SIGSTOP) } == 0;
        let begun_a2 =
            out.join("a-kept/a2").exists() || out.join("a-kept/.a2.cairn-partial").exists();
        if stopped && child.try_wait().expect("wait").is_none() && partial.exists() && !begun_a2 {
            caught = Some((child, pid, out));
            break;
        }
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(pid, libc::SIGCONT);
        }
        let _ = child.wait();
    }
    let (child, pid, out) =
        caught.expect("never stopped a restore before its second file in 20 tries");

    // The prune repacks a1 and a2 away from b and condemns the old packs.
    env.json(&["forget", &first]);
    let p = env.json(&["prune", "--max-unused", "0%"]);
    assert!(
        p["packs_repacked"].as_u64().unwrap_or(0) > 0,
        "the prune repacked nothing: {p:#}"
    );
    let deferred = p["deferred"].as_array().expect("deferred");
    assert!(
        !deferred.is_empty()
            && deferred[0]["why"]
                .as_str()
                .is_some_and(|w| w.contains("reader")),
        "the sweep did not wait for the restore's lease: {p:#}"
    );
    assert!(p["swept"].as_array().is_some_and(Vec::is_empty), "{p:#}");

    #[allow(unsafe_code)]
    unsafe {
        libc::kill(pid, libc::SIGCONT);
    }
    let done = child.wait_with_output().expect("wait");
    assert!(
        done.status.success(),
        "the restore failed after a prune: {}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert!(
        std::fs::read(out.join("a-kept/a1")).expect("a1") == a1,
        "a1 differs"
    );
    assert!(
        std::fs::read(out.join("a-kept/a2")).expect("a2") == a2,
        "a2 differs"
    );

    // With the restore gone, the next prune sweeps the plan.
    let p = env.json(&["prune", "--max-unused", "0%"]);
    assert!(
        p["swept"].as_array().is_some_and(|s| !s.is_empty())
            && p["deferred"].as_array().is_some_and(Vec::is_empty),
        "{p:#}"
    );
    env.run(&["check", "--read-data"]);
    let again = env.path("again");
    env.run(&["restore", &second, again.to_str().expect("utf-8")]);
    assert!(std::fs::read(again.join("a-kept/a2")).expect("a2") == a2);
}

/// A write-only agent backs up while a full key's prune condemns the packs
/// its data deduplicates against, provably at the same time: the agent is
/// still reading its input (its lease live) when the prune plans, so the
/// sweep waits for it. The agent reads the plan and the index with its
/// key, commits, and its backup restores; the next prune spares the packs
/// the agent's backup needs and sweeps the rest. (A regression test too:
/// with the whole first backup in one pack and one index file, the file
/// that indexed the spared pack again was that index file byte for byte,
/// so the sweep deleted it with the superseded one; the pack was left in no
/// index file and every later prune refused.)
#[test]
fn a_write_only_agent_backs_up_through_a_prune() {
    let env = Env::local();
    env.init(&["--avg-chunk-size", "16KiB"]);
    let data = random_bytes(6 << 20, 61);
    let mut child =
        spawn_piped(
            env.cmd()
                .args(["--json", "backup", "--stdin", "--stdin-name", "d"]),
        );
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&data)
        .expect("feed");
    let first = finish(child)["snapshot"].as_str().expect("id").to_string();
    env.backup(&[&crate::support::own_fixtures()]);

    env.add_write_only_key("agent password");
    let agent_cache = tempfile::TempDir::new().expect("tmp");
    let mut agent = spawn_piped(
        env.cmd()
            .env("CAIRN_PASSWORD", "agent password")
            .env("CAIRN_CACHE_DIR", agent_cache.path())
            .args(["--json", "backup", "--stdin", "--stdin-name", "d"]),
    );
    let mut agent_in = agent.stdin.take().expect("stdin");
    agent_in.write_all(&data[..3 << 20]).expect("feed");

    env.json(&["forget", &first]);
    let p = env.json(&["prune"]);
    assert!(
        p["plan"].is_string() && p["packs_unused"].as_u64() > Some(0),
        "{p}"
    );
    let why = p["deferred"][0]["why"].as_str().unwrap_or_default();
    assert!(
        why.contains("backups that started before it"),
        "the sweep did not wait for the agent: {p}"
    );

    agent_in.write_all(&data[3 << 20..]).expect("feed");
    drop(agent_in);
    let by_agent = finish(agent)["snapshot"].as_str().expect("id").to_string();

    let p = env.json(&["prune"]);
    let swept = p["swept"].as_array().expect("swept");
    assert!(!swept.is_empty(), "{p}");
    assert!(
        swept[0]["packs_spared"].as_u64() > Some(0),
        "kept what the agent's backup needs: {p}"
    );
    let fresh_cache = tempfile::TempDir::new().expect("tmp");
    assert!(
        dump(&env, fresh_cache.path(), &by_agent, "d") == data,
        "the agent's backup restores"
    );
    assert_eq!(env.json(&["check", "--read-data"])["clean"], true);
}
