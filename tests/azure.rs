use crate::support::{Azurite, Env};

/// The Azure backend keeps the storage contract every backend keeps,
/// against Azurite (Azure's own storage emulator).
#[test]
fn azure_backend_keeps_the_contract() {
    let azurite = Azurite::start();
    azurite.create_container("contract");
    let az = object_store::azure::MicrosoftAzureBuilder::new()
        .with_account(crate::support::AZURITE_ACCOUNT)
        .with_access_key(crate::support::AZURITE_KEY)
        .with_endpoint(format!(
            "{}/{}",
            azurite.endpoint,
            crate::support::AZURITE_ACCOUNT
        ))
        .with_allow_http(true)
        .with_container_name("contract")
        .with_http_connector(cairn_store::http::FailFastConnector)
        .build()
        .expect("an Azure client");
    let backend = cairn_store::ObjectStoreBackend::new(
        std::sync::Arc::new(az),
        object_store::path::Path::from("repo"),
        "az://contract/repo",
    );
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(cairn_store::contract::check(&backend));
}

/// The same CLI round trips as on S3, through an `az://` location.
#[test]
fn azure_round_trip_own_fixtures() {
    crate::restore::own_fixtures_round_trip(&Env::azure());
}

#[test]
fn azure_restore_without_local_state() {
    crate::restore::restore_without_local_state(&Env::azure());
}

#[test]
fn azure_unchanged_file_adds_nothing() {
    crate::backup::unchanged_file_adds_nothing(&Env::azure());
}

/// A container that does not exist is named as such.
#[test]
fn azure_missing_container_is_named() {
    let env = Env::azure();
    let out = env
        .cmd_at("az://no-such-container/repo")
        .arg("snapshots")
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no-such-container") && err.contains("does not exist"),
        "{err}"
    );
}
