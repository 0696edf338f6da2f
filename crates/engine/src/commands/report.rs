//! The cost report: what each backup added, what the repository holds and
//! costs per storage class, what a retention policy frees, where storage and
//! cost go over the next year, what the alternatives would cost, and what a
//! restore costs and takes.
//!
//! # Model
//! - **Stored bytes** are the sizes of the objects listed in the repository.
//!   The backups' added bytes sum to them less the metadata: pack headers
//!   and trailers, index files, manifests, the config and leases.
//! - **Growth** is the median of what each backup after the first added
//!   (stored bytes), times the backups per day (observed, or given).
//! - **Projection** after T days of backups at that rate under the policy:
//!   the kept snapshots are simulated with the policy itself. Stored bytes
//!   are what the latest backup needs in full, plus, for every other kept
//!   snapshot, what changed between it and the next newer kept one: the
//!   daily growth times the days between them, at most a full copy (changes
//!   over a long gap overlap); plus the metadata share observed now.
//! - **Alternatives**, under the same policy: full copies (each kept backup
//!   stored whole, as copying Qdrant snapshots does, plus one upload a
//!   backup) and Qdrant Cloud's rule on Azure (each backup costs half of the
//!   disk usage when it was taken; storage only).
//! - **Restore** of the latest backup: the stored bytes of every chunk it
//!   needs, read in runs of adjacent chunks of at most 8 MiB (one GET each).

use std::collections::{BTreeMap, HashSet};

use cairn_cost::{PriceTable, StorageClass, MONTH_DAYS};
use cairn_model::{shard_of, ChunkId, Requests, SnapshotId};
use cairn_store::keys;
use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use crate::error::Result;
use crate::read::ChunkLists;
use crate::repository::{Repository, SnapshotInfo};
use crate::retention::{apply, Candidate, RetentionPolicy};
use crate::services::materialize::{file_reads, ReadTally};
use crate::services::view::IndexView;

/// Settings of a report.
#[derive(Debug, Clone)]
pub struct ReportOptions {
    /// Prices.
    pub prices: PriceTable,
    /// The retention policy (for what expires and the projection); an empty
    /// policy keeps everything.
    pub policy: RetentionPolicy,
    /// Backups per day for the projection (default: observed, else 1).
    pub backups_per_day: Option<f64>,
    /// Bandwidth for restore time, bytes per second.
    pub bandwidth: u64,
    /// Round trip of one request for restore time, seconds (first byte
    /// latency of the object store).
    pub latency: f64,
    /// Only snapshots of this source.
    pub source: Option<String>,
}

impl Default for ReportOptions {
    fn default() -> Self {
        Self {
            prices: PriceTable::builtin(),
            policy: RetentionPolicy::default(),
            backups_per_day: None,
            bandwidth: 125_000_000,
            latency: 0.02,
            source: None,
        }
    }
}

/// What one collection (or file) of a backup added.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Added {
    /// Collection name, or file path for backups of files.
    pub name: String,
    /// Raw bytes added.
    pub new_bytes: u64,
    /// Stored bytes added.
    pub new_stored_bytes: u64,
    /// Per shard (cluster backups).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shards: Vec<ShardAdded>,
}

/// What one shard of a cluster backup added.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct ShardAdded {
    /// The shard.
    pub shard_id: u32,
    /// Raw bytes added.
    pub new_bytes: u64,
    /// Stored bytes added.
    pub new_stored_bytes: u64,
}

/// A month of keeping the backups in one storage class, three ways.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct ClassProjection {
    /// The storage class.
    pub class: String,
    /// Cairn's repository, US$ a month.
    pub cairn: f64,
    /// Full copies of every kept backup, US$ a month.
    pub full_copies: f64,
    /// Qdrant Cloud's Azure rule, US$ a month.
    pub cloud_azure: f64,
}

/// Restoring from one storage class.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct ClassRestore {
    /// The storage class.
    pub class: String,
    /// Egress, retrieval and requests, US$.
    pub cost: f64,
}

/// One backup.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct BackupRow {
    /// Snapshot id.
    pub id: String,
    /// When.
    #[serde(with = "cairn_model::time::micros")]
    pub time: cairn_model::Time,
    /// Its source.
    pub source: String,
    /// Logical bytes (the files' sizes).
    pub logical_bytes: u64,
    /// Raw bytes of chunks it added.
    pub new_bytes: u64,
    /// Stored bytes it added.
    pub new_stored_bytes: u64,
    /// Logical / new raw bytes (how much it deduplicated).
    pub dedup_ratio: f64,
    /// New raw / new stored bytes.
    pub compression_ratio: f64,
    /// Requests it made.
    pub requests: Requests,
    /// Per collection (cluster backups) or per file.
    pub added: Vec<Added>,
    /// Its latest restore drill, when it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drill: Option<cairn_model::DrillRecord>,
}

/// One source's backups, summed.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct SourceRow {
    /// The source.
    pub source: String,
    /// Its backups.
    pub backups: usize,
    /// The first.
    #[serde(with = "cairn_model::time::micros")]
    pub first: cairn_model::Time,
    /// The latest.
    #[serde(with = "cairn_model::time::micros")]
    pub last: cairn_model::Time,
    /// Logical bytes of the latest backup.
    pub latest_logical_bytes: u64,
    /// Stored bytes its backups added.
    pub added_stored_bytes: u64,
}

/// Object counts and bytes by kind.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct Objects {
    /// Objects.
    pub count: u64,
    /// Bytes.
    pub bytes: u64,
}

/// The repository as listed.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct Totals {
    /// By kind: packs, index, snapshots, other (config, leases, plans).
    pub objects: BTreeMap<String, Objects>,
    /// Sum of every object's size.
    pub stored_bytes: u64,
    /// Sum of the backups' added stored bytes.
    pub added_bytes: u64,
    /// `stored_bytes - added_bytes`: headers, trailers, index, manifests.
    pub metadata_bytes: u64,
    /// Logical bytes of all snapshots.
    pub logical_bytes: u64,
}

/// What the policy would remove and free.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Expiring {
    /// Snapshots the policy removes.
    pub snapshots: usize,
    /// Stored bytes only they need: what the next prune frees.
    pub bytes: u64,
}

/// Observed growth.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Growth {
    /// Backups in the report.
    pub backups: usize,
    /// Days between the first and the last.
    pub days_observed: f64,
    /// Backups per day used for the projection.
    pub backups_per_day: f64,
    /// Median stored bytes a backup adds (after the first).
    pub per_backup: u64,
    /// Stored bytes added per day.
    pub per_day: u64,
    /// Logical bytes of the latest backup.
    pub latest_logical: u64,
    /// Stored bytes the latest backup needs in full.
    pub latest_needs: u64,
}

/// A monthly cost.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct ClassCost {
    /// Class id.
    pub class: String,
    /// Its name.
    pub name: String,
    /// When its prices were read.
    pub as_of: String,
    /// Storage per month.
    pub storage: f64,
    /// Requests per month (at the projected backup rate).
    pub requests: f64,
    /// Early-deletion charges per month (data pruned before the minimum duration).
    pub early_deletion: f64,
    /// Total per month.
    pub total: f64,
}

/// Storage and cost after some days.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct ProjectionPoint {
    /// Days from now.
    pub days: u32,
    /// Snapshots kept then.
    pub kept: usize,
    /// Days those snapshots span.
    pub span_days: f64,
    /// Cairn's stored bytes.
    pub stored_bytes: u64,
    /// Full copies of every kept backup.
    pub full_copies_bytes: u64,
    /// Qdrant Cloud's Azure rule: half of each kept backup's size.
    pub cloud_azure_bytes: u64,
    /// Monthly cost per class.
    pub cost: Vec<ClassProjection>,
}

/// Restoring the latest backup.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct RestoreCost {
    /// The snapshot.
    pub snapshot: String,
    /// Bytes read (stored bytes, with the gaps bridged between them).
    pub bytes: u64,
    /// GET requests.
    pub gets: u64,
    /// Of `bytes`, those no restored file needs.
    pub over_read: u64,
    /// Estimated seconds: `bytes` at `bandwidth`, plus `gets` round trips
    /// of `latency`, `concurrency` at a time.
    pub seconds: f64,
    /// Bandwidth, bytes per second.
    pub bandwidth: u64,
    /// Round trip of one request, seconds.
    pub latency: f64,
    /// Requests a restore keeps in flight.
    pub concurrency: usize,
    /// Per collection (or file).
    pub parts: Vec<RestorePart>,
    /// Cost per class.
    pub cost: Vec<ClassRestore>,
}

/// What restoring one collection (or file) reads.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct RestorePart {
    /// Collection name, or file path.
    pub name: String,
    /// Bytes read.
    pub bytes: u64,
    /// GET requests.
    pub gets: u64,
}

/// The report.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Report {
    /// When it was made.
    #[serde(with = "cairn_model::time::offset")]
    pub generated: cairn_model::Time,
    /// The repository's location.
    pub repository: String,
    /// The repository as listed.
    pub totals: Totals,
    /// Every backup, oldest first.
    pub backups: Vec<BackupRow>,
    /// Per source.
    pub sources: Vec<SourceRow>,
    /// The policy, described.
    pub policy: String,
    /// What the policy frees.
    pub expiring: Option<Expiring>,
    /// Growth.
    pub growth: Growth,
    /// Monthly cost now, per class.
    pub now: Vec<ClassCost>,
    /// At 30, 90 and 365 days.
    pub projection: Vec<ProjectionPoint>,
    /// Restore of the latest backup.
    pub restore: Option<RestoreCost>,
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

fn time_of(info: &SnapshotInfo) -> DateTime<Utc> {
    info.snapshot.time
}

/// Describes a policy ("keep daily 7, weekly 4").
#[must_use]
pub fn describe_policy(p: &RetentionPolicy) -> String {
    let mut parts = Vec::new();
    for (n, v) in [
        ("last", p.last),
        ("hourly", p.hourly),
        ("daily", p.daily),
        ("weekly", p.weekly),
        ("monthly", p.monthly),
        ("yearly", p.yearly),
    ] {
        if let Some(v) = v {
            parts.push(format!("{n} {v}"));
        }
    }
    if let Some(w) = p.within {
        parts.push(format!("within {}d", w.num_days()));
    }
    for t in &p.tags {
        parts.push(format!("tag {t}"));
    }
    if parts.is_empty() {
        "keep everything".into()
    } else {
        format!("keep {}", parts.join(", "))
    }
}

/// When the snapshots a policy keeps were taken, in a schedule of `n`
/// backups, `per_day` a day, ending at `now`; oldest first.
fn kept_times(
    policy: &RetentionPolicy,
    n: usize,
    per_day: f64,
    now: DateTime<Utc>,
) -> Vec<DateTime<Utc>> {
    let step = Duration::milliseconds((86_400_000.0 / per_day.max(1e-6)) as i64);
    let candidates: Vec<Candidate> = (0..n)
        .map(|i| Candidate {
            time: now - step * i32::try_from(i).unwrap_or(i32::MAX),
            tags: Vec::new(),
            complete: true,
        })
        .collect();
    let mut kept: Vec<DateTime<Utc>> = apply(policy, &candidates)
        .iter()
        .zip(&candidates)
        .filter(|(r, _)| !r.is_empty())
        .map(|(_, c)| c.time)
        .collect();
    kept.sort();
    kept
}

fn days(a: DateTime<Utc>, b: DateTime<Utc>) -> f64 {
    (b - a).num_seconds() as f64 / 86_400.0
}

/// The days between each kept snapshot and the next newer kept one.
fn kept_gaps(policy: &RetentionPolicy, n: usize, per_day: f64, now: DateTime<Utc>) -> Vec<f64> {
    kept_times(policy, n, per_day, now)
        .windows(2)
        .map(|w| days(w[0], w[1]))
        .collect()
}

/// How many snapshots the policy keeps, and the days they span.
fn simulate(policy: &RetentionPolicy, n: usize, per_day: f64, now: DateTime<Utc>) -> (usize, f64) {
    let kept = kept_times(policy, n, per_day, now);
    let span = match (kept.first(), kept.last()) {
        (Some(a), Some(b)) => days(*a, *b),
        _ => 0.0,
    };
    (kept.len(), span)
}

impl Repository {
    /// Builds the report (see the module docs).
    ///
    /// # Errors
    /// Storage errors; a manifest or index file that cannot be read is
    /// skipped (and named) as elsewhere.
    pub async fn report(&self, opts: &ReportOptions) -> Result<Report> {
        self.require_read("report on backups")?;
        let started = Utc::now();
        let mut totals = Totals::default();
        for (kind, dir) in [
            ("packs", keys::PACK_DIR),
            ("index", keys::INDEX_DIR),
            ("snapshots", keys::SNAPSHOT_DIR),
            ("leases", keys::LOCK_DIR),
            ("plans", keys::GC_DIR),
            ("runs", keys::RUN_DIR),
            ("keys", keys::KEY_DIR),
        ] {
            let listed = self.store.list(dir).await?;
            let o = totals.objects.entry(kind.into()).or_default();
            o.count += listed.len() as u64;
            o.bytes += listed.iter().map(|l| l.size).sum::<u64>();
        }
        let config = self.store.backend().head(keys::CONFIG).await?;
        totals.objects.insert(
            "config".into(),
            Objects {
                count: 1,
                bytes: config.size,
            },
        );
        totals.stored_bytes = totals.objects.values().map(|o| o.bytes).sum();

        let all = self.snapshots().await?;
        let infos: Vec<SnapshotInfo> = all
            .into_iter()
            .filter(|i| {
                opts.source
                    .as_deref()
                    .is_none_or(|s| s == i.snapshot.source_key())
            })
            .collect();
        let mut drills = self.drills().await?;
        let mut backups = Vec::new();
        for info in &infos {
            let s = &info.snapshot;
            let mut added: BTreeMap<String, Added> = BTreeMap::new();
            for f in &s.files {
                let (name, shard) = match shard_of(&f.path) {
                    Some((c, sh)) => (c.to_string(), Some(sh)),
                    None => (f.path.clone(), None),
                };
                let a = added.entry(name.clone()).or_insert(Added {
                    name,
                    new_bytes: 0,
                    new_stored_bytes: 0,
                    shards: Vec::new(),
                });
                a.new_bytes += f.new_bytes;
                a.new_stored_bytes += f.new_stored_bytes;
                if let Some(sh) = shard {
                    a.shards.push(ShardAdded {
                        shard_id: sh,
                        new_bytes: f.new_bytes,
                        new_stored_bytes: f.new_stored_bytes,
                    });
                }
            }
            let t = &s.totals;
            backups.push(BackupRow {
                id: info.id.to_hex(),
                time: s.time,
                source: s.source_key(),
                logical_bytes: t.bytes,
                new_bytes: t.new_bytes,
                new_stored_bytes: t.new_stored_bytes,
                dedup_ratio: ratio(t.bytes, t.new_bytes),
                compression_ratio: ratio(t.new_bytes, t.new_stored_bytes),
                requests: t.requests,
                added: added.into_values().collect(),
                drill: drills.remove(&info.id.to_hex()),
            });
        }
        let mut sources: BTreeMap<String, SourceRow> = BTreeMap::new();
        for b in &backups {
            let row = sources
                .entry(b.source.clone())
                .or_insert_with(|| SourceRow {
                    source: b.source.clone(),
                    backups: 0,
                    first: b.time,
                    last: b.time,
                    latest_logical_bytes: 0,
                    added_stored_bytes: 0,
                });
            row.backups += 1;
            row.last = b.time;
            row.latest_logical_bytes = b.logical_bytes;
            row.added_stored_bytes += b.new_stored_bytes;
        }
        totals.added_bytes = backups.iter().map(|b| b.new_stored_bytes).sum();
        totals.metadata_bytes = totals.stored_bytes.saturating_sub(totals.added_bytes);
        totals.logical_bytes = backups.iter().map(|b| b.logical_bytes).sum();

        let view = self.index_view().await?;
        let expiring = if opts.policy.is_empty() {
            None
        } else {
            Some(self.expiring(&infos, &opts.policy, &view).await?)
        };
        let latest = infos.last();
        let restore_plan = match latest {
            Some(l) => Some(self.restore_plan(l, &view).await?),
            None => None,
        };

        // Growth.
        let days_observed = match (infos.first(), infos.last()) {
            (Some(a), Some(b)) => (time_of(b) - time_of(a)).num_seconds() as f64 / 86_400.0,
            _ => 0.0,
        };
        let backups_per_day = opts.backups_per_day.unwrap_or_else(|| {
            if infos.len() > 1 && days_observed >= 1.0 {
                (infos.len() - 1) as f64 / days_observed
            } else {
                1.0
            }
        });
        let mut later: Vec<u64> = backups.iter().skip(1).map(|b| b.new_stored_bytes).collect();
        later.sort_unstable();
        let per_backup = later.get(later.len() / 2).copied().unwrap_or(0);
        let growth = Growth {
            backups: backups.len(),
            days_observed,
            backups_per_day,
            per_backup,
            per_day: (per_backup as f64 * backups_per_day) as u64,
            latest_logical: latest.map_or(0, |l| l.snapshot.totals.bytes),
            latest_needs: restore_plan.as_ref().map_or(0, |r| r.bytes),
        };
        let metadata_share = ratio(totals.metadata_bytes, totals.stored_bytes.max(1));
        // LIST is billed with PUTs (S3, GCS class A); HEAD with GETs.
        let puts_per_backup = {
            let mut p: Vec<u64> = backups
                .iter()
                .skip(1)
                .map(|b| b.requests.puts + b.requests.lists)
                .collect();
            p.sort_unstable();
            p.get(p.len() / 2).copied().unwrap_or(0)
        };
        let gets_per_backup = {
            let mut g: Vec<u64> = backups
                .iter()
                .skip(1)
                .map(|b| b.requests.gets + b.requests.heads)
                .collect();
            g.sort_unstable();
            g.get(g.len() / 2).copied().unwrap_or(0)
        };
        let span_now = simulate(
            &opts.policy,
            400 * backups_per_day.ceil() as usize,
            backups_per_day,
            started,
        )
        .1;
        let monthly = |class: &StorageClass, stored: u64| -> ClassCost {
            let storage = class.storage_per_month(stored);
            let backups_month = backups_per_day * MONTH_DAYS;
            let requests = class.requests(
                (puts_per_backup as f64 * backups_month) as u64,
                (gets_per_backup as f64 * backups_month) as u64,
            );
            // What prune deletes each month lived about the policy's span.
            let deleted = (growth.per_day as f64 * MONTH_DAYS) as u64;
            let early = class.early_deletion(deleted, span_now);
            ClassCost {
                class: String::new(),
                name: class.name.clone(),
                as_of: class.as_of.clone(),
                storage,
                requests,
                early_deletion: early,
                total: storage + requests + early,
            }
        };
        let now: Vec<ClassCost> = opts
            .prices
            .classes
            .iter()
            .map(|(id, c)| {
                // Small objects bill at the class's minimum size.
                let billable = totals.stored_bytes + small_object_surcharge(&totals, c);
                let mut cc = monthly(c, billable);
                cc.class.clone_from(id);
                cc
            })
            .collect();

        let projection = [30u32, 90, 365]
            .into_iter()
            .map(|days| {
                let n = ((f64::from(days) + days_observed) * backups_per_day).ceil() as usize;
                let (kept, span) = simulate(&opts.policy, n.max(1), backups_per_day, started);
                let full_data = growth.latest_needs as f64;
                let data = full_data
                    + kept_gaps(&opts.policy, n.max(1), backups_per_day, started)
                        .iter()
                        .map(|g| (growth.per_day as f64 * g).min(full_data))
                        .sum::<f64>();
                let stored = (data / (1.0 - metadata_share).max(0.5)) as u64;
                let full = kept as u64 * growth.latest_logical;
                let azure = full / 2;
                // A full copy a night is one upload of the whole snapshot (in
                // 8 MiB parts when large); Qdrant Cloud's rule prices storage only.
                let copy_puts = growth.latest_logical.div_ceil(8 << 20).max(1) + 2;
                let cost = opts
                    .prices
                    .classes
                    .iter()
                    .map(|(id, c)| {
                        let cairn = monthly(c, stored).total;
                        let copies = c.storage_per_month(full)
                            + c.requests(
                                (copy_puts as f64 * backups_per_day * MONTH_DAYS) as u64,
                                0,
                            );
                        let half = c.storage_per_month(azure);
                        ClassProjection {
                            class: id.clone(),
                            cairn,
                            full_copies: copies,
                            cloud_azure: half,
                        }
                    })
                    .collect();
                ProjectionPoint {
                    days,
                    kept,
                    span_days: span,
                    stored_bytes: stored,
                    full_copies_bytes: full,
                    cloud_azure_bytes: azure,
                    cost,
                }
            })
            .collect();

        let restore = restore_plan.map(|p| {
            let cost = opts
                .prices
                .classes
                .iter()
                .map(|(id, c)| ClassRestore {
                    class: id.clone(),
                    cost: c.read_out(p.bytes, p.gets),
                })
                .collect();
            RestoreCost {
                snapshot: latest.map(|l| l.id.to_hex()).unwrap_or_default(),
                bytes: p.bytes,
                gets: p.gets,
                over_read: p.over_read,
                seconds: cairn_cost::transfer_secs(p.bytes, opts.bandwidth)
                    + p.gets as f64 * opts.latency / p.concurrency.max(1) as f64,
                bandwidth: opts.bandwidth,
                latency: opts.latency,
                concurrency: p.concurrency,
                parts: p.parts,
                cost,
            }
        });

        Ok(Report {
            generated: started,
            repository: self.location().to_string(),
            totals,
            backups,
            sources: sources.into_values().collect(),
            policy: describe_policy(&opts.policy),
            expiring,
            growth,
            now,
            projection,
            restore,
        })
    }

    /// What `policy` removes, and the stored bytes only those snapshots need.
    async fn expiring(
        &self,
        infos: &[SnapshotInfo],
        policy: &RetentionPolicy,
        view: &IndexView,
    ) -> Result<Expiring> {
        let mut by_source: BTreeMap<String, Vec<&SnapshotInfo>> = BTreeMap::new();
        for i in infos {
            by_source
                .entry(i.snapshot.source_key())
                .or_default()
                .push(i);
        }
        let mut removed: HashSet<SnapshotId> = HashSet::new();
        for group in by_source.values() {
            let candidates: Vec<Candidate> = group
                .iter()
                .map(|i| Candidate {
                    time: time_of(i),
                    tags: i.snapshot.tags.clone(),
                    complete: i.snapshot.qdrant.as_ref().is_none_or(|r| !r.partial),
                })
                .collect();
            for (i, r) in group.iter().zip(apply(policy, &candidates)) {
                if r.is_empty() {
                    removed.insert(i.id);
                }
            }
        }
        let kept: Vec<SnapshotInfo> = infos
            .iter()
            .filter(|i| !removed.contains(&i.id))
            .cloned()
            .collect();
        let gone: Vec<SnapshotInfo> = infos
            .iter()
            .filter(|i| removed.contains(&i.id))
            .cloned()
            .collect();
        let mut lists = ChunkLists::new();
        let keep_needs = self.chunks_needed(&kept, view, &mut lists).await;
        let gone_needs = self.chunks_needed(&gone, view, &mut lists).await;
        let bytes = gone_needs
            .difference(&keep_needs)
            .filter_map(|c| view.locations.get(c).and_then(|l| l.first()))
            .map(|(_, e)| u64::from(e.length))
            .sum();
        Ok(Expiring {
            snapshots: removed.len(),
            bytes,
        })
    }

    /// The chunks (and chunk lists) `infos` need; lists already in `lists`
    /// are not read again.
    async fn chunks_needed(
        &self,
        infos: &[SnapshotInfo],
        view: &IndexView,
        lists: &mut ChunkLists,
    ) -> HashSet<ChunkId> {
        let mut out = HashSet::new();
        for info in infos {
            let wanted = info
                .snapshot
                .files
                .iter()
                .flat_map(|f| f.chunk_lists.iter().copied());
            self.read_lists(&view.locations, wanted, lists).await;
            for file in &info.snapshot.files {
                out.extend(file.chunks.iter().copied());
                out.extend(file.chunk_lists.iter().copied());
                // Unreadable lists are skipped (check names them).
                for l in &file.chunk_lists {
                    if let Some(Ok(ids)) = lists.get(l) {
                        out.extend(ids.iter().copied());
                    }
                }
            }
        }
        out
    }

    /// The reads a restore of `info` makes, per part: the restore's own
    /// plan (see [`crate::services::materialize::file_reads`]).
    async fn restore_plan(&self, info: &SnapshotInfo, view: &IndexView) -> Result<RestorePlan> {
        let reader = self.reader(None);
        let limits = reader.limits;
        let locate = |id: &ChunkId| {
            view.locations
                .get(id)
                .and_then(|v| v.first())
                .map(|(pack, e)| (*id, e.locate(*pack)))
        };
        let mut lists = ChunkLists::new();
        let wanted = info
            .snapshot
            .files
            .iter()
            .flat_map(|f| f.chunk_lists.iter().copied());
        self.read_lists(&view.locations, wanted, &mut lists).await;
        let mut parts: BTreeMap<String, ReadTally> = BTreeMap::new();
        for file in &info.snapshot.files {
            let part =
                shard_of(&file.path).map_or_else(|| file.path.clone(), |(c, _)| c.to_string());
            let located_lists: Vec<_> = file.chunk_lists.iter().filter_map(locate).collect();
            // The batches the restore locates chunks in: the inline chunks,
            // then the chunks of each batch of lists.
            let inline = (!file.chunks.is_empty())
                .then(|| file.chunks.iter().filter_map(locate).collect::<Vec<_>>());
            let listed = file
                .chunk_lists
                .chunks(crate::services::materialize::LISTS_PER_BATCH)
                .map(|batch| {
                    batch
                        .iter()
                        .filter_map(|l| lists.get(l).and_then(|r| r.as_ref().ok()))
                        .flatten()
                        .filter_map(locate)
                        .collect::<Vec<_>>()
                });
            let t = file_reads(&located_lists, inline.into_iter().chain(listed), &limits);
            let e = parts.entry(part).or_default();
            e.requests += t.requests;
            e.fetched += t.fetched;
            e.needed += t.needed;
        }
        Ok(RestorePlan {
            bytes: parts.values().map(|p| p.fetched).sum(),
            gets: parts.values().map(|p| p.requests).sum(),
            over_read: parts.values().map(|p| p.fetched - p.needed).sum(),
            concurrency: limits.concurrency,
            parts: parts
                .into_iter()
                .map(|(name, t)| RestorePart {
                    name,
                    bytes: t.fetched,
                    gets: t.requests,
                })
                .collect(),
        })
    }
}

struct RestorePlan {
    bytes: u64,
    gets: u64,
    over_read: u64,
    concurrency: usize,
    parts: Vec<RestorePart>,
}

/// Extra bytes billed because small objects (index files, manifests,
/// leases, the config) bill at the class's minimum object size: estimated
/// from each kind's average object size.
fn small_object_surcharge(t: &Totals, c: &StorageClass) -> u64 {
    t.objects
        .values()
        .filter(|o| o.count > 0)
        .map(|o| {
            let avg = o.bytes / o.count;
            c.min_object_bytes.saturating_sub(avg) * o.count
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_files_map_to_collections() {
        assert_eq!(
            shard_of("collections/docs/shard-2.snapshot"),
            Some(("docs", 2))
        );
        assert_eq!(shard_of("docs/collection.snapshot"), None);
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("test time parses")
            .with_timezone(&Utc)
    }

    #[test]
    fn simulated_retention_spans_the_policy() {
        let p = RetentionPolicy {
            daily: Some(7),
            weekly: Some(4),
            monthly: Some(12),
            ..RetentionPolicy::default()
        };
        // keep-monthly 12 keeps the last backup of this month and of the 11
        // before it, so the span depends on the day of the month: from the
        // end of the month 11 months back to now.
        for (now, oldest) in [
            ("2026-12-02T12:00:00Z", "2026-01-31T12:00:00Z"),
            ("2026-06-30T12:00:00Z", "2025-07-31T12:00:00Z"),
            ("2026-03-01T12:00:00Z", "2025-04-30T12:00:00Z"),
            ("2027-01-31T12:00:00Z", "2026-02-28T12:00:00Z"),
        ] {
            let kept = kept_times(&p, 400, 1.0, at(now));
            assert_eq!(kept.first().copied(), Some(at(oldest)), "now {now}");
            assert_eq!(kept.last().copied(), Some(at(now)), "now {now}");
            let (n, span) = simulate(&p, 400, 1.0, at(now));
            assert!((18..=23).contains(&n), "now {now}: {n} kept");
            assert!((span - days(at(oldest), at(now))).abs() < 1e-9, "{span}");
        }
        let (kept, span) = simulate(
            &RetentionPolicy::default(),
            30,
            1.0,
            at("2026-12-02T12:00:00Z"),
        );
        assert_eq!(kept, 30);
        assert!((28.9..29.1).contains(&span), "{span}");
    }

    #[test]
    fn gaps_between_kept_snapshots() {
        let p = RetentionPolicy {
            daily: Some(3),
            weekly: Some(2),
            ..RetentionPolicy::default()
        };
        let now = at("2026-12-02T12:00:00Z");
        let gaps = kept_gaps(&p, 30, 1.0, now);
        // Two weekly snapshots before the three daily ones: gaps of a day
        // between the dailies, and up to a week back to the weeklies.
        assert_eq!(gaps.len(), simulate(&p, 30, 1.0, now).0 - 1);
        assert!(gaps.iter().all(|g| *g > 0.9 && *g < 7.1), "{gaps:?}");
        assert!((gaps.iter().sum::<f64>() - simulate(&p, 30, 1.0, now).1).abs() < 1e-6);
    }

    #[test]
    fn small_objects_bill_at_the_minimum() {
        let mut t = Totals::default();
        t.objects.insert(
            "index".into(),
            Objects {
                count: 10,
                bytes: 10 * 4096,
            },
        );
        t.objects.insert(
            "packs".into(),
            Objects {
                count: 2,
                bytes: 64 << 20,
            },
        );
        t.stored_bytes = 10 * 4096 + (64 << 20);
        let table = PriceTable::builtin();
        let ia = &table.classes["s3-standard-ia"];
        assert_eq!(small_object_surcharge(&t, ia), 10 * (128 * 1024 - 4096));
        assert_eq!(small_object_surcharge(&t, &table.classes["s3-standard"]), 0);
        let billed = t.stored_bytes + small_object_surcharge(&t, ia);
        let expected =
            (t.stored_bytes + 10 * (128 * 1024 - 4096)) as f64 / cairn_cost::GIB * 0.0125;
        assert!((ia.storage_per_month(billed) - expected).abs() < 1e-12);
    }
}
