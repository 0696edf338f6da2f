use crate::support::{check_contract, object_store_suite, Env, FakeGcs};

/// The GCS backend keeps the storage contract every backend keeps, against
/// fake-gcs-server behind `tests/gcs-xml-proxy.py` (see there for what the
/// proxy does: the emulator refuses the XML-API uploads object_store sends).
#[test]
fn gcs_backend_keeps_the_contract() {
    let gcs = FakeGcs::start(&["contract"]);
    let client = object_store::gcp::GoogleCloudStorageBuilder::new()
        .with_bucket_name("contract")
        .with_service_account_path(gcs.envs()[0].1.clone())
        .with_http_connector(cairn_store::http::FailFastConnector)
        .build()
        .expect("a GCS client");
    check_contract(client, "gs://contract/repo");
}

object_store_suite!(Env::gcs(), "gs");
