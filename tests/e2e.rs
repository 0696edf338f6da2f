//! End-to-end tests: the `cairn` binary against real repositories on local
//! disk and on a real S3-compatible server (moto, started by the harness),
//! with real Qdrant snapshot files.

/// Real Qdrant servers, data helpers and a fault-injecting proxy.
mod qdrant_server;
/// Shared helpers: temp repositories, the moto server, fixtures.
mod support;

/// The backup/restore suite and the storage contract against Azurite.
mod azure;
/// Incremental behaviour: what each backup adds.
mod backup;
/// Headless Chromium over DevTools.
mod browser;
/// Live Qdrant clusters: backup, restore into fresh clusters, faults.
mod cluster;
/// Repositories written by the previous release, read and written by this one.
mod compat;
/// Many writers: processes sharing a cache, hosts sharing a repository.
mod concurrency;
/// `cairn config init` and `cairn config check`.
mod config;
/// `cairn daemon` and `cairn backup --schedule`: schedules, runs, API, metrics, webhooks.
mod daemon;
/// Damaged repositories: what is named and skipped, what is refused.
mod damage;
/// The dashboard in headless Chromium against a daemon and live Qdrant nodes.
mod dashboard;
/// Encrypted repositories: hidden content, passwords, keys.
mod encryption;
/// Bad input and faults: each must fail cleanly and leave the repository consistent.
mod faults;
/// The backup/restore suite and the storage contract against a GCS emulator.
mod gcs;
/// `--json` output parses back into the engine's result types.
mod json;
/// Retention: forget by policy and by id.
mod lifecycle;
/// S3 Object Lock against moto: locks written, deletion refused, prune and forget wait, lock extend.
mod objectlock;
/// The Dockerfile and the Kubernetes manifests, against the real binary.
mod packaging;
/// Cost reports: totals against the store, prices, CSV, HTML in a browser.
mod report;
/// Byte-identical round trips of real Qdrant snapshots.
mod restore;
/// The backup/restore suite against the S3-compatible server.
mod s3;
/// The test vectors: a tiny repository rebuilt byte for byte.
mod vectors;
