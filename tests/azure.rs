use crate::support::{
    check_contract, object_store_suite, Azurite, Env, AZURITE_ACCOUNT, AZURITE_KEY,
};

/// The Azure backend keeps the storage contract every backend keeps,
/// against Azurite (Azure's own storage emulator).
#[test]
fn azure_backend_keeps_the_contract() {
    let azurite = Azurite::start();
    azurite.create_container("contract");
    let az = object_store::azure::MicrosoftAzureBuilder::new()
        .with_account(AZURITE_ACCOUNT)
        .with_access_key(AZURITE_KEY)
        .with_endpoint(format!("{}/{AZURITE_ACCOUNT}", azurite.endpoint))
        .with_allow_http(true)
        .with_container_name("contract")
        .with_http_connector(cairn_store::http::FailFastConnector)
        .build()
        .expect("an Azure client");
    check_contract(az, "az://contract/repo");
}

object_store_suite!(Env::azure(), "az");
