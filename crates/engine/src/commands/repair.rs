//! Repair: rebuild index files from the packs themselves, and salvage
//! damaged snapshots.
//!
//! `repair_index` reads every pack's trailer and writes index files that
//! supersede every existing one, then deletes those (caches take this like a
//! prune's rewrite: no full rebuild). It holds the prune lease, so it never
//! interleaves with a prune; backups go on meanwhile (index files they write
//! after the listing are kept).
//!
//! `repair_snapshots` writes, for each snapshot with files whose data is not
//! all in the repository, a new manifest in which those files are marked
//! damaged (with the reason) — never dropped — and tagged `repaired`; with
//! `forget`, the original is then deleted. Restores of the new snapshot
//! restore every intact file and name the damaged ones.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use cairn_model::{IndexFile, IndexGroup, IndexId, PackId, SnapshotId};
use cairn_store::keys;
use futures::{StreamExt, TryStreamExt};

use crate::error::Result;
use crate::progress::Progress;
use crate::repository::Repository;
use crate::services::damage::ReadData;

/// What `repair_index` did (`repair index --json` prints exactly this).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct RepairIndexSummary {
    /// Packs whose trailers were read.
    pub packs: usize,
    /// Packs whose trailer could not be read: their chunks are in no index.
    pub unreadable: Vec<String>,
    /// Index files written.
    pub written: usize,
    /// Index files replaced and deleted.
    pub removed: usize,
}

/// One salvaged snapshot.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Repaired {
    /// The damaged snapshot.
    pub from: SnapshotId,
    /// The salvaged one (not written in a dry run).
    pub to: Option<SnapshotId>,
    /// Files marked damaged, and why.
    pub damaged: Vec<crate::services::damage::DamagedFile>,
}

/// What `repair_snapshots` did (`repair snapshots --json` prints exactly this).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct RepairSnapshotsSummary {
    /// Nothing was written.
    pub dry_run: bool,
    /// Originals were deleted once their salvaged copies were written.
    pub forget: bool,
    /// Each damaged snapshot and what became of it.
    pub repaired: Vec<Repaired>,
}

impl Repository {
    /// Rebuilds index files from pack trailers (see the module docs).
    ///
    /// # Errors
    /// [`crate::Error::Busy`] while a prune runs; storage errors.
    pub async fn repair_index(&self, progress: Arc<dyn Progress>) -> Result<RepairIndexSummary> {
        self.require_read("repair the index")?;
        let lock = self
            .acquire_lease(cairn_model::LeaseKind::Prune, Some("prune"))
            .await?;
        let r = self.repair_index_locked(&*progress).await;
        lock.release().await;
        r
    }

    async fn repair_index_locked(&self, progress: &dyn Progress) -> Result<RepairIndexSummary> {
        let mut s = RepairIndexSummary::default();
        let old: Vec<IndexId> = self
            .list_index()
            .await?
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        let packs: Vec<(PackId, u64)> = self.pack_sizes().await?.into_iter().collect();
        progress.start("repair index", Some(packs.len() as u64));
        let read = self.read_trailers(packs, progress).await;
        progress.finish();
        let mut groups = Vec::new();
        for (pack, r) in read {
            match r {
                Ok(g) => groups.push(g),
                Err(why) => s.unreadable.push(format!("pack {pack}: {why}")),
            }
        }
        s.packs = groups.len();
        groups.sort_by_key(|g| g.pack);
        let mut batches: Vec<Vec<IndexGroup>> = groups.chunks(4096).map(<[_]>::to_vec).collect();
        if batches.is_empty() {
            batches.push(Vec::new());
        }
        for (i, batch) in batches.into_iter().enumerate() {
            let file = IndexFile {
                supersedes: if i == 0 { old.clone() } else { Vec::new() },
                groups: batch,
            };
            let bytes = file.encode();
            let name = IndexId::of(&bytes);
            self.store
                .put_content_addressed(&keys::index(&name), Bytes::from(bytes))
                .await?;
            s.written += 1;
        }
        futures::stream::iter(&old)
            .map(|n| async move { self.store.delete(&keys::index(n)).await })
            .buffer_unordered(16)
            .try_collect::<Vec<()>>()
            .await?;
        s.removed = old.len();
        Ok(s)
    }

    /// Salvages damaged snapshots (see the module docs).
    ///
    /// # Errors
    /// Storage errors.
    pub async fn repair_snapshots(
        &self,
        forget: bool,
        dry_run: bool,
        progress: Arc<dyn Progress>,
    ) -> Result<RepairSnapshotsSummary> {
        self.require_read("repair snapshots")?;
        let report = self.inspect(ReadData::None, progress).await?;
        let mut out = Vec::new();
        let by_id: HashMap<String, _> = self
            .snapshots()
            .await?
            .into_iter()
            .map(|i| (i.id.to_hex(), i))
            .collect();
        for (id, files) in &report.damaged {
            let Some(info) = by_id.get(id) else { continue };
            let mut snapshot = info.snapshot.clone();
            for f in &mut snapshot.files {
                if let Some(d) = files.iter().find(|d| d.path == f.path) {
                    f.damaged = Some(d.why.clone());
                }
            }
            if !snapshot.tags.iter().any(|t| t == "repaired") {
                snapshot.tags.push("repaired".into());
            }
            let to = if dry_run {
                None
            } else {
                let (json, packed) = crate::repository::compress_json(&snapshot);
                let new_id = SnapshotId::of(&json);
                match self
                    .store
                    .put_new(&keys::snapshot(&new_id), Bytes::from(packed))
                    .await
                {
                    Ok(()) | Err(cairn_store::Error::AlreadyExists { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
                if forget {
                    self.store.delete(&keys::snapshot(&info.id)).await?;
                }
                Some(new_id)
            };
            out.push(Repaired {
                from: info.id,
                to,
                damaged: files.clone(),
            });
        }
        Ok(RepairSnapshotsSummary {
            dry_run,
            forget,
            repaired: out,
        })
    }
}
