//! Repositories written by the previous release (tests/compat/README.md)
//! are read, backed up into, pruned and checked by this one, in both
//! format versions, and keep their format.

use std::path::Path;

use serde_json::Value;

use crate::support::{copy_tree, own_fixtures, project_dir, Env};

fn format_version(env: &Env) -> u64 {
    let config: Value = serde_json::from_slice(
        &std::fs::read(Path::new(&env.repo).join("config")).expect("config"),
    )
    .expect("config is JSON");
    config["version"].as_u64().expect("version")
}

/// Restores `id` and compares it with the fixture `name` it was made from.
fn restores_as(env: &Env, id: &str, name: &str) {
    let out = env.path(&format!("out-{id}"));
    env.run(&["restore", id, out.to_str().expect("utf8")]);
    let restored = out.join(name);
    assert_eq!(
        std::fs::read(&restored).unwrap_or_else(|e| panic!("{}: {e}", restored.display())),
        std::fs::read(own_fixtures().join(name)).expect("fixture"),
        "{name} from snapshot {id}"
    );
}

fn check_clean(env: &Env) {
    let report = env.json(&["check", "--read-data"]);
    assert_eq!(report["errors"], Value::Array(vec![]), "{report}");
    assert!(
        report["damaged"].as_object().expect("map").is_empty(),
        "{report}"
    );
}

fn previous_release_repository(version: u64) {
    let env = Env::local();
    copy_tree(
        &project_dir().join(format!("tests/compat/v{version}")),
        Path::new(&env.repo),
    );
    // Read: both snapshots, as they were recorded.
    let list = env.json(&["snapshots"]);
    let list = list.as_array().expect("list");
    assert_eq!(list.len(), 2, "{list:?}");
    for s in list {
        assert_eq!(s["host"], "compat-host", "{s}");
    }
    let day0 = list[0]["id"].as_str().expect("id").to_string();
    let day1 = list[1]["id"].as_str().expect("id").to_string();
    assert_eq!(
        list[0]["tags"],
        serde_json::json!(["compat"]),
        "{}",
        list[0]
    );
    restores_as(&env, &day0, "shard0-node0-day0.snapshot");
    restores_as(&env, &day1, "shard0-node0-day1.snapshot");
    check_clean(&env);

    // Backed up into: the new snapshot deduplicates against the old packs.
    let again = env.backup(&[&own_fixtures().join("shard0-node0-day1.snapshot")]);
    assert_eq!(again["new_chunks"], 0, "{again}");
    let other = env.backup(&[&own_fixtures().join("cluster-collection-node0-day0.snapshot")]);
    assert!(other["new_chunks"].as_u64().expect("count") > 0, "{other}");
    restores_as(
        &env,
        other["snapshot"].as_str().expect("id"),
        "cluster-collection-node0-day0.snapshot",
    );

    // Pruned: forget the old snapshots; what remains restores and checks.
    env.run(&["forget", &day0, &day1]);
    let pruned = env.json(&["prune", "--max-unused", "0%"]);
    assert!(
        pruned["bytes_to_delete"].as_u64().expect("bytes") > 0,
        "{pruned}"
    );
    check_clean(&env);
    restores_as(
        &env,
        again["snapshot"].as_str().expect("id"),
        "shard0-node0-day1.snapshot",
    );
    assert_eq!(format_version(&env), version, "the format is kept");
}

#[test]
fn previous_release_version_1_repository_is_read_backed_up_into_pruned_and_checked() {
    previous_release_repository(1);
}

#[test]
fn previous_release_version_2_repository_is_read_backed_up_into_pruned_and_checked() {
    previous_release_repository(2);
}
