//! The [`Backend`] contract as executable checks: every implementation (a
//! local directory, S3, GCS, Azure, the in-memory store, the wrappers) must
//! pass [`check`] on an empty repository root, so that the engine sees one
//! behaviour whatever the storage. Feature `test-util`.

use bytes::Bytes;

use crate::backend::{Backend, WriteMode, MULTIPART_THRESHOLD};
use crate::Error;

fn expect_not_found<T: std::fmt::Debug>(what: &str, r: crate::Result<T>) {
    match r {
        Err(e @ Error::NotFound { .. }) => assert!(!e.is_retryable(), "{what}: NotFound is final"),
        other => panic!("{what}: expected NotFound, got {other:?}"),
    }
}

fn expect_out_of_range<T: std::fmt::Debug>(what: &str, r: crate::Result<T>, got: u64) {
    match r {
        Err(e @ Error::OutOfRange { .. }) => {
            assert!(!e.is_retryable(), "{what}: OutOfRange is final");
            let Error::OutOfRange { got: g, .. } = e else {
                unreachable!()
            };
            assert_eq!(g, got, "{what}: bytes that exist");
        }
        other => panic!("{what}: expected OutOfRange, got {other:?}"),
    }
}

/// Names and sizes under `dir`, sorted.
async fn listed(b: &dyn Backend, dir: &str) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = b
        .list(dir)
        .await
        .expect("list")
        .into_iter()
        .map(|l| (l.name, l.size))
        .collect();
    out.sort();
    out
}

/// Runs every check against `b`, whose root must be empty. Panics naming
/// the first broken rule.
pub async fn check(b: &dyn Backend) {
    // Missing objects.
    expect_not_found("get of a missing object", b.get("snapshots/none").await);
    expect_not_found("head of a missing object", b.head("snapshots/none").await);
    expect_not_found(
        "ranged get of a missing object",
        b.get_range("snapshots/none", 0..4).await,
    );
    assert!(b
        .list("snapshots")
        .await
        .expect("list of an empty directory")
        .is_empty());
    b.delete("snapshots/none")
        .await
        .expect("deleting a missing object succeeds");

    // Create-only writes never replace.
    let data = Bytes::from_static(b"hello world");
    b.put("snapshots/a", data.clone(), WriteMode::Create)
        .await
        .expect("create");
    match b
        .put(
            "snapshots/a",
            Bytes::from_static(b"other"),
            WriteMode::Create,
        )
        .await
    {
        Err(e @ Error::AlreadyExists { .. }) => assert!(!e.is_retryable()),
        other => panic!("a second create: expected AlreadyExists, got {other:?}"),
    }
    assert_eq!(
        b.get("snapshots/a").await.expect("get"),
        data,
        "create replaced nothing"
    );
    // Content-addressed writes leave an existing object alone.
    b.put(
        "snapshots/a",
        Bytes::from_static(b"other"),
        WriteMode::ContentAddressed,
    )
    .await
    .expect("content-addressed write of an existing name succeeds");
    assert_eq!(b.get("snapshots/a").await.expect("get"), data);
    // Replace replaces.
    b.put("locks/l", Bytes::from_static(b"one"), WriteMode::Replace)
        .await
        .expect("replace");
    b.put("locks/l", Bytes::from_static(b"two"), WriteMode::Replace)
        .await
        .expect("replace");
    assert_eq!(&b.get("locks/l").await.expect("get")[..], b"two");

    // Ranged reads return exactly the bytes asked for.
    assert_eq!(
        &b.get_range("snapshots/a", 0..5).await.expect("range")[..],
        b"hello"
    );
    assert_eq!(
        &b.get_range("snapshots/a", 6..11).await.expect("range")[..],
        b"world"
    );
    assert!(b
        .get_range("snapshots/a", 3..3)
        .await
        .expect("empty range")
        .is_empty());
    let into = b
        .get_range_into("snapshots/a", 1..4, vec![0xAA; 64])
        .await
        .expect("range into a used buffer");
    assert_eq!(&into[..], b"ell", "the buffer's old contents are gone");
    expect_out_of_range(
        "a range ending past the end",
        b.get_range("snapshots/a", 6..20).await,
        5,
    );
    expect_out_of_range(
        "a range starting past the end",
        b.get_range("snapshots/a", 20..30).await,
        0,
    );
    expect_out_of_range(
        "a range into a buffer, past the end",
        b.get_range_into("snapshots/a", 6..20, Vec::new()).await,
        5,
    );
    if let Some(r) = b.get_range_blocking("snapshots/a", 6..11, vec![1; 3]) {
        assert_eq!(&r.expect("blocking range")[..], b"world");
        expect_out_of_range(
            "a blocking range past the end",
            b.get_range_blocking("snapshots/a", 6..20, Vec::new())
                .expect("same path"),
            5,
        );
    }

    // Metadata and listings.
    assert_eq!(b.head("snapshots/a").await.expect("head").size, 11);
    b.put(
        "packs/ab/p1",
        Bytes::from_static(b"xyz"),
        WriteMode::ContentAddressed,
    )
    .await
    .expect("nested write");
    assert_eq!(
        listed(b, "snapshots").await,
        [("a".to_string(), 11)],
        "only complete objects, with sizes"
    );
    assert_eq!(
        listed(b, "packs").await,
        [("p1".to_string(), 3)],
        "listings recurse"
    );

    // Large objects (uploaded in parts where the store does that).
    let big: Bytes = (0..MULTIPART_THRESHOLD + 4096)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into();
    b.put("packs/cd/big", big.clone(), WriteMode::ContentAddressed)
        .await
        .expect("large write");
    assert_eq!(
        b.head("packs/cd/big").await.expect("head").size,
        big.len() as u64
    );
    let end = big.len() as u64;
    assert_eq!(
        b.get_range("packs/cd/big", end - 10..end)
            .await
            .expect("tail"),
        big.slice(big.len() - 10..)
    );

    // Deletes.
    b.delete("snapshots/a").await.expect("delete");
    expect_not_found("get after delete", b.get("snapshots/a").await);
    b.delete("snapshots/a")
        .await
        .expect("deleting twice succeeds");
    assert!(b.list("snapshots").await.expect("list").is_empty());
}
