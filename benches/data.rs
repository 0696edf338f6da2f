//! Bench inputs: a real Qdrant snapshot when ../shared/fixtures is present,
//! else seeded pseudo-random bytes of the same size.

pub fn snapshot_bytes() -> (String, Vec<u8>) {
    // Cargo sets it at run time; the compile-time value is a fallback.
    let p = std::path::PathBuf::from(
        std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string()),
    )
    .join("../shared/fixtures/qdrant-churn/day0/collection-node0.snapshot");
    match std::fs::read(p) {
        Ok(b) => ("qdrant-churn day0".into(), b),
        Err(_) => {
            let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
            let b = (0..12 << 20)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x >> 24) as u8
                })
                .collect();
            ("seeded random".into(), b)
        }
    }
}
