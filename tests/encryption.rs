//! Encrypted repositories: what is stored reveals no content, passwords and
//! keys, and the refusals an operator meets.

use std::path::Path;

use serde_json::Value;

use crate::support::{own_fixtures, random_bytes, Env, CHEAP_KDF, TEST_PASSWORD};

const REPOSITORY_EXIT: i32 = 3;

/// Every file under `dir`, read whole.
fn all_bytes(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    crate::support::files_under(dir)
        .into_iter()
        .map(|p| {
            let b = std::fs::read(dir.join(&p)).expect("read");
            (p, b)
        })
        .collect()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// A new repository is encrypted by default: no stored object holds a
/// plaintext fragment of the data, of its file names, or a plain BLAKE3
/// chunk id of it; it restores byte for byte and checks clean.
#[test]
fn stored_objects_reveal_no_content() {
    let env = Env::local();
    let init = env.json(&[
        "init",
        CHEAP_KDF[0],
        CHEAP_KDF[1],
        CHEAP_KDF[2],
        CHEAP_KDF[3],
    ]);
    assert_eq!(init["version"], 3, "{init}");
    assert!(init["encryption"].is_object(), "{init}");
    let src = env.path("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    let marker = b"CAIRN-PLAINTEXT-MARKER: the quick brown fox. ";
    // Small (one chunk, its plain id known) and large, compressible text.
    let small = marker.to_vec();
    std::fs::write(src.join("secret-name-small.txt"), &small).expect("write");
    let big: Vec<u8> = marker.iter().copied().cycle().take(3 << 20).collect();
    std::fs::write(src.join("secret-name-big.txt"), &big).expect("write");
    std::fs::write(src.join("noise.bin"), random_bytes(1 << 20, 5)).expect("write");
    env.backup(&[&src]);
    let plain_id = blake3::hash(&small);
    for (path, bytes) in all_bytes(Path::new(&env.repo)) {
        let name = path.display().to_string();
        assert!(
            !contains(&bytes, b"CAIRN-PLAINTEXT"),
            "{name} holds plaintext"
        );
        assert!(
            !contains(&bytes, b"secret-name"),
            "{name} holds a file name"
        );
        assert!(
            !contains(&bytes, plain_id.as_bytes()),
            "{name} holds a plain chunk id"
        );
        assert!(
            !contains(&bytes, plain_id.to_hex().as_bytes()),
            "{name} holds a plain chunk id in hex"
        );
    }
    let out = env.path("out");
    env.run(&["restore", "latest", out.to_str().expect("utf8")]);
    assert_eq!(
        std::fs::read(out.join("src/secret-name-big.txt")).expect("read"),
        big
    );
    assert_eq!(
        std::fs::read(out.join("src/secret-name-small.txt")).expect("read"),
        small
    );
    let dump = env.run(&["dump", "latest", "src/secret-name-small.txt"]);
    assert_eq!(dump.stdout, small);
    assert_eq!(env.json(&["check", "--read-data"])["clean"], true);
}

/// Without a password, with a wrong one, from a file or a command: each is
/// one clear error or works; the password never appears in any output,
/// even at debug level.
#[test]
fn passwords_come_from_the_environment_a_file_or_a_command_and_are_never_printed() {
    let env = Env::local();
    env.init(&[]);
    let fixtures = own_fixtures();
    env.backup(&[&fixtures]);

    let out = env
        .cmd()
        .env_remove("CAIRN_PASSWORD")
        .arg("snapshots")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(REPOSITORY_EXIT));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is encrypted") && err.contains("CAIRN_PASSWORD"),
        "{err}"
    );

    let out = env
        .cmd()
        .env("CAIRN_PASSWORD", "guess")
        .args(["--json", "snapshots"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(REPOSITORY_EXIT));
    let v: Value = serde_json::from_slice(&out.stdout).expect("json error");
    assert!(
        v["error"]
            .as_str()
            .expect("error")
            .contains("wrong password"),
        "{v}"
    );

    let file = env.path("pw");
    std::fs::write(&file, format!("{TEST_PASSWORD}\n")).expect("write");
    let out = env
        .cmd()
        .env_remove("CAIRN_PASSWORD")
        .args(["-vv", "--password-file"])
        .arg(&file)
        .args(["--json", "snapshots"])
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for stream in [&out.stdout, &out.stderr] {
        assert!(
            !contains(stream, TEST_PASSWORD.as_bytes()),
            "password printed"
        );
    }
    let out = env
        .cmd()
        .env_remove("CAIRN_PASSWORD")
        .args(["-vv", "--password-command"])
        .arg(format!("printf '%s\\n' '{TEST_PASSWORD}'"))
        .arg("snapshots")
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!contains(&out.stderr, TEST_PASSWORD.as_bytes()));
    let out = env
        .cmd()
        .args(["--password-command", "exit 7", "snapshots"])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("password command"));

    // init without any password refuses, saying how to give one or opt out.
    let other = Env::local();
    let out = other
        .cmd()
        .env_remove("CAIRN_PASSWORD")
        .arg("init")
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--no-encryption") && err.contains("CAIRN_PASSWORD"),
        "{err}"
    );
    assert!(!Path::new(&other.repo).join("config").exists());
}

/// `key add`, `list`, `passwd`, `remove`: each password opens the
/// repository until its key is removed; the key in use cannot be removed.
#[test]
fn keys_are_added_listed_changed_and_removed() {
    let env = Env::local();
    env.init(&[]);
    env.backup(&[&own_fixtures()]);
    let keys = env.json(&["key", "list"]);
    assert_eq!(keys.as_array().expect("list").len(), 1, "{keys}");
    let first = keys[0]["name"].as_str().expect("name").to_string();
    assert_eq!(keys[0]["current"], true);

    let add = |pw: &str, label: &str| -> Value {
        let out = env
            .cmd()
            .env("CAIRN_NEW_PASSWORD", pw)
            .args(["--json", "key", "add", "--label", label])
            .args(CHEAP_KDF)
            .output()
            .expect("runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("json")
    };
    let second = add("second password", "ops")["added"]
        .as_str()
        .expect("name")
        .to_string();
    let with = |pw: &str, args: &[&str]| {
        env.cmd()
            .env("CAIRN_PASSWORD", pw)
            .args(args)
            .output()
            .expect("runs")
    };
    assert!(with("second password", &["snapshots"]).status.success());
    let listed = env.json(&["key", "list"]);
    assert_eq!(listed.as_array().expect("list").len(), 2);
    assert!(listed.to_string().contains("\"ops\""));

    // The key in use is refused; removed with the other password.
    let out = with(TEST_PASSWORD, &["key", "remove", &first]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("opened the repository with"));
    let out = with("second password", &["key", "remove", &first[..8]]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        with(TEST_PASSWORD, &["snapshots"]).status.code(),
        Some(REPOSITORY_EXIT)
    );

    // passwd: the second key is replaced by a third password's.
    let out = env
        .cmd()
        .env("CAIRN_PASSWORD", "second password")
        .env("CAIRN_NEW_PASSWORD", "third password")
        .args(["--json", "key", "passwd"])
        .args(CHEAP_KDF)
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["removed"], second.as_str());
    assert_eq!(
        with("second password", &["snapshots"]).status.code(),
        Some(REPOSITORY_EXIT)
    );
    let out = with(
        "third password",
        &["restore", "latest", env.path("o").to_str().expect("utf8")],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    crate::support::assert_same_tree(&own_fixtures(), &env.path("o").join("fixtures"));
}

/// `--no-encryption` keeps the plain format (version 2): no password
/// needed, and key commands say the repository has no keys.
#[test]
fn an_unencrypted_repository_needs_no_password() {
    let env = Env::local();
    let init = env.json(&["init", "--no-encryption"]);
    assert_eq!(init["version"], 2, "{init}");
    assert!(init.get("encryption").is_none(), "{init}");
    let out = env
        .cmd()
        .env_remove("CAIRN_PASSWORD")
        .args(["--json", "backup"])
        .arg(own_fixtures())
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, err) = env.fail(&["key", "list"]);
    assert!(err.contains("not encrypted"), "{err}");
}

/// Tampering with an encrypted object is caught: a flipped byte in an
/// index file, a manifest or a pack fails authentication and is named.
#[test]
fn a_flipped_byte_in_any_sealed_object_is_named() {
    let env = Env::local();
    env.init(&[]);
    env.backup(&[&own_fixtures()]);
    let repo = Path::new(&env.repo);
    let snap = crate::support::files_under(&repo.join("snapshots"));
    let path = repo.join("snapshots").join(&snap[0]);
    let mut b = std::fs::read(&path).expect("read");
    let n = b.len() / 2;
    b[n] ^= 1;
    std::fs::write(&path, &b).expect("write");
    let out = env
        .cmd()
        .args(["restore", "latest", env.path("x").to_str().expect("utf8")])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("does not decrypt") || err.contains("snapshot"),
        "{err}"
    );
}
