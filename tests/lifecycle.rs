use serde_json::Value;

use crate::support::{random_bytes, Env};

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
