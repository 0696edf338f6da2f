//! What storage costs: price tables per storage class and the billing
//! arithmetic object stores use.
//!
//! # Units
//! Providers bill storage per "GB-month" and egress per "GB" where a GB is
//! 2^30 bytes; so does this crate ([`GIB`]). A month is 30 days. Requests are
//! priced per 1,000. Amounts are US dollars.
//!
//! # Billing rules modelled
//! - **Minimum billable object size**: an object smaller than the class's
//!   minimum is billed as if it were that size (S3 Standard-IA and Glacier
//!   Instant Retrieval: 128 KiB).
//! - **Minimum storage duration**: an object deleted before it has been
//!   stored that many days is billed for the remaining days.
//! - **Requests**: PUT-class (PUT, POST, COPY, LIST; each multipart part) and
//!   GET-class (GET, HEAD) per 1,000.
//! - **Reading data back**: egress to the internet per GB, plus a retrieval
//!   fee per GB for infrequent-access classes.
//!
//! The built-in prices are public list prices for one region each, as
//! published around the date in [`StorageClass::as_of`] and not checked
//! against the providers' live pages; prices change and differ by region,
//! volume tier and contract. A TOML file overrides any of them and adds
//! classes ([`PriceTable::with_overrides`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Bytes in a billed GB.
pub const GIB: f64 = 1_073_741_824.0;

/// Days in a billed month.
pub const MONTH_DAYS: f64 = 30.0;

/// Prices of one storage class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct StorageClass {
    /// Who sells it (`aws`, `gcp`, `azure`, or anything).
    pub provider: String,
    /// Its name ("S3 Standard").
    pub name: String,
    /// The region the prices are for.
    pub region: String,
    /// When the prices were published (YYYY-MM), as far as known.
    pub as_of: String,
    /// Storage, per GB-month.
    pub storage_gb_month: f64,
    /// PUT-class requests, per 1,000.
    pub put_per_1000: f64,
    /// GET-class requests, per 1,000.
    pub get_per_1000: f64,
    /// Data read out to the internet, per GB.
    pub egress_per_gb: f64,
    /// Retrieval fee, per GB read.
    #[serde(default)]
    pub retrieval_per_gb: f64,
    /// Minimum storage duration, days.
    #[serde(default)]
    pub min_storage_days: u32,
    /// Minimum billable object size, bytes.
    #[serde(default)]
    pub min_object_bytes: u64,
}

/// A partial [`StorageClass`], as an override file gives it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct ClassOverride {
    provider: Option<String>,
    name: Option<String>,
    region: Option<String>,
    as_of: Option<String>,
    storage_gb_month: Option<f64>,
    put_per_1000: Option<f64>,
    get_per_1000: Option<f64>,
    egress_per_gb: Option<f64>,
    retrieval_per_gb: Option<f64>,
    min_storage_days: Option<u32>,
    min_object_bytes: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OverrideFile {
    #[serde(default)]
    classes: BTreeMap<String, ClassOverride>,
}

/// An override file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Not valid TOML, or unknown keys.
    #[error("price file: {0}")]
    Parse(String),
    /// A new class lacks a price.
    #[error("price file: class {class} is new, so it needs {field}")]
    Missing {
        /// The class id.
        class: String,
        /// The missing field.
        field: &'static str,
    },
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Storage classes by id (`s3-standard`, `gcs-nearline`, …).
#[derive(Debug, Clone, PartialEq)]
pub struct PriceTable {
    /// The classes.
    pub classes: BTreeMap<String, StorageClass>,
}

#[allow(clippy::too_many_arguments)]
fn class(
    provider: &str,
    name: &str,
    region: &str,
    storage: f64,
    put: f64,
    get: f64,
    egress: f64,
    retrieval: f64,
    min_days: u32,
    min_bytes: u64,
) -> StorageClass {
    StorageClass {
        provider: provider.into(),
        name: name.into(),
        region: region.into(),
        as_of: "2025-01".into(),
        storage_gb_month: storage,
        put_per_1000: put,
        get_per_1000: get,
        egress_per_gb: egress,
        retrieval_per_gb: retrieval,
        min_storage_days: min_days,
        min_object_bytes: min_bytes,
    }
}

impl PriceTable {
    /// The built-in list prices (first volume tier, one region each, as
    /// published around 2025-01; see the crate docs).
    #[must_use]
    pub fn builtin() -> Self {
        const KIB128: u64 = 128 * 1024;
        let us_east = "us-east-1";
        let us_central = "us-central1";
        let azure_east = "East US, LRS";
        let classes = [
            (
                "s3-standard",
                class(
                    "aws",
                    "S3 Standard",
                    us_east,
                    0.023,
                    0.005,
                    0.0004,
                    0.09,
                    0.0,
                    0,
                    0,
                ),
            ),
            (
                "s3-standard-ia",
                class(
                    "aws",
                    "S3 Standard-IA",
                    us_east,
                    0.0125,
                    0.01,
                    0.001,
                    0.09,
                    0.01,
                    30,
                    KIB128,
                ),
            ),
            (
                "s3-glacier-ir",
                class(
                    "aws",
                    "S3 Glacier Instant Retrieval",
                    us_east,
                    0.004,
                    0.02,
                    0.01,
                    0.09,
                    0.03,
                    90,
                    KIB128,
                ),
            ),
            (
                "gcs-standard",
                class(
                    "gcp",
                    "GCS Standard",
                    us_central,
                    0.020,
                    0.005,
                    0.0004,
                    0.12,
                    0.0,
                    0,
                    0,
                ),
            ),
            (
                "gcs-nearline",
                class(
                    "gcp",
                    "GCS Nearline",
                    us_central,
                    0.010,
                    0.01,
                    0.001,
                    0.12,
                    0.01,
                    30,
                    0,
                ),
            ),
            (
                "gcs-coldline",
                class(
                    "gcp",
                    "GCS Coldline",
                    us_central,
                    0.004,
                    0.02,
                    0.01,
                    0.12,
                    0.02,
                    90,
                    0,
                ),
            ),
            (
                "gcs-archive",
                class(
                    "gcp",
                    "GCS Archive",
                    us_central,
                    0.0012,
                    0.05,
                    0.05,
                    0.12,
                    0.05,
                    365,
                    0,
                ),
            ),
            (
                "azure-hot",
                class(
                    "azure",
                    "Azure Blob Hot",
                    azure_east,
                    0.018,
                    0.0065,
                    0.0005,
                    0.087,
                    0.0,
                    0,
                    0,
                ),
            ),
            (
                "azure-cool",
                class(
                    "azure",
                    "Azure Blob Cool",
                    azure_east,
                    0.010,
                    0.013,
                    0.001,
                    0.087,
                    0.01,
                    30,
                    0,
                ),
            ),
            (
                "azure-cold",
                class(
                    "azure",
                    "Azure Blob Cold",
                    azure_east,
                    0.0036,
                    0.0234,
                    0.01,
                    0.087,
                    0.03,
                    90,
                    0,
                ),
            ),
        ];
        Self {
            classes: classes
                .into_iter()
                .map(|(id, c)| (id.to_string(), c))
                .collect(),
        }
    }

    /// The built-in table with the classes of a TOML file laid over it:
    /// `[classes.s3-standard]` with some fields changes those prices;
    /// a new id adds a class (all prices then required).
    ///
    /// ```toml
    /// [classes.s3-standard]
    /// storage-gb-month = 0.021
    ///
    /// [classes.minio]
    /// provider = "self-hosted"
    /// name = "MinIO on our disks"
    /// region = "dc1"
    /// as-of = "2026-11"
    /// storage-gb-month = 0.004
    /// put-per-1000 = 0.0
    /// get-per-1000 = 0.0
    /// egress-per-gb = 0.0
    /// ```
    ///
    /// # Errors
    /// Invalid TOML, unknown keys, or a new class without a price.
    pub fn with_overrides(mut self, toml_text: &str) -> Result<Self> {
        let file: OverrideFile =
            toml::from_str(toml_text).map_err(|e| Error::Parse(e.to_string()))?;
        for (id, o) in file.classes {
            let base = self.classes.get(&id).cloned();
            let need = |v: Option<f64>, field: &'static str, base: Option<f64>| {
                v.or(base).ok_or_else(|| Error::Missing {
                    class: id.clone(),
                    field,
                })
            };
            let b = base.as_ref();
            let c = StorageClass {
                provider: o
                    .provider
                    .or_else(|| b.map(|b| b.provider.clone()))
                    .unwrap_or_else(|| "custom".into()),
                name: o
                    .name
                    .or_else(|| b.map(|b| b.name.clone()))
                    .unwrap_or_else(|| id.clone()),
                region: o
                    .region
                    .or_else(|| b.map(|b| b.region.clone()))
                    .unwrap_or_default(),
                as_of: o
                    .as_of
                    .or_else(|| b.map(|b| b.as_of.clone()))
                    .unwrap_or_else(|| "override".into()),
                storage_gb_month: need(
                    o.storage_gb_month,
                    "storage-gb-month",
                    b.map(|b| b.storage_gb_month),
                )?,
                put_per_1000: need(o.put_per_1000, "put-per-1000", b.map(|b| b.put_per_1000))?,
                get_per_1000: need(o.get_per_1000, "get-per-1000", b.map(|b| b.get_per_1000))?,
                egress_per_gb: need(o.egress_per_gb, "egress-per-gb", b.map(|b| b.egress_per_gb))?,
                retrieval_per_gb: o
                    .retrieval_per_gb
                    .or(b.map(|b| b.retrieval_per_gb))
                    .unwrap_or(0.0),
                min_storage_days: o
                    .min_storage_days
                    .or(b.map(|b| b.min_storage_days))
                    .unwrap_or(0),
                min_object_bytes: o
                    .min_object_bytes
                    .or(b.map(|b| b.min_object_bytes))
                    .unwrap_or(0),
            };
            self.classes.insert(id, c);
        }
        Ok(self)
    }
}

impl StorageClass {
    /// Bytes billed for objects of these sizes (small ones rounded up to the
    /// minimum billable size).
    #[must_use]
    pub fn billable_bytes(&self, sizes: impl IntoIterator<Item = u64>) -> u64 {
        sizes
            .into_iter()
            .map(|s| s.max(self.min_object_bytes))
            .sum()
    }

    /// Storage cost of `billable` bytes for a month.
    #[must_use]
    pub fn storage_per_month(&self, billable: u64) -> f64 {
        billable as f64 / GIB * self.storage_gb_month
    }

    /// Cost of requests.
    #[must_use]
    pub fn requests(&self, puts: u64, gets: u64) -> f64 {
        puts as f64 / 1000.0 * self.put_per_1000 + gets as f64 / 1000.0 * self.get_per_1000
    }

    /// The early-deletion charge for `bytes` deleted after `days` stored:
    /// the days short of the minimum, at the storage price.
    #[must_use]
    pub fn early_deletion(&self, bytes: u64, days: f64) -> f64 {
        let short = (f64::from(self.min_storage_days) - days).max(0.0);
        bytes as f64 / GIB * self.storage_gb_month * short / MONTH_DAYS
    }

    /// Reading `bytes` back out with `gets` requests: egress, retrieval, requests.
    #[must_use]
    pub fn read_out(&self, bytes: u64, gets: u64) -> f64 {
        bytes as f64 / GIB * (self.egress_per_gb + self.retrieval_per_gb) + self.requests(0, gets)
    }
}

/// Seconds to move `bytes` at `bytes_per_sec`.
#[must_use]
pub fn transfer_secs(bytes: u64, bytes_per_sec: u64) -> f64 {
    bytes as f64 / bytes_per_sec.max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    const GB: u64 = 1 << 30;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn storage_and_requests_by_hand() {
        let t = PriceTable::builtin();
        let s3 = &t.classes["s3-standard"];
        // 100 GB for a month at $0.023: $2.30; 10,000 PUTs and 50,000 GETs:
        // 10 x $0.005 + 50 x $0.0004 = $0.07.
        assert!(close(
            s3.storage_per_month(s3.billable_bytes([100 * GB])),
            2.30
        ));
        assert!(close(s3.requests(10_000, 50_000), 0.07));
        // Reading 20 GB out with 1,000 GETs: 20 x $0.09 + $0.0004.
        assert!(close(s3.read_out(20 * GB, 1000), 1.8004));
    }

    #[test]
    fn minimum_object_size_and_duration() {
        let t = PriceTable::builtin();
        let ia = &t.classes["s3-standard-ia"];
        // Three 4 KiB manifests and one 32 MiB pack: the manifests bill as 128 KiB each.
        let billed = ia.billable_bytes([4096, 4096, 4096, 32 << 20]);
        assert_eq!(billed, 3 * 128 * 1024 + (32 << 20));
        // 30 GB deleted after 10 of its 30 days: 20 more days billed,
        // 30 x $0.0125 x 20/30 = $0.25.
        assert!(close(ia.early_deletion(30 * GB, 10.0), 0.25));
        assert!(close(ia.early_deletion(30 * GB, 45.0), 0.0));
        // Retrieval is on top of egress: 10 GB x ($0.09 + $0.01).
        assert!(close(ia.read_out(10 * GB, 0), 1.0));
        let archive = &t.classes["gcs-archive"];
        assert!(close(
            archive.early_deletion(GB, 0.0),
            0.0012 * 365.0 / 30.0
        ));
        assert!(close(transfer_secs(100 << 20, 10 << 20), 10.0));
    }

    #[test]
    fn every_builtin_class_is_dated_and_priced() {
        let t = PriceTable::builtin();
        assert_eq!(t.classes.len(), 10);
        for (id, c) in &t.classes {
            assert!(!c.as_of.is_empty() && !c.region.is_empty(), "{id}");
            assert!(c.storage_gb_month > 0.0 && c.put_per_1000 > 0.0, "{id}");
        }
    }

    #[test]
    fn overrides_change_prices_and_add_classes() {
        let t = PriceTable::builtin()
            .with_overrides(
                r#"
                [classes.s3-standard]
                storage-gb-month = 0.021

                [classes.minio]
                name = "MinIO"
                storage-gb-month = 0.004
                put-per-1000 = 0.0
                get-per-1000 = 0.0
                egress-per-gb = 0.0
                "#,
            )
            .expect("parses");
        assert!(close(t.classes["s3-standard"].storage_gb_month, 0.021));
        assert!(
            close(t.classes["s3-standard"].put_per_1000, 0.005),
            "the rest kept"
        );
        assert_eq!(t.classes["minio"].provider, "custom");
        let e = PriceTable::builtin()
            .with_overrides("[classes.new]\nname = \"x\"\n")
            .expect_err("no price");
        assert!(e.to_string().contains("storage-gb-month"), "{e}");
        assert!(PriceTable::builtin()
            .with_overrides("[classes.s3-standard]\nbogus = 1\n")
            .is_err());
    }
}
