//! Prune: garbage collection that is safe while backups run, on this host or
//! any other, without locking them out. The protocol (docs/format.md):
//!
//! - **Mark.** Find the chunks every snapshot needs; condemn packs that hold
//!   none of them, repack those whose unused share is above `max_unused`
//!   (their live blobs, verified, into new packs) and condemn them too, and
//!   condemn packs no index file names. Rewrite the index files that name a
//!   condemned pack as new index files that *supersede* them. Then write a
//!   plan (`gc/<id>`): the condemned packs, the superseded index files and
//!   the snapshots seen. Nothing is deleted yet; backups that start from
//!   now on read the plan and never deduplicate against a condemned pack.
//! - **Sweep**, in this run or a later one, once the plan is older than the
//!   grace period and no backup whose lease started before the plan still
//!   holds a live lease: a condemned pack that a snapshot written after the
//!   plan needs is spared (and indexed again); then the superseded index
//!   files are deleted, then the condemned packs, then the plan.
//!
//! Only one prune runs at a time (the `locks/prune` lease); backups never
//! wait for it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cairn_model::{ChunkId, GcPlan, IndexFile, IndexGroup, IndexId, PackId, SnapshotId};
use cairn_pack::PackWriter;
use cairn_store::keys;
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};

use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::read::{self, Blob, BlobFault, ChunkLists, Fetched};
use crate::repository::{Repository, SnapshotInfo};
use crate::services::gc::{Deferred, PrunePlanSummary, PruneSummary, SweepReport, UnlockSummary};
use crate::services::ingest::store_pack;
use crate::services::view::IndexView;

/// Settings of a prune.
#[derive(Debug, Clone)]
pub struct PruneOptions {
    /// Repack a pack when more than this share of its bytes is unused (0 to 1).
    pub max_unused: f64,
    /// Print what would be done; change nothing.
    pub dry_run: bool,
    /// A plan is swept only when at least this old (storage time).
    pub grace: Duration,
}

impl Default for PruneOptions {
    fn default() -> Self {
        Self {
            max_unused: 0.1,
            dry_run: false,
            grace: Duration::ZERO,
        }
    }
}

/// The packs (and blobs) a set of snapshots needs.
#[derive(Debug, Default)]
struct Needs {
    chunks: HashSet<ChunkId>,
    /// "snapshot X, file Y: why" for every file that cannot be restored.
    damaged: Vec<String>,
}

impl Repository {
    /// The chunks (and chunk lists) `snapshots` need; reads chunk lists.
    async fn needs(&self, snapshots: &[SnapshotInfo], view: &IndexView) -> Result<Needs> {
        let mut needs = Needs::default();
        let mut lists_read = ChunkLists::new();
        for info in snapshots {
            // This snapshot's lists not read yet, many to a request.
            let lists = info
                .snapshot
                .files
                .iter()
                .flat_map(|f| f.chunk_lists.iter().copied());
            self.read_lists(view, lists, &mut lists_read).await;
            for file in &info.snapshot.files {
                let mut problem = None;
                for list in &file.chunk_lists {
                    needs.chunks.insert(*list);
                    match &lists_read[list] {
                        Ok(ids) => needs.chunks.extend(ids.iter().copied()),
                        Err(why) => problem = Some(why.clone()),
                    }
                }
                needs.chunks.extend(file.chunks.iter().copied());
                if problem.is_none() {
                    if let Some(c) = file.chunks.iter().find(|c| !view.locations.contains_key(c)) {
                        problem = Some(format!("chunk {c} is in no index file"));
                    }
                }
                // A file a repair marked damaged is known to be incomplete:
                // what of it can be read stays, and it blocks nothing.
                if let (Some(why), None) = (problem, &file.damaged) {
                    needs.damaged.push(format!(
                        "snapshot {}, file {}: {why}",
                        info.id.short(),
                        file.path
                    ));
                }
            }
        }
        Ok(needs)
    }

    /// Removes data no snapshot needs (see the module docs).
    ///
    /// # Errors
    /// [`Error::Busy`] when another prune runs; storage errors. A failure
    /// leaves the repository consistent: nothing is deleted before the plan
    /// that names it is written and ripe.
    pub async fn prune(
        &self,
        opts: &PruneOptions,
        progress: Arc<dyn Progress>,
    ) -> Result<PruneSummary> {
        let lock = if opts.dry_run {
            None
        } else {
            Some(
                self.acquire_lease(cairn_model::LeaseKind::Prune, Some("prune"))
                    .await?,
            )
        };
        let result = self.prune_locked(opts, &*progress).await;
        if let Some(l) = lock {
            l.release().await;
        }
        result
    }

    async fn prune_locked(
        &self,
        opts: &PruneOptions,
        progress: &dyn Progress,
    ) -> Result<PruneSummary> {
        let mut summary = PruneSummary {
            dry_run: opts.dry_run,
            ..PruneSummary::default()
        };
        // Earlier plans first: what is ripe goes now.
        if !opts.dry_run {
            for (name, plan, written) in self.gc_plans().await? {
                match self.sweep(&name, &plan, written, opts, progress).await? {
                    Ok(r) => summary.swept.push(r),
                    Err(why) => summary.deferred.push(Deferred { plan: name, why }),
                }
            }
        }
        let (mark, plan) = self.mark(opts, progress).await?;
        summary.mark = mark;
        if let Some((name, plan)) = plan {
            let written = self.store.modified(&keys::gc_plan(&name)).await?;
            match self.sweep(&name, &plan, written, opts, progress).await? {
                Ok(r) => summary.swept.push(r),
                Err(why) => summary.deferred.push(Deferred { plan: name, why }),
            }
        }
        Ok(summary)
    }

    /// Decides what to delete and repack, and (unless dry) repacks and
    /// writes the plan.
    async fn mark(
        &self,
        opts: &PruneOptions,
        progress: &dyn Progress,
    ) -> Result<(PrunePlanSummary, Option<(String, GcPlan)>)> {
        let mut s = PrunePlanSummary::default();
        let already: HashSet<PackId> = self.condemned_packs().await?;
        let snapshots = self.snapshots().await?;
        s.snapshots = snapshots.len();
        let view = self.index_view().await?;
        let needs = self.needs(&snapshots, &view).await?;
        s.damaged.clone_from(&needs.damaged);
        let present: HashMap<PackId, u64> = self.pack_sizes().await?.into_iter().collect();
        // Each needed chunk is kept in one place: its first location in a
        // pack that stays, in pack id order.
        let mut keep_at: HashMap<ChunkId, PackId> = HashMap::new();
        for id in &needs.chunks {
            if let Some(locs) = view.locations.get(id) {
                let best = locs
                    .iter()
                    .map(|(p, _)| *p)
                    .filter(|p| present.contains_key(p) && !already.contains(p))
                    .min();
                if let Some(p) = best {
                    keep_at.insert(*id, p);
                }
            }
        }
        let mut condemned: Vec<PackId> = Vec::new();
        let mut repack: Vec<PackId> = Vec::new();
        let mut pack_ids: Vec<&PackId> = present.keys().collect();
        pack_ids.sort();
        for pack in pack_ids {
            if already.contains(pack) {
                continue;
            }
            let size = present[pack];
            s.packs += 1;
            s.pack_bytes += size;
            let Some(group) = view.packs.get(pack) else {
                condemned.push(*pack); // no index file names it
                s.packs_unused += 1;
                s.bytes_to_delete += size;
                continue;
            };
            let live: u64 = group
                .entries
                .iter()
                .filter(|e| keep_at.get(&e.id) == Some(pack))
                .map(|e| u64::from(e.length))
                .sum();
            // Unused: blob bytes no snapshot needs here (headers and
            // trailers are not waste; a pack of needed blobs is not repacked).
            let blobs: u64 = group.entries.iter().map(|e| u64::from(e.length)).sum();
            s.live_bytes += live;
            if live == 0 {
                condemned.push(*pack);
                s.packs_unused += 1;
                s.bytes_to_delete += size;
            } else if (blobs.saturating_sub(live)) as f64 > opts.max_unused * blobs as f64 {
                repack.push(*pack);
                s.packs_repacked += 1;
                s.bytes_to_delete += size;
                s.bytes_to_download += live;
                s.bytes_to_upload += live;
            }
        }
        let gone: HashSet<PackId> = condemned
            .iter()
            .chain(&repack)
            .copied()
            .chain(
                view.packs
                    .keys()
                    .filter(|p| !present.contains_key(p))
                    .copied(),
            )
            .collect();
        let superseded: Vec<IndexId> = view
            .files
            .iter()
            .filter(|(_, packs)| packs.iter().any(|p| gone.contains(p)))
            .map(|(n, _)| *n)
            .collect();
        // Kept blobs are read with one plan (neighbours in one request), in
        // pack order, so the new packs do not depend on request timing.
        let kept = repack.iter().flat_map(|pack| {
            view.packs[pack]
                .entries
                .iter()
                .filter(|e| keep_at.get(&e.id) == Some(pack))
                .map(|e| (*pack, Blob::from(e)))
        });
        let reader = self.reader(None);
        let plan = read::plan(kept, &reader.limits);
        s.index_superseded = superseded.len();
        s.requests = plan.reads.len() as u64
            + (s.bytes_to_upload / self.config.pack_size.max(1) + 1) * 2
            + superseded.len() as u64
            + (condemned.len() + repack.len()) as u64
            + 2;
        if opts.dry_run || (condemned.is_empty() && repack.is_empty() && superseded.is_empty()) {
            return Ok((s, None));
        }
        if !needs.damaged.is_empty() {
            // What the damaged files need is not fully known: deleting
            // anything could delete the rest of them.
            return Err(Error::PruneRefused(format!(
                "{} snapshot file(s) could not be read completely (first: {}); run cairn check, then cairn repair snapshots",
                needs.damaged.len(),
                needs.damaged[0]
            )));
        }

        // Repack: live blobs, verified, into new packs (each indexed as
        // written) whose ids are none of the packs going away: the same
        // blobs in the same order would otherwise make the same pack.
        let avoid: HashSet<PackId> = gone.iter().chain(&already).copied().collect();
        progress.start("repack", Some(s.bytes_to_download));
        let mut writer = PackWriter::new();
        let mut fetched = self.fetch_ordered(plan.reads, &reader, Arc::new(|f: Fetched| f));
        while let Some(f) = fetched.next().await {
            for (i, b) in f.read.blobs.iter().enumerate() {
                match f.blob(i) {
                    Ok(raw) => {
                        let compressed = (b.codec == cairn_model::Codec::Zstd)
                            .then(|| f.stored(i))
                            .flatten();
                        writer.push(b.id, raw, compressed);
                    }
                    Err(BlobFault::Unreadable(e)) => {
                        return Err(Error::Malformed {
                            what: format!("pack {}", f.read.pack),
                            reason: format!("cannot be read for repacking: {e}"),
                        })
                    }
                    Err(err) => {
                        // Never copy damage: the chunk stays where it is.
                        tracing::warn!(pack = %f.read.pack, chunk = %b.id, error = %err, "not repacking a damaged blob");
                        s.damaged.push(format!(
                            "pack {}: chunk {}: {err}",
                            f.read.pack.short(),
                            b.id.short()
                        ));
                    }
                }
                progress.advance(u64::from(b.length));
                if writer.len() as u64 >= self.config.pack_size {
                    let full = std::mem::take(&mut writer);
                    store_pack(&self.store, full.finish().avoiding(&avoid)).await?;
                }
            }
            let (a, b) = f.into_buffers();
            reader.buffers.give(a);
            reader.buffers.give(b);
        }
        drop(fetched);
        if !writer.is_empty() {
            store_pack(&self.store, writer.finish().avoiding(&avoid)).await?;
        }
        progress.finish();

        // Index files naming a pack that goes are replaced by ones without it.
        let mut groups: Vec<IndexGroup> = Vec::new();
        let mut seen_packs = HashSet::new();
        for name in &superseded {
            for pack in &view.files[name] {
                if !gone.contains(pack) && seen_packs.insert(*pack) {
                    groups.push(view.packs[pack].clone());
                }
            }
        }
        let mut first = true;
        let mut batches: Vec<Vec<IndexGroup>> = groups.chunks(4096).map(<[_]>::to_vec).collect();
        if batches.is_empty() && !superseded.is_empty() {
            batches.push(Vec::new()); // still record what is superseded
        }
        for batch in batches {
            let file = IndexFile {
                supersedes: if first {
                    superseded.clone()
                } else {
                    Vec::new()
                },
                groups: batch,
            };
            first = false;
            let bytes = file.encode();
            let name = IndexId::of(&bytes);
            self.store
                .put_content_addressed(&keys::index(&name), Bytes::from(bytes))
                .await?;
        }

        let plan = GcPlan {
            host: crate::host::hostname(),
            condemned_packs: condemned.into_iter().chain(repack).collect(),
            superseded_index: superseded,
            snapshots: snapshots.iter().map(|i| i.id).collect(),
        };
        let name = hex::encode(rand::random::<[u8; 16]>());
        self.store
            .put_new(
                &keys::gc_plan(&name),
                Bytes::from(serde_json::to_vec(&plan).expect("invariant: plans serialize")),
            )
            .await?;
        s.plan = Some(name.clone());
        Ok((s, Some((name, plan))))
    }

    /// Sweeps one plan if it is ripe: `Ok(Err(why))` when it is not yet.
    async fn sweep(
        &self,
        name: &str,
        plan: &GcPlan,
        written: DateTime<Utc>,
        opts: &PruneOptions,
        progress: &dyn Progress,
    ) -> Result<std::result::Result<SweepReport, String>> {
        let now = self.storage_now().await?;
        let age = (now - written).to_std().unwrap_or_default();
        if age < opts.grace {
            return Ok(Err(format!(
                "younger than the grace period ({}s of {}s)",
                age.as_secs(),
                opts.grace.as_secs()
            )));
        }
        let running: Vec<String> = self
            .leases()
            .await?
            .into_iter()
            .filter(|l| {
                l.lease
                    .as_ref()
                    .is_none_or(|x| x.kind != cairn_model::LeaseKind::Prune)
            })
            .filter(|l| l.is_live(now) && l.started() <= written)
            .map(|l| l.describe())
            .collect();
        if !running.is_empty() {
            return Ok(Err(format!(
                "backups that started before it are still running: {}",
                running.join("; ")
            )));
        }
        // Snapshots written after the plan may need a condemned pack.
        let known: HashSet<SnapshotId> = plan.snapshots.iter().copied().collect();
        let newer: Vec<SnapshotInfo> = self
            .snapshots()
            .await?
            .into_iter()
            .filter(|i| !known.contains(&i.id))
            .collect();
        let condemned: HashSet<PackId> = plan.condemned_packs.iter().copied().collect();
        let any_plan: HashSet<PackId> = self.condemned_packs().await?;
        let sizes: HashMap<PackId, u64> = self.pack_sizes().await?.into_iter().collect();
        let view = self.index_view().await?;
        let needs = self.needs(&newer, &view).await?;
        // A needed chunk whose every existing copy is condemned (by this or
        // another plan) keeps its copies in this plan's packs.
        let mut spared: HashSet<PackId> = HashSet::new();
        for id in &needs.chunks {
            let Some(locs) = view.locations.get(id) else {
                continue;
            };
            let existing: Vec<PackId> = locs
                .iter()
                .map(|(p, _)| *p)
                .filter(|p| sizes.contains_key(p))
                .collect();
            if !existing.is_empty() && existing.iter().all(|p| any_plan.contains(p)) {
                spared.extend(existing.into_iter().filter(|p| condemned.contains(p)));
            }
        }
        let mut report = SweepReport {
            plan: name.to_string(),
            packs_spared: spared.len(),
            ..SweepReport::default()
        };
        if !spared.is_empty() {
            // Index them again before the files that named them go.
            let file = IndexFile {
                supersedes: Vec::new(),
                groups: spared
                    .iter()
                    .filter_map(|p| view.packs.get(p).cloned())
                    .collect(),
            };
            let bytes = file.encode();
            let n = IndexId::of(&bytes);
            self.store
                .put_content_addressed(&keys::index(&n), Bytes::from(bytes))
                .await?;
        }
        progress.note(&format!("sweeping prune plan {name}"));
        // Order matters for a crash: index files go before the packs they name.
        futures::stream::iter(&plan.superseded_index)
            .map(|n| async move { self.store.delete(&keys::index(n)).await })
            .buffer_unordered(16)
            .try_collect::<Vec<()>>()
            .await?;
        report.index_deleted = plan.superseded_index.len();
        let doomed: Vec<PackId> = plan
            .condemned_packs
            .iter()
            .filter(|p| !spared.contains(p))
            .copied()
            .collect();
        report.bytes_deleted = doomed.iter().filter_map(|p| sizes.get(p)).sum();
        report.packs_deleted = doomed.iter().filter(|p| sizes.contains_key(p)).count();
        futures::stream::iter(doomed)
            .map(|p| async move { self.store.delete(&keys::pack(&p)).await })
            .buffer_unordered(16)
            .try_collect::<Vec<()>>()
            .await?;
        self.store.delete(&keys::gc_plan(name)).await?;
        Ok(Ok(report))
    }

    /// Deletes leases that have lapsed (of crashed processes); returns the
    /// ones removed and the ones still live.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn unlock(&self) -> Result<UnlockSummary> {
        let now = self.storage_now().await?;
        let mut removed = Vec::new();
        let mut live = Vec::new();
        for l in self.leases().await? {
            if l.is_live(now) {
                live.push(l.describe());
            } else {
                self.store.delete(&keys::lock(&l.name)).await?;
                removed.push(l.describe());
            }
        }
        Ok(UnlockSummary { removed, live })
    }
}
