//! `cairn config init` writes a config `cairn config check` accepts; a bad
//! config's problems come out with their lines, as text and as JSON.

use std::process::Command;

use serde_json::Value;

use crate::support::cairn_bin;

fn cairn(args: &[&str]) -> std::process::Output {
    Command::new(cairn_bin())
        .args(args)
        .env_remove("CAIRN_REPOSITORY")
        .output()
        .expect("cairn runs")
}

#[test]
fn init_writes_a_config_that_checks_and_never_overwrites() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("cairn.toml");
    let f = file.to_str().expect("utf8");
    let out = cairn(&[
        "--repo",
        "s3://backups/qdrant",
        "config",
        "init",
        "--qdrant",
        "http://qdrant-0:6333,http://qdrant-1:6333",
        "--out",
        f,
    ]);
    assert!(out.status.success(), "{out:?}");
    let text = std::fs::read_to_string(&file).expect("written");
    assert!(
        text.contains("[schedules.daily]") && text.contains("days = 7"),
        "{text}"
    );

    let out = cairn(&["--json", "config", "check", f]);
    assert!(out.status.success(), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["valid"], true);
    assert_eq!(v["repositories"], serde_json::json!(["main"]));
    assert_eq!(v["schedules"][0]["name"], "daily");
    assert_eq!(v["schedules"][0]["source"], "qdrant");
    assert_eq!(v["schedules"][0]["repository"], "main");
    assert_eq!(v["schedules"][0]["timezone"], "UTC");
    assert!(v["schedules"][0]["next_run"].is_string(), "{v}");
    assert_eq!(v["warnings"], serde_json::json!([]));

    // A second init does not overwrite it, and says how to.
    let out = cairn(&[
        "--repo",
        "/elsewhere",
        "config",
        "init",
        "--qdrant",
        "http://x:6333",
        "--out",
        f,
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--force"),
        "{out:?}"
    );
    assert_eq!(std::fs::read_to_string(&file).expect("kept"), text);

    // Without --repo it names what is missing.
    let out = cairn(&["config", "init", "--qdrant", "http://x:6333"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--repo"),
        "{out:?}"
    );
}

#[test]
fn check_names_every_problem_with_its_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "[repositories.main]\nlocation = \"s3://b/p\"\n\n[sources.prod]\nqdrant = \"http://q:6333\"\napi_key = \"hunter2\"\n\n[schedules.nightly]\nsource = \"prod\"\ncron = \"0 3 * * mon-fri\"\ntimezone = \"Europe/Atlantis\"\n",
    )
    .expect("write");
    let f = file.to_str().expect("utf8");
    let out = cairn(&["config", "check", f]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{f}:6: sources.prod.api_key")),
        "{err}"
    );
    assert!(
        err.contains(&format!("{f}:11: schedules.nightly.timezone")),
        "{err}"
    );
    assert!(err.contains("2 problem(s)"), "{err}");
    assert!(!err.contains("hunter2"), "a key is never echoed: {err}");

    let out = cairn(&["--json", "config", "check", f]);
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["valid"], false);
    let lines: Vec<u64> = v["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .map(|p| p["line"].as_u64().expect("line"))
        .collect();
    assert_eq!(lines, vec![6, 11]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("hunter2"));

    // A file that is not there is named.
    let out = cairn(&["config", "check", "/nonexistent/cairn.toml"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("/nonexistent/cairn.toml"),
        "{out:?}"
    );
}
