//! Forget: remove snapshot manifests, by id or by retention policy. Only
//! manifests are deleted; the data only they used is freed by a prune.
//! Deleting a manifest is idempotent, so concurrent forgets are harmless.

use std::collections::BTreeMap;

use cairn_model::SnapshotId;
use cairn_store::keys;
use futures::{StreamExt, TryStreamExt};

use crate::error::{Error, Result};
use crate::repository::{Repository, SnapshotInfo};
use crate::retention::{apply, Candidate, RetentionPolicy};
use crate::services::gc::PruneSummary;

/// How snapshots are grouped before a policy is applied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum GroupBy {
    /// By source (a cluster and its collection filter; a host's files).
    #[default]
    Source,
    /// By the host that made them.
    Host,
    /// By host and the paths (or cluster URLs) given to the backup.
    Paths,
    /// All snapshots in one group.
    Nothing,
}

/// Settings of a forget.
#[derive(Debug, Clone, Default)]
pub struct ForgetOptions {
    /// Snapshots to forget by id (or unique prefix); excludes `policy`.
    pub ids: Vec<String>,
    /// The retention policy.
    pub policy: RetentionPolicy,
    /// Grouping for the policy.
    pub group_by: GroupBy,
    /// Only snapshots of this source.
    pub source: Option<String>,
    /// Only snapshots that carry every one of these tags (a schedule's
    /// retention applies to the backups it made: `schedule:NAME`).
    pub tags: Vec<String>,
    /// Report, delete nothing.
    pub dry_run: bool,
    /// Let a policy remove every snapshot of a group. Without it such a
    /// policy (`--keep-daily 0`, a `--keep-within` shorter than the gap
    /// since the last backup…) is refused: the minimum count of one that
    /// SLM-style retention keeps.
    pub allow_empty: bool,
}

/// What a forget does to one snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Kept.
    Keep,
    /// Removed (or, dry, to remove).
    Remove,
}

/// One snapshot's fate.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ForgetItem {
    /// The snapshot.
    pub id: SnapshotId,
    /// When it was taken.
    #[serde(with = "cairn_model::time::micros")]
    pub time: cairn_model::Time,
    /// Kept or removed.
    pub action: Action,
    /// The rules that keep it, or why it is removed.
    pub reasons: Vec<String>,
}

/// A snapshot whose manifest is under Object Lock.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct LockedSnapshot {
    /// The snapshot.
    pub id: SnapshotId,
    /// Locked until then.
    pub until: chrono::DateTime<chrono::Utc>,
}

/// One group and its snapshots, newest first.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ForgetGroup {
    /// The group key (a source, a host, …).
    #[serde(rename = "group")]
    pub key: String,
    /// Its snapshots.
    #[serde(rename = "snapshots")]
    pub items: Vec<ForgetItem>,
}

/// What a forget did (or, dry, would do); with `--prune`, what the prune
/// did. `forget --json` prints exactly this.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ForgetSummary {
    /// Every group considered.
    pub groups: Vec<ForgetGroup>,
    /// Snapshots removed (or to remove).
    pub removed: Vec<SnapshotId>,
    /// Snapshots the policy removes but Object Lock keeps, with the date
    /// they are locked until: a forget after it removes them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub locked: Vec<LockedSnapshot>,
    /// Nothing was deleted.
    pub dry_run: bool,
    /// The prune that followed (`forget --prune`), if any.
    pub prune: Option<PruneSummary>,
}

fn group_key(info: &SnapshotInfo, by: GroupBy) -> String {
    let s = &info.snapshot;
    match by {
        GroupBy::Source => s.source_key(),
        GroupBy::Host => format!("host {}", s.host),
        GroupBy::Paths => format!("{} {}", s.host, s.source.join(",")),
        GroupBy::Nothing => "all snapshots".into(),
    }
}

impl Repository {
    /// Removes snapshots named by id, or those `policy` does not keep.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for ids together with a policy, or neither;
    /// an id that matches no snapshot; storage errors.
    pub async fn forget(&self, opts: &ForgetOptions) -> Result<ForgetSummary> {
        self.require_read("forget backups")?;
        let named = !opts.ids.is_empty();
        if named && !opts.policy.is_empty() {
            return Err(Error::InvalidArgument(
                "give snapshot ids or retention rules, not both".into(),
            ));
        }
        if !named && opts.policy.is_empty() {
            return Err(Error::NothingToForget);
        }
        let mut groups: BTreeMap<String, Vec<ForgetItem>> = BTreeMap::new();
        if named {
            for spec in &opts.ids {
                if spec == "latest" {
                    return Err(Error::InvalidArgument(
                        "forget takes snapshot ids, not latest".into(),
                    ));
                }
                let info = self.find_snapshot(spec).await?;
                groups
                    .entry(group_key(&info, opts.group_by))
                    .or_default()
                    .push(ForgetItem {
                        id: info.id,
                        time: info.snapshot.time,
                        action: Action::Remove,
                        reasons: vec!["named".into()],
                    });
            }
        } else {
            let mut by_group: BTreeMap<String, Vec<SnapshotInfo>> = BTreeMap::new();
            for info in self.snapshots().await? {
                if opts
                    .source
                    .as_deref()
                    .is_some_and(|s| s != info.snapshot.source_key())
                    || !opts.tags.iter().all(|t| info.snapshot.tags.contains(t))
                {
                    continue;
                }
                by_group
                    .entry(group_key(&info, opts.group_by))
                    .or_default()
                    .push(info);
            }
            for (key, infos) in by_group {
                let candidates: Vec<Candidate> = infos.iter().map(Candidate::from).collect();
                let reasons = apply(&opts.policy, &candidates);
                let mut items: Vec<ForgetItem> = infos
                    .iter()
                    .zip(reasons)
                    .map(|(i, r)| ForgetItem {
                        id: i.id,
                        time: i.snapshot.time,
                        action: if r.is_empty() {
                            Action::Remove
                        } else {
                            Action::Keep
                        },
                        reasons: r,
                    })
                    .collect();
                items.sort_by(|a, b| b.time.cmp(&a.time));
                groups.insert(key, items);
            }
        }
        if !named && !opts.allow_empty {
            let emptied: Vec<&str> = groups
                .iter()
                .filter(|(_, items)| items.iter().all(|i| i.action == Action::Remove))
                .map(|(k, _)| k.as_str())
                .collect();
            if !emptied.is_empty() {
                return Err(Error::KeepsNothing {
                    groups: emptied.join("; "),
                });
            }
        }
        let mut removed: Vec<SnapshotId> = groups
            .values()
            .flatten()
            .filter(|i| i.action == Action::Remove)
            .map(|i| i.id)
            .collect();
        let mut locked = Vec::new();
        if !opts.dry_run {
            // Under Object Lock a locked manifest is never sent a delete.
            let results: Vec<Option<LockedSnapshot>> = futures::stream::iter(removed.clone())
                .map(|id| async move {
                    match self.store.delete(&keys::snapshot(&id)).await {
                        Ok(()) => {
                            // Its drill outcome goes with it (a leftover is
                            // harmless: nothing lists drills of absent snapshots).
                            if let Err(e) = self.store.delete(&keys::drill(&id)).await {
                                tracing::debug!(error = %e, "could not delete a forgotten snapshot's drill record");
                            }
                            Ok(None)
                        }
                        Err(cairn_store::Error::Locked { until, .. }) => {
                            Ok(Some(LockedSnapshot { id, until }))
                        }
                        Err(e) => Err(e),
                    }
                })
                .buffer_unordered(16)
                .try_collect()
                .await?;
            locked = results.into_iter().flatten().collect();
            locked.sort_by_key(|l| l.id);
            removed.retain(|id| !locked.iter().any(|l| l.id == *id));
        }
        Ok(ForgetSummary {
            groups: groups
                .into_iter()
                .map(|(key, items)| ForgetGroup { key, items })
                .collect(),
            removed,
            locked,
            dry_run: opts.dry_run,
            prune: None,
        })
    }
}
