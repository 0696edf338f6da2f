//! Repository statistics: logical vs stored size, dedup and compression.

use cairn_model::IndexFile;
use cairn_store::keys;
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::repository::Repository;

/// Sizes and ratios for a whole repository.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct RepoStats {
    /// Number of snapshots.
    pub snapshots: u64,
    /// Sum of every snapshot's file sizes.
    pub logical_bytes: u64,
    /// Distinct chunks stored.
    pub unique_chunks: u64,
    /// Raw bytes of the distinct chunks.
    pub unique_bytes: u64,
    /// Bytes of chunk data as stored (after compression).
    pub stored_chunk_bytes: u64,
    /// Pack files.
    pub packs: u64,
    /// Bytes of all packs (chunk data plus headers and trailers).
    pub pack_bytes: u64,
    /// Bytes of index files.
    pub index_bytes: u64,
    /// Bytes of snapshot manifests.
    pub snapshot_bytes: u64,
    /// Chunk-list blobs the manifests name, as stored (inside packs).
    pub chunk_list_bytes: u64,
    /// Metadata: index files, manifests and their chunk lists.
    pub metadata_bytes: u64,
    /// Pack bytes that are not chunk data: headers, trailers (a second copy
    /// of each pack's index entries) and any blob stored twice.
    pub pack_overhead_bytes: u64,
    /// Everything in the repository.
    pub total_bytes: u64,
    /// logical / unique bytes.
    pub dedup_ratio: f64,
    /// unique / stored chunk bytes.
    pub compression_ratio: f64,
    /// logical / total bytes.
    pub overall_ratio: f64,
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

impl Repository {
    /// Computes [`RepoStats`] from the index files, packs and manifests.
    ///
    /// # Errors
    /// Storage errors or malformed files.
    pub async fn stats(&self) -> Result<RepoStats> {
        self.require_read("read repository statistics")?;
        let mut s = RepoStats::default();
        let snapshots = self.snapshots().await?;
        s.snapshots = snapshots.len() as u64;
        s.logical_bytes = snapshots.iter().map(|i| i.snapshot.totals.bytes).sum();
        s.snapshot_bytes = snapshots.iter().map(|i| i.manifest_size).sum();
        let packs = self.store.list(keys::PACK_DIR).await?;
        s.packs = packs.len() as u64;
        s.pack_bytes = packs.iter().map(|l| l.size).sum();
        let index_files = self.list_index().await?;
        s.index_bytes = index_files.iter().map(|(_, size)| size).sum();
        let files: Vec<IndexFile> = futures::stream::iter(index_files)
            .map(|(id, _)| async move {
                let b = self.store.get(&keys::index(&id)).await?;
                IndexFile::decode(&b).map_err(|e| Error::Malformed {
                    what: format!("index file {id}"),
                    reason: e.to_string(),
                })
            })
            .buffer_unordered(16)
            .try_collect()
            .await?;
        let lists: std::collections::HashSet<_> = snapshots
            .iter()
            .flat_map(|i| &i.snapshot.files)
            .flat_map(|f| &f.chunk_lists)
            .collect();
        let mut seen = std::collections::HashSet::new();
        for g in files.iter().flat_map(|f| &f.groups) {
            for e in &g.entries {
                if seen.insert(e.id) {
                    s.unique_chunks += 1;
                    s.unique_bytes += u64::from(e.raw_length);
                    s.stored_chunk_bytes += u64::from(e.length);
                    if lists.contains(&e.id) {
                        s.chunk_list_bytes += u64::from(e.length);
                    }
                }
            }
        }
        s.total_bytes = s.pack_bytes + s.index_bytes + s.snapshot_bytes;
        s.metadata_bytes = s.index_bytes + s.snapshot_bytes + s.chunk_list_bytes;
        s.pack_overhead_bytes = s.pack_bytes.saturating_sub(s.stored_chunk_bytes);
        s.dedup_ratio = ratio(s.logical_bytes, s.unique_bytes);
        s.compression_ratio = ratio(s.unique_bytes, s.stored_chunk_bytes);
        s.overall_ratio = ratio(s.logical_bytes, s.total_bytes);
        Ok(s)
    }
}
