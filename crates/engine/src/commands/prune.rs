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
use cairn_model::{ChunkId, GcPlan, IndexFile, IndexId, PackId, SnapshotId};
use cairn_pack::PackWriter;
use cairn_store::keys;
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};

use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::read::{self, Blob, BlobFault, Fetched};
use crate::repository::{Repository, SnapshotInfo};
use crate::services::gc::{Deferred, PrunePlanSummary, PruneSummary, SweepReport, UnlockSummary};
use crate::services::ingest::store_pack;
use crate::services::mark::{Bits, IndexBatch, IndexScan};

/// Packs repacked per read plan (at most ~4,096 kept blobs each).
const REPACK_BATCH: usize = 256;

/// Settings of a prune.
#[derive(Debug, Clone)]
pub struct PruneOptions {
    /// Repack a pack when more than this share of its bytes is unused (0 to 1).
    pub max_unused: f64,
    /// Print what would be done; change nothing.
    pub dry_run: bool,
    /// A plan is swept only when at least this old (storage time).
    pub grace: Duration,
    /// Bytes of records the mark sorts in memory before it writes a sorted
    /// run to local disk (the cache directory); memory stays about this
    /// plus one bit per index entry, whatever the repository's size.
    pub sort_buffer: usize,
}

impl Default for PruneOptions {
    fn default() -> Self {
        Self {
            max_unused: 0.1,
            dry_run: false,
            grace: Duration::ZERO,
            sort_buffer: crate::services::mark::DEFAULT_SORT_BUFFER,
        }
    }
}

/// "snapshot X, file Y: why" for every file of `snapshots` that cannot be
/// restored: a chunk list unreadable, or an inline chunk in no index file.
fn damaged_files(
    snapshots: &[SnapshotInfo],
    unreadable: &HashMap<ChunkId, String>,
    missing: &HashSet<ChunkId>,
) -> Vec<String> {
    let mut damaged = Vec::new();
    for info in snapshots {
        for file in &info.snapshot.files {
            let mut problem = None;
            for list in &file.chunk_lists {
                if let Some(why) = unreadable.get(list) {
                    problem = Some(why.clone());
                }
            }
            if problem.is_none() {
                if let Some(c) = file.chunks.iter().find(|c| missing.contains(c)) {
                    problem = Some(format!("chunk {c} is in no index file"));
                }
            }
            // A file a repair marked damaged is known to be incomplete:
            // what of it can be read stays, and it blocks nothing.
            if let (Some(why), None) = (problem, &file.damaged) {
                damaged.push(format!(
                    "snapshot {}, file {}: {why}",
                    info.id.short(),
                    file.path
                ));
            }
        }
    }
    damaged
}

impl Repository {
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
        self.require_read("prune")?;
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
        let present: HashMap<PackId, u64> = self.pack_sizes().await?.into_iter().collect();
        let tmp = self.scratch()?;
        let (mut scan, mut needed) = self
            .scan_needs(&snapshots, opts.sort_buffer, tmp.path())
            .await?;
        // Each needed chunk is kept in one place: its first location in a
        // pack that stays, in pack id order. `keep` has a bit per index
        // entry: set where a needed chunk is kept.
        let mut keep = Bits::new(scan.total_entries);
        let mut live = vec![0u64; scan.packs.len()];
        let mut missing: HashSet<ChunkId> = HashSet::new();
        scan.join(&mut needed, |packs, id, places| {
            s.chunks_needed += 1;
            if places.is_empty() {
                missing.insert(id);
                return;
            }
            let best = places
                .iter()
                .map(|p| p.pack)
                .filter(|&o| {
                    let pack = &packs[o as usize].id;
                    present.contains_key(pack) && !already.contains(pack)
                })
                .min_by_key(|&o| packs[o as usize].id);
            if let Some(b) = best {
                for p in places.iter().filter(|p| p.pack == b) {
                    keep.set(packs[b as usize].first_bit + u64::from(p.entry));
                    live[b as usize] += u64::from(p.length);
                }
            }
        })?;
        s.index_entries = scan.total_entries;
        s.scratch_bytes = scan.spilled + needed.spilled;
        let damaged = damaged_files(&snapshots, &needed.unreadable_lists, &missing);
        drop((needed, missing));
        s.damaged.clone_from(&damaged);

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
            let Some(&o) = scan.ordinal.get(pack) else {
                condemned.push(*pack); // no index file names it
                s.packs_unused += 1;
                s.bytes_to_delete += size;
                continue;
            };
            // Unused: blob bytes no snapshot needs here (headers and
            // trailers are not waste; a pack of needed blobs is not repacked).
            let live = live[o as usize];
            let blobs = scan.packs[o as usize].blob_bytes;
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
        self.spare_locked(&mut condemned, &mut repack, &present, &mut s)
            .await?;
        let gone: HashSet<PackId> = condemned
            .iter()
            .chain(&repack)
            .copied()
            .chain(
                scan.packs
                    .iter()
                    .map(|r| r.id)
                    .filter(|p| !present.contains_key(p)),
            )
            .collect();
        let gone_ord: HashSet<u32> = gone
            .iter()
            .filter_map(|p| scan.ordinal.get(p))
            .copied()
            .collect();
        let superseded: Vec<IndexId> = scan
            .files
            .iter()
            .filter(|(_, packs)| packs.iter().any(|p| gone_ord.contains(p)))
            .map(|(n, _)| *n)
            .collect();
        // Kept blobs are read with one plan (neighbours in one request), in
        // pack order, so the new packs do not depend on request timing.
        // Kept blobs are read with one plan per batch of packs (neighbours
        // in one request), in pack order, so the new packs do not depend on
        // request timing and memory holds one batch's blobs.
        let reader = self.reader(None);
        let mut reads = 0u64;
        for batch in repack.chunks(REPACK_BATCH) {
            let kept = self.kept_blobs(&scan, &keep, batch).await?;
            reads += read::plan(kept, &reader.limits).reads.len() as u64;
        }
        s.index_superseded = superseded.len();
        s.requests = reads
            + (s.bytes_to_upload / self.config.pack_size.max(1) + 1) * 2
            + superseded.len() as u64
            + (condemned.len() + repack.len()) as u64
            + 2;
        if opts.dry_run || (condemned.is_empty() && repack.is_empty() && superseded.is_empty()) {
            return Ok((s, None));
        }
        if !damaged.is_empty() {
            // What the damaged files need is not fully known: deleting
            // anything could delete the rest of them.
            return Err(Error::PruneRefused(format!(
                "{} snapshot file(s) could not be read completely (first: {}); run cairn check, then cairn repair snapshots",
                damaged.len(),
                damaged[0]
            )));
        }

        // Repack: live blobs, verified, into new packs (each indexed as
        // written) whose ids are none of the packs going away: the same
        // blobs in the same order would otherwise make the same pack.
        let avoid: HashSet<PackId> = gone.iter().chain(&already).copied().collect();
        progress.start("repack", Some(s.bytes_to_download));
        let mut writer = PackWriter::new().sealed(&self.sealing);
        for batch in repack.chunks(REPACK_BATCH) {
            let kept = self.kept_blobs(&scan, &keep, batch).await?;
            let plan = read::plan(kept, &reader.limits);
            let mut fetched = self.fetch_ordered(plan.reads, &reader, Arc::new(|f: Fetched| f));
            while let Some(f) = fetched.next().await {
                for (i, b) in f.read.blobs.iter().enumerate() {
                    match f.blob(i) {
                        Ok(raw) => match f.stored(i) {
                            // Verified; copied as stored (sealed blobs stay
                            // sealed, compressed ones compressed).
                            Some(stored) => writer.push_stored(b.id, stored, b.raw_length, b.codec),
                            None => writer.push(b.id, raw, None),
                        },
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
                        let full =
                            std::mem::replace(&mut writer, PackWriter::new().sealed(&self.sealing));
                        store_pack(&self.store, full.finish().avoiding(&avoid)).await?;
                    }
                }
                let (a, b) = f.into_buffers();
                reader.buffers.give(a);
                reader.buffers.give(b);
            }
        }
        if !writer.is_empty() {
            store_pack(&self.store, writer.finish().avoiding(&avoid)).await?;
        }
        progress.finish();

        // Index files naming a pack that goes are replaced by ones without
        // it, written as they fill; the first records what is superseded.
        let staying: HashSet<u32> = superseded
            .iter()
            .flat_map(|n| scan.files[n].iter().copied())
            .filter(|o| !gone_ord.contains(o))
            .collect();
        self.index_again(&scan, &staying, IndexBatch::new(superseded.clone()))
            .await?;

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

    /// The blobs kept in `packs` (bits set in `keep`), in pack order.
    async fn kept_blobs(
        &self,
        scan: &IndexScan,
        keep: &Bits,
        packs: &[PackId],
    ) -> Result<Vec<(PackId, Blob)>> {
        let wanted: HashSet<u32> = packs.iter().map(|p| scan.ordinal[p]).collect();
        let mut kept: Vec<(PackId, Blob)> = Vec::new();
        let mut done = HashSet::new();
        let mut files = std::pin::pin!(scan.files_naming(self, &wanted));
        while let Some(file) = files.next().await {
            for (o, g) in scan.pick(file?, &wanted, &mut done) {
                let first = scan.packs[o as usize].first_bit;
                kept.extend(
                    g.entries
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| keep.get(first + *i as u64))
                        .map(|(_, e)| (g.pack, Blob::from(e))),
                );
            }
        }
        kept.sort_by_key(|(p, b)| (*p, b.offset));
        Ok(kept)
    }

    /// Writes the groups of `packs` (read again from the index files that
    /// name them) into new index files through `batch`, which says which of
    /// them record the superseded files (the last, or each).
    async fn index_again(
        &self,
        scan: &IndexScan,
        packs: &HashSet<u32>,
        mut batch: IndexBatch,
    ) -> Result<()> {
        let mut done = HashSet::new();
        let mut files = std::pin::pin!(scan.files_naming(self, packs));
        while let Some(file) = files.next().await {
            let full: Vec<IndexFile> = scan
                .pick(file?, packs, &mut done)
                .into_iter()
                .filter_map(|(_, g)| batch.push(g))
                .collect();
            for file in full {
                self.put_index(&file).await?;
            }
        }
        if let Some(file) = batch.finish() {
            self.put_index(&file).await?;
        }
        Ok(())
    }

    async fn put_index(&self, file: &IndexFile) -> Result<()> {
        let bytes = file.encode();
        let name = IndexId::of(&bytes);
        self.store
            .put_content_addressed(&keys::index(&name), Bytes::from(bytes))
            .await?;
        Ok(())
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
        // A needed chunk whose every existing copy is condemned (by this or
        // another plan) keeps its copies in this plan's packs.
        let mut spared: HashSet<PackId> = HashSet::new();
        if !newer.is_empty() {
            let tmp = self.scratch()?;
            let (mut scan, mut needed) = self
                .scan_needs(&newer, opts.sort_buffer, tmp.path())
                .await?;
            scan.join(&mut needed, |packs, _, places| {
                let existing = places
                    .iter()
                    .map(|p| packs[p.pack as usize].id)
                    .filter(|p| sizes.contains_key(p));
                let mut any = false;
                let mut all = true;
                for p in existing.clone() {
                    any = true;
                    all &= any_plan.contains(&p);
                }
                if any && all {
                    spared.extend(existing.filter(|p| condemned.contains(p)));
                }
            })?;
            if !spared.is_empty() {
                // Index them again before the files that named them go.
                // Every new file records the plan's superseded files (the
                // mark's files already supersede them; they go next): a
                // file naming the same groups as one of them would
                // otherwise be that file, byte for byte and so by name,
                // and be deleted with it, leaving the spared packs
                // unindexed.
                let wanted: HashSet<u32> = spared.iter().map(|p| scan.ordinal[p]).collect();
                self.index_again(
                    &scan,
                    &wanted,
                    IndexBatch::each_superseding(plan.superseded_index.clone()),
                )
                .await?;
            }
        }
        let mut report = SweepReport {
            plan: name.to_string(),
            packs_spared: spared.len(),
            ..SweepReport::default()
        };
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
        // A pack whose lock was extended since the plan is left (unindexed;
        // a prune after its date deletes it).
        let deleted: Vec<bool> = futures::stream::iter(doomed)
            .map(|p| async move {
                match self.store.delete(&keys::pack(&p)).await {
                    Ok(()) => Ok(true),
                    Err(cairn_store::Error::Locked { .. }) => Ok(false),
                    Err(e) => Err(e),
                }
            })
            .buffer_unordered(16)
            .try_collect()
            .await?;
        report.packs_locked = deleted.iter().filter(|d| !**d).count();
        self.store.delete(&keys::gc_plan(name)).await?;
        Ok(Ok(report))
    }

    /// Under Object Lock, takes the packs still locked out of `condemned`
    /// and `repack` (they stay as they are, indexed, until a prune after
    /// their date) and counts them in `s`. One HEAD per candidate.
    async fn spare_locked(
        &self,
        condemned: &mut Vec<PackId>,
        repack: &mut Vec<PackId>,
        present: &HashMap<PackId, u64>,
        s: &mut PrunePlanSummary,
    ) -> Result<()> {
        let Some((lock, _)) = self.locking() else {
            return Ok(());
        };
        let lock = &*lock;
        let now = self.storage_now().await?;
        let candidates: Vec<PackId> = condemned.iter().chain(repack.iter()).copied().collect();
        let locked: HashMap<PackId, DateTime<Utc>> = futures::stream::iter(candidates)
            .map(|p| async move {
                let r = lock.retention(&keys::pack(&p)).await?;
                Ok::<_, Error>(r.and_then(|r| r.until.filter(|&u| u > now)).map(|u| (p, u)))
            })
            .buffer_unordered(16)
            .try_filter_map(|x| async move { Ok(x) })
            .try_collect()
            .await?;
        if locked.is_empty() {
            return Ok(());
        }
        for (list, repacked) in [(&mut *condemned, false), (&mut *repack, true)] {
            list.retain(|p| {
                let Some(until) = locked.get(p) else {
                    return true;
                };
                let size = present.get(p).copied().unwrap_or(0);
                s.bytes_to_delete = s.bytes_to_delete.saturating_sub(size);
                if repacked {
                    s.packs_repacked -= 1;
                } else {
                    s.packs_unused -= 1;
                }
                s.packs_locked += 1;
                s.locked_until = s.locked_until.max(Some(*until));
                false
            });
        }
        Ok(())
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
