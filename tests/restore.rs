use std::path::Path;

use crate::support::{assert_same_tree, own_fixtures, shared_fixtures, Env};

/// Backs up the project's own Qdrant fixtures, restores them and compares.
pub fn own_fixtures_round_trip(env: &Env) {
    env.init(&[]);
    let b = env.backup(&[&own_fixtures()]);
    assert!(b["new_chunks"].as_u64().expect("count") > 0);
    let out = env.path("out");
    env.run(&["restore", "latest", out.to_str().expect("utf8")]);
    assert_same_tree(&own_fixtures(), &out.join("fixtures"));
    // The repository is encrypted (the default): every stored chunk
    // verifies, and another password opens nothing.
    let check = env.json(&["check", "--read-data"]);
    assert_eq!(check["clean"], true, "{check}");
    let out = env
        .cmd()
        .env("CAIRN_PASSWORD", "not the password")
        .args(["snapshots"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("wrong password"), "{err}");
}

/// Restores with an empty cache directory: only the repository location is needed.
pub fn restore_without_local_state(env: &Env) {
    env.init(&["--avg-chunk-size", "16KiB"]);
    env.backup(&[&own_fixtures()]);
    std::fs::remove_dir_all(env.cache.path()).expect("wipe cache");
    let out = env.path("fresh");
    env.run(&["restore", "latest", out.to_str().expect("utf8")]);
    assert_same_tree(&own_fixtures(), &out.join("fixtures"));
}

#[test]
fn round_trip_own_fixtures_local() {
    own_fixtures_round_trip(&Env::local());
}

/// `--no-sync` writes through the page cache without flushing: same bytes.
#[test]
fn restore_without_sync_gives_the_same_files() {
    let env = Env::local();
    env.init(&[]);
    env.backup(&[&own_fixtures()]);
    let out = env.path("out");
    env.run(&[
        "restore",
        "--no-sync",
        "latest",
        out.to_str().expect("utf8"),
    ]);
    assert_same_tree(&own_fixtures(), &out.join("fixtures"));
}

#[test]
fn restore_on_a_machine_with_no_local_state() {
    restore_without_local_state(&Env::local());
}

#[test]
fn repository_from_environment_variable() {
    let env = Env::local();
    let with_env = |args: &[&str]| {
        let mut c = std::process::Command::new(crate::support::cairn_bin());
        c.env("CAIRN_REPOSITORY", &env.repo)
            .env("CAIRN_CACHE_DIR", env.cache.path())
            .env("CAIRN_PASSWORD", crate::support::TEST_PASSWORD)
            .args(args);
        let out = c.output().expect("run");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let fx = own_fixtures();
    let out = env.path("out");
    with_env(&["init"]);
    with_env(&["backup", fx.to_str().expect("utf8")]);
    with_env(&["restore", "latest", out.to_str().expect("utf8")]);
    assert_same_tree(&fx, &out.join("fixtures"));
}

/// Every real Qdrant snapshot in ../shared/fixtures round-trips byte-identically,
/// and a second backup of the same tree stores nothing new.
#[test]
fn round_trip_every_shared_fixture() {
    let Some(shared) = shared_fixtures("round_trip_every_shared_fixture") else {
        return;
    };
    let env = Env::local();
    env.init(&[]);
    let first = env.backup(&[&shared]);
    let second = env.backup(&[&shared]);
    assert_eq!(
        second["new_chunks"], 0,
        "an unchanged tree must add nothing"
    );
    assert_eq!(first["bytes"], second["bytes"]);
    let out = env.path("out");
    env.run(&[
        "restore",
        second["snapshot"].as_str().expect("id"),
        out.to_str().expect("utf8"),
    ]);
    assert_same_tree(&shared, &out.join("fixtures"));
    let n = crate::support::files_under(&shared)
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "snapshot"))
        .count();
    assert!(
        n >= 20,
        "expected the whole fixture set, found {n} snapshot files"
    );
}

#[test]
fn path_filter_and_dump() {
    let env = Env::local();
    env.init(&[]);
    let fx = own_fixtures();
    env.backup(&[&fx]);
    let out = env.path("one");
    env.run(&[
        "restore",
        "latest",
        out.to_str().expect("utf8"),
        "--path",
        "fixtures/shard0-node0-day1.snapshot",
    ]);
    let restored = crate::support::files_under(&out);
    assert_eq!(
        restored,
        vec![Path::new("fixtures/shard0-node0-day1.snapshot").to_path_buf()]
    );
    let dumped = env
        .run(&["dump", "latest", "fixtures/shard0-node0-day0.snapshot"])
        .stdout;
    assert!(
        dumped == std::fs::read(fx.join("shard0-node0-day0.snapshot")).expect("read"),
        "dump differs"
    );
    let (code, err) = env.fail(&[
        "restore",
        "latest",
        out.to_str().expect("utf8"),
        "--path",
        "nope",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("no file in snapshot"), "{err}");
}

#[test]
fn snapshots_and_stats_report_json() {
    let env = Env::local();
    env.init(&[]);
    let fx = own_fixtures();
    let b = env.backup(&[&fx]);
    env.backup(&[&fx]);
    let list = env.json(&["snapshots"]);
    let list = list.as_array().expect("array");
    assert_eq!(list.len(), 2);
    assert_eq!(list[1]["new_bytes"], 0);
    let stats = env.json(&["stats"]);
    assert_eq!(stats["snapshots"], 2);
    let logical = stats["logical_bytes"].as_u64().expect("u64");
    assert_eq!(logical, 2 * b["bytes"].as_u64().expect("u64"));
    assert!(
        stats["dedup_ratio"].as_f64().expect("f64") >= 2.0,
        "{stats}"
    );
    // The table form names the columns.
    let table = String::from_utf8(env.run(&["snapshots"]).stdout).expect("utf8");
    assert!(
        table.contains("ID") && table.contains("2 snapshots"),
        "{table}"
    );
}

/// A restore reads whole runs of each pack, not chunk by chunk: the
/// request count of restoring the last day of the churn series is pinned
/// (a return to per-chunk reads multiplies it), its over-read is bounded,
/// and `report`'s estimate of the same restore is exactly what it did.
pub fn restore_requests_are_planned(
    env: &Env,
    expected_requests: u64,
    max_over_read_percent: u64,
    expected_first: (u64, u64),
) {
    let Some(shared) = shared_fixtures("restore_requests_are_planned") else {
        return;
    };
    // Unencrypted: the pinned request counts are those of the plain
    // layout (sealed blobs are 40 bytes longer each).
    env.init(&["--no-encryption"]);
    let churn = shared.join("qdrant-churn");
    let mut days: Vec<_> = std::fs::read_dir(&churn)
        .expect("churn series")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    days.sort();
    for day in &days {
        env.backup(&[day]);
    }
    let out = env.path("out");
    let r = env.json(&["restore", "latest", out.to_str().expect("utf8")]);
    let last = days.last().expect("days");
    assert_same_tree(last, &out.join(last.file_name().expect("name")));
    let n = |v: &serde_json::Value, k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k}: {v}"));
    let (requests, read, over, bytes) = (
        n(&r, "requests"),
        n(&r, "bytes_read"),
        n(&r, "over_read"),
        n(&r, "bytes"),
    );
    assert_eq!(requests, expected_requests, "{r}");
    assert!(
        over * 100 <= (read - over) * max_over_read_percent,
        "over-read above {max_over_read_percent} %: {r}"
    );
    // Day 5 is ~15 MB in a few thousand chunks (vector data in ~4 KiB
    // records), spread over the packs of six nights: per-chunk reads would
    // take thousands of requests.
    assert!(bytes > 10 << 20 && read / requests > 128 << 10, "{r}");
    let report = env.json(&["report"]);
    let est = &report["restore"];
    assert_eq!(
        n(est, "gets"),
        requests,
        "report estimate {est} vs restore {r}"
    );
    assert_eq!(
        n(est, "bytes"),
        read,
        "report estimate {est} vs restore {r}"
    );
    assert_eq!(
        n(est, "over_read"),
        over,
        "report estimate {est} vs restore {r}"
    );
    // The first night's snapshot is in the packs written that night: its
    // reads are as large as requests may be.
    let first = env.json(&["snapshots"]);
    let first = first[0]["id"].as_str().expect("id").to_string();
    let out0 = env.path("out0");
    let r0 = env.json(&["restore", &first, out0.to_str().expect("utf8")]);
    assert_eq!(n(&r0, "requests"), expected_first.0, "{r0}");
    assert!(
        n(&r0, "bytes_read") / n(&r0, "requests") >= expected_first.1,
        "{r0}"
    );
    // dump reads the same way.
    let file = std::fs::read_dir(last)
        .expect("day")
        .filter_map(|e| e.ok())
        .next()
        .expect("a snapshot file")
        .file_name();
    let dumped = env
        .run(&[
            "dump",
            "latest",
            &format!(
                "{}/{}",
                last.file_name().expect("name").to_string_lossy(),
                file.to_string_lossy()
            ),
        ])
        .stdout;
    assert!(
        dumped == std::fs::read(last.join(&file)).expect("read"),
        "dump differs"
    );
}

#[test]
fn restore_requests_are_planned_local() {
    // Local reads may bridge a quarter: the disk then reads in long runs.
    restore_requests_are_planned(&Env::local(), 15, 25, (6, 1 << 20));
}

/// `restore latest --to-qdrant` in a repository of file backups says there
/// is no cluster backup, and how to list what there is.
#[test]
fn latest_cluster_backup_missing_is_explained() {
    let env = Env::local();
    env.init(&[]);
    env.backup(&[&own_fixtures()]);
    let (_, err) = env.fail(&["restore", "latest", "--to-qdrant", "http://127.0.0.1:1"]);
    assert!(
        err.contains("no complete cluster backup") && err.contains("cairn snapshots"),
        "{err}"
    );
    assert!(!err.contains("Connection refused"), "{err}");
}
