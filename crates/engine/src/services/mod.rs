//! Repository services: what the commands share. Each command module in
//! [`crate::commands`] is a leaf that uses these and never another command.
//!
//! - [`ingest`]: the backup pipeline (inputs → chunks → packs → index →
//!   snapshot commit), with the seams other producers of input streams use;
//! - [`view`]: every index file as one view, and the prune plans in force;
//! - [`materialize`]: a snapshot file's bytes, read by plan, written in
//!   place or streamed to a sink, and the restore plans `report` estimates;
//! - [`damage`]: which snapshot files cannot be restored, and why;
//! - [`gc`]: what a prune did (its results, also carried by forget);
//! - [`history`]: run records of scheduled work, and one run per job at a
//!   time.
//!
//! This host's identity ([`crate::host`]), leases ([`crate::lease`]), reads
//! by plan ([`crate::read`]) and the repository itself
//! ([`crate::repository`]: config, snapshots, the chunk index cache) are
//! services too; key layout is `cairn_store::keys`.

pub(crate) mod damage;
pub(crate) mod drills;
pub(crate) mod gc;
pub(crate) mod history;
pub(crate) mod ingest;
pub(crate) mod mark;
pub(crate) mod materialize;
pub(crate) mod pending;
pub(crate) mod runs;
pub(crate) mod view;
