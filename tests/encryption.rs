//! Encrypted repositories: what is stored reveals no content, passwords and
//! keys, and the refusals an operator meets.

use std::path::Path;

use serde_json::Value;

use crate::support::{copy_tree, fresh, own_fixtures, random_bytes, Env, CHEAP_KDF, TEST_PASSWORD};

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

/// Asserts that a command succeeded, showing its stderr when not.
fn succeeded(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// A new repository is encrypted by default (AES-256-GCM), or with
/// XChaCha20-Poly1305 when asked: no stored object holds a plaintext
/// fragment of the data, of its file names, or a plain BLAKE3 chunk id of
/// it; it restores byte for byte and checks clean.
#[test]
fn stored_objects_reveal_no_content() {
    stored_objects_reveal_no_content_with(&[], "aes-256-gcm");
    stored_objects_reveal_no_content_with(
        &["--cipher", "xchacha20-poly1305"],
        "xchacha20-poly1305",
    );
}

fn stored_objects_reveal_no_content_with(cipher_args: &[&str], cipher: &str) {
    let env = Env::local();
    let mut args = vec!["init"];
    args.extend_from_slice(&CHEAP_KDF);
    args.extend_from_slice(cipher_args);
    let init = env.json(&args);
    assert_eq!(init["version"], 3, "{init}");
    assert_eq!(init["encryption"]["cipher"], cipher, "{init}");
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
    succeeded(&out);
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
    succeeded(&out);
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
        succeeded(&out);
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
    succeeded(&out);
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
    succeeded(&out);
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
    succeeded(&out);
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
    succeeded(&out);
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

/// The corruption matrix: in an encrypted repository holding backups A and
/// B (no data in common), each kind of object A alone needs (a pack, an
/// index file, its manifest) is flipped, truncated or deleted (not the
/// manifest: a deleted one is a forgotten backup to any reader). Every time,
/// `check --read-data` fails and names the object (a deleted index file:
/// the pack it indexed); A's restore either fails
/// naming it or (a damaged index file: the packs' trailers stand in)
/// restores byte-identically — never different bytes; B restores intact.
#[test]
fn corruption_matrix_is_detected_and_named() {
    let env = Env::local();
    env.init(&["--avg-chunk-size", "16KiB"]);
    let src = env.path("in");
    std::fs::create_dir_all(&src).expect("mkdir");
    let (data_a, data_b) = (random_bytes(1 << 20, 11), random_bytes(1 << 20, 12));
    std::fs::write(src.join("a"), &data_a).expect("write");
    std::fs::write(src.join("b"), &data_b).expect("write");
    let repo = Path::new(&env.repo).to_path_buf();
    let a = env.backup(&[&src.join("a")])["snapshot"]
        .as_str()
        .expect("id")
        .to_string();
    let after_a: std::collections::BTreeSet<_> =
        crate::support::files_under(&repo).into_iter().collect();
    let b = env.backup(&[&src.join("b")])["snapshot"]
        .as_str()
        .expect("id")
        .to_string();
    let of_a = |dir: &str| -> std::path::PathBuf {
        after_a
            .iter()
            .find(|p| p.starts_with(dir))
            .unwrap_or_else(|| panic!("no {dir} object of A"))
            .clone()
    };
    let targets = [
        of_a("packs"),
        of_a("index"),
        Path::new("snapshots").join(&a),
    ];
    let pristine = env.path("pristine");
    copy_tree(&repo, &pristine);
    let mut rows = Vec::new();
    for target in &targets {
        // A deleted manifest cannot be told from a forgotten backup: only
        // immutable storage guards against it.
        let damages: &[&str] = if target.starts_with("snapshots") {
            &["flip", "truncate"]
        } else {
            &["flip", "truncate", "delete"]
        };
        for &damage in damages {
            std::fs::remove_dir_all(&repo).expect("rm");
            copy_tree(&pristine, &repo);
            let path = repo.join(target);
            let mut bytes = std::fs::read(&path).expect("read");
            match damage {
                "flip" => {
                    let n = bytes.len() / 2;
                    bytes[n] ^= 0x40;
                    std::fs::write(&path, &bytes).expect("write");
                }
                "truncate" => std::fs::write(&path, &bytes[..bytes.len() / 2]).expect("write"),
                _ => std::fs::remove_file(&path).expect("rm"),
            }
            // A deleted index file leaves nothing to name but what it
            // indexed: check names A's pack as in no index file.
            let named = if damage == "delete" && target.starts_with("index") {
                of_a("packs")
            } else {
                target.clone()
            };
            let name = named
                .file_name()
                .expect("name")
                .to_string_lossy()
                .to_string();
            let case = format!("{damage} {}", target.display());
            // A machine with no local state, as after a disaster.
            let check = fresh(&env, &["--json", "check", "--read-data"]);
            let report = format!(
                "{}{}",
                String::from_utf8_lossy(&check.stdout),
                String::from_utf8_lossy(&check.stderr)
            );
            assert_eq!(
                check.status.code(),
                Some(4),
                "{case}: check passed: {report}"
            );
            assert!(
                report.contains(&name[..16]),
                "{case}: check does not name it: {report}"
            );
            let out_a = env.path(&format!("out-a-{damage}-{}", rows.len()));
            let r = fresh(&env, &["restore", &a, out_a.to_str().expect("utf8")]);
            let restored = if r.status.success() {
                let got = std::fs::read(out_a.join("a")).expect("restored");
                assert!(got == data_a, "{case}: A restored different bytes");
                "restored intact"
            } else {
                let err = String::from_utf8_lossy(&r.stderr);
                assert!(
                    err.contains(&name[..8]) || err.contains(&a[..8]),
                    "{case}: the restore's error names neither: {err}"
                );
                "refused, naming it"
            };
            let out_b = env.path(&format!("out-b-{damage}-{}", rows.len()));
            let r = fresh(&env, &["restore", &b, out_b.to_str().expect("utf8")]);
            assert!(
                r.status.success(),
                "{case}: B: {}",
                String::from_utf8_lossy(&r.stderr)
            );
            assert!(
                std::fs::read(out_b.join("b")).expect("b") == data_b,
                "{case}: B differs"
            );
            rows.push(format!(
                "{case}: check exit 4 naming it; A {restored}; B intact"
            ));
        }
    }
    eprintln!("{}", rows.join("\n"));
    assert_eq!(rows.len(), 8);
}

/// With no password given and a terminal on standard input, cairn asks for
/// it there (a pseudo-terminal from `script`): the right one opens the
/// repository, a wrong one is the usual error.
#[test]
fn a_terminal_is_asked_for_the_password() {
    let env = Env::local();
    env.init(&[]);
    let id = env.backup(&[&own_fixtures()])["snapshot"]
        .as_str()
        .expect("id")
        .to_string();
    let on_terminal = |typed: &str| {
        let cmd = format!(
            "'{}' --repo '{}' --json snapshots",
            crate::support::cairn_bin(),
            env.repo
        );
        let mut child = std::process::Command::new("script")
            .args(["-qec", &cmd, "/dev/null"])
            .env_remove("CAIRN_PASSWORD")
            .env("CAIRN_CACHE_DIR", env.cache.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("script (util-linux) runs");
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().expect("stdin");
            stdin
                .write_all(format!("{typed}\n").as_bytes())
                .expect("type");
        }
        child.wait_with_output().expect("wait")
    };
    let out = on_terminal(TEST_PASSWORD);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    assert!(text.contains("password for"), "no prompt: {text}");
    assert!(text.contains(&id), "{text}");
    let out = on_terminal("not it");
    assert_eq!(out.status.code(), Some(REPOSITORY_EXIT));
    assert!(String::from_utf8_lossy(&out.stdout).contains("wrong password"));
}

/// A write-only key (a backup agent's): it backs up from a machine with no
/// local state and deduplicates against everything the repository holds,
/// but reads no backup. Every reading command, key management and the
/// daemon's schedules are refused, naming the key as write-only (exit 3),
/// and nothing it can reach opens a manifest or a blob. A full key lists,
/// restores byte for byte, checks and prunes what the agent stored.
#[test]
fn a_write_only_key_backs_up_but_reads_nothing() {
    let env = Env::local();
    env.init(&[]);
    let src = env.path("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    std::fs::write(src.join("a.bin"), random_bytes(3 << 20, 41)).expect("write");
    std::fs::write(src.join("b.bin"), random_bytes(1 << 20, 42)).expect("write");
    env.backup(&[&src]);

    let out = env
        .cmd()
        .env("CAIRN_NEW_PASSWORD", "agent password")
        .args(["--json", "key", "add", "--write-only", "--label", "agent"])
        .args(CHEAP_KDF)
        .output()
        .expect("runs");
    succeeded(&out);
    let added: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(added["access"], "write-only", "{added}");
    let listed = env.json(&["key", "list"]);
    assert!(
        listed
            .as_array()
            .expect("list")
            .iter()
            .any(|k| k["access"] == "write-only" && k["label"] == "agent"),
        "{listed}"
    );

    // The agent, with a cache of its own: the same data adds nothing (it
    // read the index the full key wrote), new data is stored.
    let agent = |args: &[&str]| {
        let cache = tempfile::TempDir::new().expect("tmp");
        env.cmd()
            .env("CAIRN_PASSWORD", "agent password")
            .env("CAIRN_CACHE_DIR", cache.path())
            .args(args)
            .output()
            .expect("runs")
    };
    let src_arg = src.to_str().expect("utf8");
    let out = agent(&["--json", "backup", src_arg]);
    succeeded(&out);
    let again: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(again["new_chunks"], 0, "{again}");
    let extra = random_bytes(2 << 20, 47);
    std::fs::write(src.join("c.bin"), &extra).expect("write");
    let out = agent(&["--json", "backup", src_arg]);
    succeeded(&out);
    let grown: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(
        grown["new_bytes"].as_u64().expect("u64") >= 2 << 20,
        "{grown}"
    );

    // Everything that reads backups or manages keys is refused by name.
    let dest = env.path("by-agent");
    let dest = dest.to_str().expect("utf8");
    for args in [
        vec!["snapshots"],
        vec!["restore", "latest", dest],
        vec!["dump", "latest", "c.bin"],
        vec!["check"],
        vec!["check", "--read-data"],
        vec!["forget", "--keep-last", "1"],
        vec!["prune"],
        vec!["report"],
        vec!["stats"],
        vec!["repair", "index"],
        vec!["key", "remove", "0"],
    ] {
        let out = agent(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(REPOSITORY_EXIT),
            "{args:?}: {stderr}"
        );
        assert!(stderr.contains("write-only"), "{args:?}: {stderr}");
    }
    let out = {
        let cache = tempfile::TempDir::new().expect("tmp");
        env.cmd()
            .env("CAIRN_PASSWORD", "agent password")
            .env("CAIRN_CACHE_DIR", cache.path())
            .env("CAIRN_NEW_PASSWORD", "another")
            .args(["key", "add"])
            .args(CHEAP_KDF)
            .output()
            .expect("runs")
    };
    assert_eq!(out.status.code(), Some(REPOSITORY_EXIT));
    assert!(String::from_utf8_lossy(&out.stderr).contains("write-only"));
    assert!(!Path::new(dest).exists(), "nothing was restored");

    // A schedule reads run history and applies retention: refused too,
    // before anything is backed up.
    let config = env.path("cairn.toml");
    std::fs::write(
        &config,
        format!(
            "[repositories.main]\nlocation = {:?}\n\n[sources.files]\npaths = [{:?}]\n\n[schedules.nightly]\nsource = \"files\"\ncron = \"@daily\"\n",
            env.repo, src
        ),
    )
    .expect("config");
    let before = env.json(&["snapshots"]).as_array().expect("list").len();
    let out = agent(&[
        "backup",
        "--schedule",
        "nightly",
        "--config",
        config.to_str().expect("utf8"),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(REPOSITORY_EXIT), "{stderr}");
    assert!(
        stderr.contains("write-only") && stderr.contains("run schedules"),
        "{stderr}"
    );
    assert_eq!(
        env.json(&["snapshots"]).as_array().expect("list").len(),
        before
    );

    // The full key sees three backups and restores the agent's last one.
    let snaps = env.json(&["snapshots"]);
    assert_eq!(snaps.as_array().expect("list").len(), 3, "{snaps}");
    env.run(&["restore", "latest", dest]);
    crate::support::assert_same_tree(&src, &Path::new(dest).join("src"));
    let check = env.json(&["check", "--read-data"]);
    assert_eq!(check["clean"], true, "{check}");
    env.run(&["forget", "--keep-last", "1", "--prune"]);
    let out = fresh(
        &env,
        &[
            "restore",
            "latest",
            env.path("after-prune").to_str().expect("utf8"),
        ],
    );
    succeeded(&out);
    crate::support::assert_same_tree(&src, &env.path("after-prune").join("src"));
}
