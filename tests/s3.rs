use crate::support::{assert_same_tree, shared_fixtures, Env};

#[test]
fn s3_round_trip_own_fixtures() {
    crate::restore::own_fixtures_round_trip(&Env::s3());
}

#[test]
fn s3_restore_without_local_state() {
    crate::restore::restore_without_local_state(&Env::s3());
}

#[test]
fn s3_unchanged_file_adds_nothing() {
    crate::backup::unchanged_file_adds_nothing(&Env::s3());
}

#[test]
fn s3_churn_series_with_multipart_packs() {
    let Some(shared) = shared_fixtures("s3_churn_series_with_multipart_packs") else {
        return;
    };
    let env = Env::s3();
    // Large packs and no compression, so the first pack (> 16 MiB) goes up in parts.
    env.init(&["--pack-size", "64MiB", "--compression-level", "0"]);
    let churn = shared.join("qdrant-churn");
    let first = env.backup(&[&churn]);
    assert!(
        first["new_stored_bytes"].as_u64().expect("u64") > 16 << 20,
        "{first}"
    );
    let again = env.backup(&[&churn.join("day5")]);
    assert_eq!(again["new_chunks"], 0);
    let out = env.path("out");
    env.run(&[
        "restore",
        first["snapshot"].as_str().expect("id"),
        out.to_str().expect("utf8"),
    ]);
    assert_same_tree(&churn, &out.join("qdrant-churn"));
}

#[test]
fn s3_restore_requests_are_planned() {
    crate::restore::restore_requests_are_planned(&Env::s3(), 75, 10, (2, 4 << 20));
}

/// The S3 backend keeps the storage contract every backend keeps (the local
/// and in-memory ones are held to it in cairn-store's own tests).
#[test]
fn s3_backend_keeps_the_contract() {
    let moto = crate::support::Moto::start();
    moto.create_bucket("contract");
    let s3 = object_store::aws::AmazonS3Builder::new()
        .with_bucket_name("contract")
        .with_endpoint(&moto.endpoint)
        .with_allow_http(true)
        .with_region("us-east-1")
        .with_access_key_id("test")
        .with_secret_access_key("test")
        .with_http_connector(cairn_store::http::FailFastConnector)
        .build()
        .expect("an S3 client");
    crate::support::check_contract(s3, "s3://contract/repo");
}

/// A bucket that does not exist is named as such, not as a missing
/// repository file.
#[test]
fn s3_missing_bucket_is_named() {
    crate::support::missing_bucket_is_named(&Env::s3(), "s3://no-such-bucket/repo");
}
