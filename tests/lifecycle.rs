use serde_json::Value;

use crate::support::{random_bytes, spawn_piped, Env};

fn ids(v: &Value) -> Vec<String> {
    v.as_array()
        .expect("list")
        .iter()
        .map(|s| s["id"].as_str().expect("id").to_string())
        .collect()
}

/// Five backups from each of two hosts (one tagged), then retention by
/// source: a dry run changes nothing; the real run keeps per group what the
/// policy says and the kept snapshots still restore.
#[test]
fn forget_applies_a_policy_per_source() {
    let env = Env::local();
    env.init(&[]);
    let f = env.path("data");
    let mut made: Vec<(String, String)> = Vec::new();
    for i in 0..5u64 {
        std::fs::write(&f, random_bytes(200_000, i)).expect("write");
        for host in ["node-a", "node-b"] {
            let mut args = vec!["backup", "--host", host];
            if i == 0 && host == "node-a" {
                args.extend(["--tag", "golden"]);
            }
            let p = f.to_str().expect("utf8");
            args.push(p);
            let b = env.json(&args);
            made.push((
                host.to_string(),
                b["snapshot"].as_str().expect("id").to_string(),
            ));
        }
    }
    let before = ids(&env.json(&["snapshots"]));
    assert_eq!(before.len(), 10);

    let dry = env.json(&[
        "forget",
        "--keep-last",
        "2",
        "--keep-tag",
        "golden",
        "--dry-run",
    ]);
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["groups"].as_array().expect("groups").len(), 2, "{dry}");
    assert_eq!(
        dry["removed"].as_array().expect("removed").len(),
        5,
        "{dry}"
    );
    assert_eq!(
        ids(&env.json(&["snapshots"])),
        before,
        "a dry run deletes nothing"
    );
    let tagged = &dry["groups"][0]["snapshots"]
        .as_array()
        .expect("items")
        .iter()
        .find(|s| s["id"] == made[0].1.as_str())
        .expect("tagged snapshot")
        .clone();
    assert_eq!(tagged["action"], "keep");
    assert_eq!(tagged["reasons"][0], "tag golden");

    let done = env.json(&["forget", "--keep-last", "2", "--keep-tag", "golden"]);
    assert_eq!(done["removed"], dry["removed"]);
    let after = ids(&env.json(&["snapshots"]));
    assert_eq!(after.len(), 5);
    let expected: Vec<&String> = made
        .iter()
        .enumerate()
        .filter(|(i, _)| *i == 0 || *i >= 6)
        .map(|(_, (_, id))| id)
        .collect();
    for id in &expected {
        assert!(after.contains(id), "{id} kept");
    }
    for id in &after {
        let out = env.path(&format!("out-{id}"));
        env.run(&["restore", id, out.to_str().expect("utf8")]);
    }
}

/// `--tag` limits a policy to the snapshots carrying the tag (a schedule's
/// own backups), whatever else the group holds.
#[test]
fn forget_with_a_tag_leaves_the_other_snapshots_alone() {
    let env = Env::local();
    env.init(&[]);
    let f = env.path("data");
    let p = f.to_str().expect("utf8").to_string();
    let mut tagged = Vec::new();
    let mut other = Vec::new();
    for i in 0..3u64 {
        std::fs::write(&f, random_bytes(50_000, 100 + i)).expect("write");
        let b = env.json(&["backup", "--tag", "schedule:daily", "--tag", "daily", &p]);
        tagged.push(b["snapshot"].as_str().expect("id").to_string());
        let b = env.json(&["backup", &p]);
        other.push(b["snapshot"].as_str().expect("id").to_string());
    }
    env.json(&["forget", "--tag", "schedule:daily", "--keep-last", "1"]);
    let mut left = ids(&env.json(&["snapshots"]));
    left.sort();
    let mut want: Vec<String> = other.iter().chain(tagged.last()).cloned().collect();
    want.sort();
    assert_eq!(
        left, want,
        "only the tagged snapshots were subject to the policy"
    );
    // A tag no snapshot carries: nothing to do, nothing removed.
    env.json(&["forget", "--tag", "weekly", "--keep-last", "1"]);
    assert_eq!(ids(&env.json(&["snapshots"])).len(), want.len());
}

#[test]
fn forget_by_id_and_refusals() {
    let env = Env::local();
    env.init(&[]);
    let f = env.path("data");
    std::fs::write(&f, random_bytes(100_000, 1)).expect("write");
    let a = env.backup(&[&f]);
    let b = env.backup(&[&f]);
    let a_id = a["snapshot"].as_str().expect("id");
    let prefix = &a_id[..8];
    let r = env.json(&["forget", prefix]);
    assert_eq!(r["removed"][0], a_id);
    assert_eq!(
        ids(&env.json(&["snapshots"])),
        vec![b["snapshot"].as_str().expect("id")]
    );

    let (code, err) = env.fail(&["forget"]);
    assert_eq!(code, 1);
    assert!(err.contains("--keep-"), "{err}");
    let (_, err) = env.fail(&["forget", "--keep-within", "7x"]);
    assert!(err.contains("unknown unit"), "{err}");
    let (_, err) = env.fail(&["forget", prefix]);
    assert!(err.contains("no snapshot matches"), "{err}");
}

/// A policy that would leave a source with no backup at all is refused,
/// naming the source and the flag that allows it; nothing is removed.
#[test]
fn a_policy_that_keeps_nothing_is_refused() {
    let env = Env::local();
    env.init(&[]);
    let f = env.path("data");
    std::fs::write(&f, random_bytes(50_000, 2)).expect("write");
    backup_stdin(&env, "other.bin", &random_bytes(10_000, 3));
    env.backup(&[&f]);
    env.backup(&[&f]);
    let before = ids(&env.json(&["snapshots"]));
    assert_eq!(before.len(), 3);
    for policy in [&["--keep-daily", "0"][..], &["--keep-last", "0"]] {
        let mut args = vec!["forget"];
        args.extend_from_slice(policy);
        let (code, err) = env.fail(&args);
        assert_eq!(code, 1, "{err}");
        assert!(
            err.contains("keeps no snapshot at all") && err.contains("--allow-empty"),
            "{err}"
        );
        assert_eq!(ids(&env.json(&["snapshots"])), before, "nothing removed");
    }
    // With the flag the policy does what it says.
    let r = env.json(&["forget", "--keep-last", "0", "--allow-empty"]);
    assert_eq!(r["removed"].as_array().expect("list").len(), 3, "{r}");
    assert!(ids(&env.json(&["snapshots"])).is_empty());
}

fn backup_stdin(env: &Env, name: &str, data: &[u8]) -> Value {
    let out = env.run_with_stdin(&["--json", "backup", "--stdin", "--stdin-name", name], data);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

/// `cairn dump` on a machine with no cache.
fn dump_fresh(env: &Env, id: &str, name: &str) -> Vec<u8> {
    let cache = tempfile::TempDir::new().expect("tmp");
    let out = env
        .cmd()
        .env("CAIRN_CACHE_DIR", cache.path())
        .args(["dump", id, name])
        .output()
        .expect("dump");
    assert!(
        out.status.success(),
        "dump {id}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn check_clean(env: &Env) {
    let out = env
        .cmd()
        .args(["--json", "check", "--read-data"])
        .output()
        .expect("check");
    let r: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(out.status.success() && r["clean"] == true, "check: {r}");
}

fn repo_bytes(env: &Env, dir: &str) -> u64 {
    crate::support::files_under(&std::path::Path::new(&env.repo).join(dir))
        .iter()
        .map(|f| {
            std::fs::metadata(std::path::Path::new(&env.repo).join(dir).join(f))
                .expect("meta")
                .len()
        })
        .sum()
}

/// A day's data: a shared base with a changed stretch and new bytes.
fn day(i: u64) -> Vec<u8> {
    let mut d = random_bytes(3 << 20, 1);
    let at = (i as usize * 300_000) % ((3 << 20) - 100_000);
    // random_bytes forces seeds odd: distinct odd seeds for distinct data.
    d[at..at + 100_000].copy_from_slice(&random_bytes(100_000, 1001 + 2 * i));
    d.extend(random_bytes(1 << 20, 5001 + 2 * i));
    d
}

#[test]
fn forget_with_prune_frees_space_and_keeps_what_is_kept() {
    let env = Env::local();
    env.init(&["--avg-chunk-size", "16KiB", "--pack-size", "1MiB"]);
    let mut last = Value::Null;
    for i in 0..4 {
        last = backup_stdin(&env, "data", &day(i));
    }
    let before = repo_bytes(&env, "packs");
    let r = env.json(&[
        "forget",
        "--keep-last",
        "1",
        "--prune",
        "--max-unused",
        "5%",
    ]);
    assert_eq!(r["removed"].as_array().expect("removed").len(), 3);
    let pruned = &r["prune"];
    assert!(
        pruned["swept"][0]["packs_deleted"].as_u64().expect("n") > 0,
        "{r}"
    );
    let after = repo_bytes(&env, "packs");
    // Three days of 1 MiB new data (and their changed stretches) go.
    assert!(after + (3 << 20) < before, "{before} -> {after}");
    assert!(dump_fresh(&env, last["snapshot"].as_str().expect("id"), "data") == day(3));
    check_clean(&env);
    let again = env.json(&["prune"]);
    assert_eq!(again["plan"], Value::Null, "nothing left to prune: {again}");
    assert!(
        std::fs::read_dir(std::path::Path::new(&env.repo).join("gc"))
            .expect("gc")
            .next()
            .is_none()
    );
}

/// A backup that started before a prune's plan is waited for, and the packs
/// it deduplicated against (condemned by the plan) are spared, re-indexed.
#[test]
fn prune_waits_for_running_backups_and_spares_what_they_used() {
    use std::io::Write;
    let env = Env::local();
    env.init(&["--avg-chunk-size", "16KiB", "--pack-size", "1MiB"]);
    let data = day(0);
    let first = backup_stdin(&env, "d", &data);
    env.json(&["forget", first["snapshot"].as_str().expect("id")]);
    // A backup of the same data starts, and reuses the now unneeded packs.
    let mut child =
        spawn_piped(
            env.cmd()
                .args(["--json", "backup", "--stdin", "--stdin-name", "d"]),
        );
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(&data[..2 << 20]).expect("feed");
    let p = env.json(&["prune"]);
    assert!(p["plan"].is_string(), "{p}");
    let why = p["deferred"][0]["why"].as_str().unwrap_or_default();
    assert!(why.contains("backups that started before it"), "{p}");
    assert!(p["swept"].as_array().expect("swept").is_empty());
    stdin.write_all(&data[2 << 20..]).expect("feed");
    drop(stdin);
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let second: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(second["new_chunks"], 0, "it reused the condemned packs");
    let p = env.json(&["prune"]);
    assert!(
        p["swept"][0]["packs_spared"].as_u64().expect("n") > 0,
        "{p}"
    );
    assert_eq!(p["swept"][0]["packs_deleted"], 0, "{p}");
    assert!(dump_fresh(&env, second["snapshot"].as_str().expect("id"), "d") == data);
    check_clean(&env);
}

/// A backup that starts while a plan waits never reuses a condemned pack:
/// it stores the data again, and the sweep then deletes the old packs.
#[test]
fn backups_never_reuse_condemned_packs() {
    let env = Env::local();
    env.init(&["--avg-chunk-size", "16KiB", "--pack-size", "1MiB"]);
    let data = day(1);
    let first = backup_stdin(&env, "d", &data);
    env.json(&["forget", first["snapshot"].as_str().expect("id")]);
    let p = env.json(&["prune", "--grace", "1h"]);
    assert!(
        p["deferred"][0]["why"]
            .as_str()
            .unwrap_or_default()
            .contains("grace"),
        "{p}"
    );
    let second = backup_stdin(&env, "d", &data);
    assert_eq!(
        second["new_chunks"], first["new_chunks"],
        "stored again: {second}"
    );
    let p = env.json(&["prune"]);
    assert!(
        p["swept"][0]["packs_deleted"].as_u64().expect("n") > 0,
        "{p}"
    );
    assert_eq!(p["swept"][0]["packs_spared"], 0, "{p}");
    assert!(dump_fresh(&env, second["snapshot"].as_str().expect("id"), "d") == data);
    check_clean(&env);
}

/// Rounds of real concurrent backups (two hosts, separate caches) while
/// `forget --prune` runs; every backup succeeds, and at the end every kept
/// snapshot restores byte-identically and check --read-data is clean.
#[test]
fn prunes_while_backups_run_lose_nothing() {
    use std::io::Write;
    let env = Env::local();
    env.init(&["--avg-chunk-size", "16KiB", "--pack-size", "1MiB"]);
    let caches: Vec<tempfile::TempDir> = (0..2)
        .map(|_| tempfile::TempDir::new().expect("tmp"))
        .collect();
    let mut made: Vec<(String, Vec<u8>)> = Vec::new();
    for round in 0..6u64 {
        let inputs: Vec<Vec<u8>> = (0..2).map(|h| day(round * 2 + h)).collect();
        let mut children = Vec::new();
        for (h, data) in inputs.iter().enumerate() {
            let mut c = spawn_piped(env.cmd().env("CAIRN_CACHE_DIR", caches[h].path()).args([
                "--json",
                "backup",
                "--host",
                &format!("host{h}"),
                "--stdin",
                "--stdin-name",
                "d",
            ]));
            let mut stdin = c.stdin.take().expect("stdin");
            stdin
                .write_all(&data[..(1 + round as usize % 3) << 20])
                .expect("feed");
            children.push((c, stdin));
        }
        // The prune runs while both backups are mid-way.
        let p = env.json(&[
            "forget",
            "--keep-last",
            "3",
            "--group-by",
            "none",
            "--prune",
            "--max-unused",
            "0%",
        ]);
        assert!(p["prune"].is_object(), "{p}");
        for ((c, mut stdin), data) in children.into_iter().zip(&inputs) {
            let from = (1 + round as usize % 3) << 20;
            stdin.write_all(&data[from..]).expect("feed");
            drop(stdin);
            let out = c.wait_with_output().expect("wait");
            assert!(
                out.status.success(),
                "round {round}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let v: Value = serde_json::from_slice(&out.stdout).expect("json");
            made.push((
                v["snapshot"].as_str().expect("id").to_string(),
                data.clone(),
            ));
        }
    }
    env.json(&["prune", "--max-unused", "0%"]);
    let kept = ids(&env.json(&["snapshots"]));
    assert!(kept.len() >= 3, "{kept:?}");
    for id in &kept {
        let (_, data) = made
            .iter()
            .find(|(m, _)| m == id)
            .expect("a snapshot we made");
        assert!(dump_fresh(&env, id, "d") == *data, "{id} restores");
    }
    check_clean(&env);
}

/// Prunes killed (SIGKILL) at chosen steps — after their second write,
/// their first new index file or plan, and after deleting an index file,
/// packs or the plan —
/// each with fresh garbage to collect: every kept snapshot restores after
/// each kill, and a final prune leaves a repository that checks clean. The
/// kill points are crash points (`CAIRN_CRASH_AFTER`, the process kills
/// itself right after that request lands), so every round is stopped
/// exactly there, on any machine.
#[test]
fn prunes_killed_at_each_step_lose_nothing() {
    use std::os::unix::process::ExitStatusExt;
    let env = Env::local();
    env.init(&["--avg-chunk-size", "16KiB", "--pack-size", "1MiB"]);
    let mut made: Vec<(String, Vec<u8>)> = Vec::new();
    let points = [
        "any:2",
        "put:index/:1",
        "put:gc/:1",
        "delete:index/:1",
        "delete:packs/:1",
        "delete:packs/:2",
        "delete:packs/:3",
        "delete:gc/:1",
    ];
    let mut kills = Vec::new();
    for round in 0..10u64 {
        for i in 0..2 {
            let data = day(round * 2 + i);
            let id = backup_stdin(&env, "d", &data)["snapshot"]
                .as_str()
                .expect("id")
                .to_string();
            made.push((id, data));
        }
        env.json(&["forget", "--keep-last", "2"]);
        let kept = ids(&env.json(&["snapshots"]));
        let point = round.checked_sub(2).map(|r| points[r as usize]);
        let mut cmd = env.cmd();
        cmd.env("CAIRN_LEASE_SECONDS", "1")
            .args(["prune", "--max-unused", "0%"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        if let Some(p) = point {
            cmd.env("CAIRN_CRASH_AFTER", p);
        }
        let out = cmd.output().expect("prune");
        match point {
            None => assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            ),
            Some(p) => kills.push((p, out.status.signal() == Some(libc::SIGKILL))),
        }
        for id in &kept {
            let (_, data) = made.iter().find(|(m, _)| m == id).expect("made");
            assert!(
                dump_fresh(&env, id, "d") == *data,
                "round {round} ({point:?}): {id}"
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(1100)); // the prune lease lapses
    }
    eprintln!("kills (crash point, prune was killed there): {kills:?}");
    assert!(
        kills.iter().all(|(_, killed)| *killed),
        "a prune finished before its crash point: {kills:?}"
    );
    let out = env
        .cmd()
        .env("CAIRN_LEASE_SECONDS", "1")
        .args(["--json", "prune", "--max-unused", "0%"])
        .output()
        .expect("prune");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    check_clean(&env);
    for id in ids(&env.json(&["snapshots"])) {
        let (_, data) = made.iter().find(|(m, _)| *m == id).expect("made");
        assert!(dump_fresh(&env, &id, "d") == *data);
    }
}
