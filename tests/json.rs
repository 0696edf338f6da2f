//! `--json` prints the engine's result types exactly: each parses back into
//! its type, field for field.

use cairn_engine::{
    BackupSummary, CheckReport, ForgetSummary, InitSummary, PruneSummary, RepairIndexSummary,
    RepairSnapshotsSummary, RepoStats, Report, RestoreSummary, SnapshotKind, SnapshotRow,
    UnlockSummary,
};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::support::Env;

/// Parses `v` into `T` and back: nothing is lost or added on the way.
pub fn round_trip<T: DeserializeOwned + serde::Serialize>(v: &Value) -> T {
    let parsed: T = serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{e}: {v}"));
    assert_eq!(&serde_json::to_value(&parsed).expect("serializes"), v);
    parsed
}

#[test]
fn init_json_is_the_config_written() {
    let env = Env::local();
    let init: InitSummary = round_trip(&env.json(&["init", "--pack-size", "8MiB"]));
    assert_eq!(init.repository, env.repo);
    assert_eq!(init.config.pack_size, 8 << 20);
    let written: serde_json::Value = serde_json::from_slice(
        &std::fs::read(std::path::Path::new(&env.repo).join("config")).expect("config"),
    )
    .expect("JSON");
    assert_eq!(serde_json::to_value(&init.config).expect("value"), written);
}

#[test]
fn json_output_parses_back_into_the_result_types() {
    let env = Env::local();
    env.init(&[]);
    let input = env.path("in");
    std::fs::create_dir_all(&input).expect("mkdir");
    let data: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(input.join("a.bin"), &data).expect("write");
    let first: BackupSummary = round_trip(&env.backup(&[&input]));
    assert!(!first.dry_run && first.totals.files == 1 && first.totals.bytes == 3_000_000);
    std::fs::write(input.join("a.bin"), &data[..1_000_000]).expect("write");
    let second: BackupSummary = round_trip(&env.backup(&[&input]));
    assert_eq!(second.totals.bytes, 1_000_000);

    let out = env.path("out");
    let restored: RestoreSummary =
        round_trip(&env.json(&["restore", &first.id.to_hex(), out.to_str().expect("utf8")]));
    assert_eq!((restored.files, restored.bytes), (1, 3_000_000));
    assert_eq!(restored.snapshot, first.id.to_hex());
    assert!(
        restored.requests > 0 && restored.bytes_read > 0,
        "{restored:?}"
    );

    let rows: Vec<SnapshotRow> = round_trip(&env.json(&["snapshots"]));
    assert_eq!(rows.len(), 2);
    assert!(rows
        .iter()
        .all(|r| r.kind == SnapshotKind::Files && r.qdrant.is_none()));
    assert!(rows
        .iter()
        .any(|r| r.id == first.id && r.bytes == 3_000_000));
    let stats: RepoStats = round_trip(&env.json(&["stats"]));
    assert_eq!((stats.snapshots, stats.logical_bytes), (2, 4_000_000));

    let check: CheckReport = round_trip(&env.json(&["check", "--read-data"]));
    assert!(check.clean && check.errors.is_empty(), "{check:?}");
    assert_eq!(check.snapshots, 2);
    assert!(check.packs_read > 0);

    let report: Report = round_trip(&env.json(&["report"]));
    assert_eq!(report.backups.len(), 2);
    assert!(report.backups.iter().any(|b| b.logical_bytes == 3_000_000));

    let forget: ForgetSummary = round_trip(&env.json(&["forget", "--keep-last", "1", "--prune"]));
    assert_eq!(forget.removed.len(), 1);
    let prune = forget.prune.expect("--prune ran a prune");
    assert_eq!(prune.mark.snapshots, 1);

    let prune: PruneSummary = round_trip(&env.json(&["prune"]));
    assert_eq!(prune.mark.snapshots, 1);
    assert!(!prune.dry_run);

    let index: RepairIndexSummary = round_trip(&env.json(&["repair", "index"]));
    assert!(index.packs > 0 && index.unreadable.is_empty(), "{index:?}");

    let snaps: RepairSnapshotsSummary =
        round_trip(&env.json(&["repair", "snapshots", "--dry-run"]));
    assert!(snaps.dry_run && snaps.repaired.is_empty(), "{snaps:?}");

    let unlock: UnlockSummary = round_trip(&env.json(&["unlock"]));
    assert!(
        unlock.removed.is_empty() && unlock.live.is_empty(),
        "{unlock:?}"
    );
}
