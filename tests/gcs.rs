use crate::support::{Env, FakeGcs};

/// The GCS backend keeps the storage contract every backend keeps, against
/// fake-gcs-server behind `tests/gcs-xml-proxy.py` (see there for what the
/// proxy does: the emulator refuses the XML-API uploads object_store sends).
#[test]
fn gcs_backend_keeps_the_contract() {
    let gcs = FakeGcs::start(&["contract"]);
    let account = gcs.envs()[0].1.clone();
    let client = object_store::gcp::GoogleCloudStorageBuilder::new()
        .with_bucket_name("contract")
        .with_service_account_path(account)
        .with_http_connector(cairn_store::http::FailFastConnector)
        .build()
        .expect("a GCS client");
    let backend = cairn_store::ObjectStoreBackend::new(
        std::sync::Arc::new(client),
        object_store::path::Path::from("repo"),
        "gs://contract/repo",
    );
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(cairn_store::contract::check(&backend));
}

/// The same CLI round trips as on S3, through a `gs://` location.
#[test]
fn gcs_round_trip_own_fixtures() {
    crate::restore::own_fixtures_round_trip(&Env::gcs());
}

#[test]
fn gcs_restore_without_local_state() {
    crate::restore::restore_without_local_state(&Env::gcs());
}

#[test]
fn gcs_unchanged_file_adds_nothing() {
    crate::backup::unchanged_file_adds_nothing(&Env::gcs());
}

/// A bucket that does not exist is named as such.
#[test]
fn gcs_missing_bucket_is_named() {
    let env = Env::gcs();
    let out = env
        .cmd_at("gs://no-such-bucket/repo")
        .arg("snapshots")
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no-such-bucket") && err.contains("does not exist"),
        "{err}"
    );
}
