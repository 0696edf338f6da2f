//! S3 Object Lock against moto's implementation of it: every pack and
//! manifest is locked as written; a delete of a locked version is refused
//! by the store; forget and prune never send a delete for a locked object,
//! say what they wait for, and delete by version once the date is past;
//! `lock extend` lengthens the locks of what kept backups need; buckets
//! and repositories without Object Lock are refused.

use chrono::{DateTime, Timelike, Utc};

use crate::support::{assert_same_tree, random_bytes, Env};

/// A request to moto as someone holding the repository's credentials
/// (moto checks no signature, but answers anonymous reads of a locked
/// bucket with 403).
fn http(endpoint: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> String {
    let auth = "AWS4-HMAC-SHA256 Credential=test/20261203/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00";
    let mut all = vec![("Authorization", auth)];
    all.extend_from_slice(headers);
    crate::support::http(endpoint, method, path, &all, body)
}

/// Keys under `prefix` in `bucket`, from a plain ListObjectsV2.
fn list(endpoint: &str, bucket: &str, prefix: &str) -> Vec<String> {
    let resp = http(
        endpoint,
        "GET",
        &format!("/{bucket}?list-type=2&prefix={prefix}"),
        &[],
        "",
    );
    resp.split("<Key>")
        .skip(1)
        .filter_map(|s| s.split("</Key>").next())
        .map(str::to_string)
        .collect()
}

/// A header of an answer, by lowercase name.
fn header(resp: &str, name: &str) -> Option<String> {
    resp.split("\r\n\r\n").next()?.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim().eq_ignore_ascii_case(name)).then(|| v.trim().to_string())
    })
}

/// (mode, retain-until, version) of an object, from a plain HEAD.
fn retention(
    endpoint: &str,
    bucket: &str,
    key: &str,
) -> (Option<String>, Option<DateTime<Utc>>, String) {
    let resp = http(endpoint, "HEAD", &format!("/{bucket}/{key}"), &[], "");
    assert!(resp.starts_with("HTTP/1.1 200"), "HEAD {key}: {resp}");
    let until = header(&resp, "x-amz-object-lock-retain-until-date").map(|s| {
        DateTime::parse_from_rfc3339(&s)
            .expect("retain-until date")
            .with_timezone(&Utc)
    });
    (
        header(&resp, "x-amz-object-lock-mode"),
        until,
        header(&resp, "x-amz-version-id").expect("versioned"),
    )
}

/// What an administrator with s3:BypassGovernanceRetention can do: move a
/// governance lock to any date (here, to the past: the lock has run out).
fn expire(endpoint: &str, bucket: &str, key: &str) {
    let body = "<Retention xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Mode>GOVERNANCE</Mode><RetainUntilDate>2001-01-01T00:00:00Z</RetainUntilDate></Retention>";
    let resp = http(
        endpoint,
        "PUT",
        &format!("/{bucket}/{key}?retention"),
        &[("x-amz-bypass-governance-retention", "true")],
        body,
    );
    assert!(resp.starts_with("HTTP/1.1 200"), "expire {key}: {resp}");
}

#[test]
fn object_lock_keeps_backups_and_prune_waits_for_it() {
    let (env, endpoint) = Env::s3_locked();
    let bucket = "cairn-locked";

    // Refusals: a bucket without Object Lock, a local repository.
    let out = env
        .cmd_at("s3://cairn-test/repo")
        .args(["init", "--object-lock", "governance"])
        .args(crate::support::CHEAP_KDF)
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("cairn-test") && stderr.contains("does not have Object Lock enabled"),
        "{stderr}"
    );
    let local = Env::local();
    let out = local
        .cmd()
        .args(["init", "--object-lock", "compliance"])
        .args(crate::support::CHEAP_KDF)
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not an S3 repository"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    env.init(&["--object-lock", "governance", "--lock-days", "2"]);
    let src = env.path("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    std::fs::write(src.join("a.bin"), random_bytes(2 << 20, 51)).expect("write");
    std::fs::write(src.join("b.bin"), random_bytes(1 << 20, 53)).expect("write");
    let first = env.backup(&[&src])["snapshot"]
        .as_str()
        .expect("id")
        .to_string();
    let first_packs = list(&endpoint, bucket, "repo/packs/");
    std::fs::write(src.join("b.bin"), random_bytes(1 << 20, 55)).expect("write");
    let second = env.backup(&[&src])["snapshot"]
        .as_str()
        .expect("id")
        .to_string();

    // Every pack and manifest is locked, in governance mode, for ~2 days.
    let now = Utc::now();
    let packs = list(&endpoint, bucket, "repo/packs/");
    let manifests = list(&endpoint, bucket, "repo/snapshots/");
    assert!(packs.len() > first_packs.len(), "{packs:?}");
    assert_eq!(manifests.len(), 2);
    for key in packs.iter().chain(&manifests) {
        let (mode, until, _) = retention(&endpoint, bucket, key);
        assert_eq!(mode.as_deref(), Some("GOVERNANCE"), "{key}");
        let until = until.expect("locked");
        assert!(until > now + chrono::Duration::days(1), "{key}: {until}");
        assert!(until < now + chrono::Duration::days(3), "{key}: {until}");
    }

    // Someone holding the credentials cannot delete a locked version.
    let (_, _, version) = retention(&endpoint, bucket, &first_packs[0]);
    let resp = http(
        &endpoint,
        "DELETE",
        &format!("/{bucket}/{}?versionId={version}", first_packs[0]),
        &[],
        "",
    );
    assert!(resp.starts_with("HTTP/1.1 403"), "{resp}");

    // forget keeps a locked manifest and says until when.
    let v = env.json(&["forget", "--keep-last", "1"]);
    assert_eq!(v["removed"].as_array().expect("removed").len(), 0, "{v}");
    assert_eq!(v["locked"][0]["id"], first.as_str(), "{v}");
    assert_eq!(env.json(&["snapshots"]).as_array().expect("list").len(), 2);

    // Its manifest's lock runs out: forget removes it (by version), and the
    // prune finds packs only it needed, still locked, and leaves them.
    expire(&endpoint, bucket, &format!("repo/snapshots/{first}"));
    let v = env.json(&["forget", "--keep-last", "1", "--prune"]);
    assert_eq!(v["removed"][0], first.as_str(), "{v}");
    let prune = &v["prune"];
    assert!(prune["packs_locked"].as_u64().expect("n") >= 1, "{prune}");
    assert!(prune["locked_until"].is_string(), "{prune}");
    assert_eq!(
        list(&endpoint, bucket, "repo/packs/"),
        packs,
        "nothing locked was deleted"
    );
    let resp = http(
        &endpoint,
        "GET",
        &format!("/{bucket}?versions&prefix=repo/snapshots/{first}"),
        &[],
        "",
    );
    assert!(
        !resp.contains("<Version>"),
        "the manifest's version is gone: {resp}"
    );

    // Once the packs' locks run out, a prune deletes what nobody needs.
    for key in &packs {
        expire(&endpoint, bucket, key);
    }
    let v = env.json(&["prune"]);
    assert_eq!(v["packs_locked"], 0, "{v}");
    let deleted: u64 = v["swept"]
        .as_array()
        .expect("swept")
        .iter()
        .map(|r| r["packs_deleted"].as_u64().expect("n"))
        .sum();
    assert!(deleted >= 1, "{v}");
    let now_listed = list(&endpoint, bucket, "repo/packs/");
    let gone = packs.iter().filter(|p| !now_listed.contains(p)).count();
    assert_eq!(gone as u64, deleted, "deleted by version: {now_listed:?}");
    for p in packs.iter().filter(|p| !now_listed.contains(p)) {
        let resp = http(
            &endpoint,
            "GET",
            &format!("/{bucket}?versions&prefix={p}"),
            &[],
            "",
        );
        assert!(
            !resp.contains("<Version>") && !resp.contains("<DeleteMarker>"),
            "{p}: {resp}"
        );
    }
    let out = env.path("out");
    env.run(&["restore", "latest", out.to_str().expect("utf8")]);
    assert_same_tree(&src, &out.join("src"));

    // lock extend: from the policy (daily 7 → a week after the backup),
    // then to a date; a lock is never shortened.
    let v = env.json(&["lock", "extend", "--keep-daily", "7"]);
    assert!(v["extended"].as_u64().expect("n") >= 2, "{v}");
    let kept: DateTime<Utc> = v["snapshots"][0]["until"]
        .as_str()
        .expect("until")
        .parse()
        .expect("time");
    let manifest = format!("repo/snapshots/{second}");
    assert_eq!(
        retention(&endpoint, bucket, &manifest).1,
        Some(kept.with_nanosecond(0).expect("whole seconds"))
    );
    let v = env.json(&["lock", "extend", "--until", "2099-01-01T00:00:00Z"]);
    assert_eq!(v["extended"], v["objects"], "{v}");
    for key in list(&endpoint, bucket, "repo/packs/")
        .iter()
        .chain([&manifest])
    {
        let until = retention(&endpoint, bucket, key).1.expect("locked");
        assert_eq!(until.to_rfc3339(), "2099-01-01T00:00:00+00:00", "{key}");
    }
    let v = env.json(&["lock", "extend", "--until", "2030-01-01T00:00:00Z"]);
    assert_eq!(v["extended"], 0, "{v}");
    assert_eq!(env.json(&["check", "--read-data"])["clean"], true);
}
