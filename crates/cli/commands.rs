//! One function per subcommand: map arguments to engine options, call, print.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use cairn_engine::{
    BackupOptions, BackupSource, ChunkSizes, ChunkerParams, Compression, InitOptions, MemberSizes,
    Repository, RestoreOptions, SnapshotFilter,
};

use crate::global::{exit, GlobalArgs};
use crate::progress::Bar;
use crate::repo::{cache_root, location, open};
use crate::size::{human, parse_size};

#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// Average chunk size (a power of two, e.g. 64KiB). Fixed for the repository's life.
    #[arg(long, value_parser = parse_size)]
    avg_chunk_size: Option<u64>,
    /// Minimum chunk size (default: average / 4).
    #[arg(long, value_parser = parse_size)]
    min_chunk_size: Option<u64>,
    /// Maximum chunk size (default: average × 4).
    #[arg(long, value_parser = parse_size)]
    max_chunk_size: Option<u64>,
    /// Target pack size.
    #[arg(long, value_parser = parse_size, default_value = "32MiB")]
    pack_size: u64,
    /// Do not cut chunks at tar member boundaries (plain content-defined chunking).
    #[arg(long)]
    no_tar_aware: bool,
    /// Average chunk size for Qdrant vector storage data (min = /4, max = ×4;
    /// chunks hold whole vectors); 0 chunks vectors like everything else
    /// (format version 1).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    vector_chunk_size: Option<u64>,
    /// zstd level for chunk data (0 stores everything raw).
    #[arg(long, default_value_t = Compression::default().zstd_level, allow_negative_numbers = true)]
    compression_level: i32,
    /// Store data unencrypted (for buckets whose own encryption is all that
    /// is wanted). By default a repository is encrypted with a password
    /// from CAIRN_PASSWORD, --password-file or --password-command.
    #[arg(long)]
    no_encryption: bool,
    /// The AEAD of the data: aes-256-gcm (fast on CPUs with AES
    /// instructions) or xchacha20-poly1305 (faster in software, e.g. on
    /// CPUs without them).
    #[arg(long, value_name = "CIPHER", default_value = "aes-256-gcm",
          value_parser = clap::builder::PossibleValuesParser::new(cairn_model::ENCRYPTION_CIPHERS),
          conflicts_with = "no_encryption")]
    cipher: String,
    /// Keep packs and manifests under S3 Object Lock in this mode
    /// (governance or compliance; the bucket must have Object Lock enabled).
    #[arg(long, value_name = "MODE", value_parser = ["governance", "compliance"])]
    object_lock: Option<String>,
    /// Days each new pack and manifest is locked (`cairn lock extend`
    /// keeps long-kept backups locked for longer).
    #[arg(
        long,
        value_name = "DAYS",
        requires = "object_lock",
        default_value_t = 30
    )]
    lock_days: u32,
    #[command(flatten)]
    kdf: crate::key::KdfArgs,
}

#[derive(Debug, clap::Args)]
pub struct BackupArgs {
    /// Files and directories to back up.
    #[arg(required_unless_present_any = ["stdin", "qdrant", "schedule"], conflicts_with_all = ["stdin", "qdrant", "schedule"])]
    paths: Vec<PathBuf>,
    /// Run schedule NAME of the config once, as the daemon would (its
    /// source, tags and retention; recorded in the run history).
    #[arg(long, value_name = "NAME", conflicts_with_all = ["stdin", "qdrant", "dry_run", "time"])]
    schedule: Option<String>,
    /// The config file that defines --schedule.
    #[arg(long, value_name = "FILE", env = "CAIRN_CONFIG", requires = "schedule")]
    config: Option<PathBuf>,
    /// Read the data to back up from standard input.
    #[arg(long, requires = "stdin_name")]
    stdin: bool,
    /// File name to store standard input under.
    #[arg(long, value_name = "NAME")]
    stdin_name: Option<String>,
    #[command(flatten)]
    cluster: crate::cluster::ClusterBackupArgs,
    /// Tag the snapshot (repeatable).
    #[arg(long = "tag", value_name = "TAG")]
    tags: Vec<String>,
    /// Host name to record (default: this machine's).
    #[arg(long)]
    host: Option<String>,
    /// Read, chunk and look everything up, but write nothing: print what a
    /// real backup would add (bytes, packs, requests) and what it costs.
    #[arg(long, short = 'n')]
    dry_run: bool,
    /// Record this time instead of now (RFC 3339, e.g. 2026-11-20T02:00:00Z),
    /// to import older snapshot files with the time they were taken.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    time: Option<chrono::DateTime<chrono::Utc>>,
    /// Packs uploaded concurrently.
    #[arg(long, value_name = "N", help = format!(
        "Packs uploaded concurrently (default: {} to an object store, {} to a local directory)",
        cairn_engine::OBJECT_STORE_UPLOADS,
        cairn_engine::LOCAL_UPLOADS,
    ))]
    upload_concurrency: Option<usize>,
}

#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    /// Snapshot id (or a unique prefix of it), or `latest` (the newest of its source).
    snapshot: String,
    /// Directory to restore into (created if missing).
    #[arg(required_unless_present = "to_qdrant", conflicts_with = "to_qdrant")]
    target: Option<PathBuf>,
    /// Restore only this file, or the files under this directory of the snapshot.
    #[arg(long, value_name = "PATH")]
    path: Option<String>,
    /// Ranged reads in flight (default: 4 from a local repository, 16 from an object store).
    #[arg(long, value_name = "N")]
    concurrency: Option<usize>,
    /// Do not flush restored files to disk: faster, but after a crash or
    /// power loss a restored file may be incomplete (restore it again).
    #[arg(long)]
    no_sync: bool,
    /// With `latest`: the source whose newest snapshot to take (as `cairn snapshots` shows it).
    #[arg(long, value_name = "SOURCE")]
    source: Option<String>,
    #[command(flatten)]
    cluster: crate::cluster::ClusterRestoreArgs,
}

#[derive(Debug, clap::Args)]
pub struct DumpArgs {
    /// Snapshot id (or a unique prefix of it), or `latest`.
    snapshot: String,
    /// The file's path in the snapshot.
    path: String,
    /// With `latest`: the source whose newest snapshot to take.
    #[arg(long, value_name = "SOURCE")]
    source: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct SnapshotsArgs {
    /// Only snapshots of this source.
    #[arg(long, value_name = "SOURCE")]
    source: Option<String>,
}

const API_KEY_HINT: &str = "give the right key with --qdrant-api-key or QDRANT_API_KEY";

fn unauthorized(kind: &cairn_cluster::QdrantErrorKind) -> bool {
    matches!(kind, cairn_cluster::QdrantErrorKind::Unauthorized { .. })
}

/// The engine's error in a cause of the chain: itself, or inside the
/// cluster crate's (which wraps it transparently).
fn engine_error<'a>(
    cause: &'a (dyn std::error::Error + 'static),
) -> Option<&'a cairn_engine::Error> {
    cause
        .downcast_ref::<cairn_engine::Error>()
        .or_else(|| cause.downcast_ref::<cairn_cluster::Error>()?.engine())
}

/// What to do about an error, in this CLI's options: the engine, the
/// cluster crate and the Qdrant client say what happened, the CLI says
/// which flag changes it.
pub fn remedy(err: &anyhow::Error) -> Option<String> {
    use cairn_cluster::{Error as C, Remedy as R};
    for cause in err.chain() {
        if let Some(c) = cause.downcast_ref::<C>() {
            match c {
                C::Refused {
                    remedy: Some(r), ..
                } => {
                    return Some(match r {
                        R::Force => "pass --force to restore anyway".into(),
                        R::RenameOrForce { collection } => format!(
                            "restore under another name (--collection {collection}:NEWNAME) or pass --force to drop and re-create it"
                        ),
                        R::Rename { collection } => format!(
                            "choose another name with --collection {collection}:NEWNAME (--swap-alias restores into a new collection)"
                        ),
                        R::AllNodes => "give every node's URL with --to-qdrant".into(),
                        R::SelectCollections => "restore other collections with --collection, or restore the files to a directory".into(),
                        _ => return None,
                    })
                }
                C::ShardsFailed { .. } => {
                    return Some("--allow-partial records a partial backup instead".into())
                }
                C::Qdrant(q) if unauthorized(&q.kind) => return Some(API_KEY_HINT.into()),
                _ => {}
            }
        }
        match engine_error(cause) {
            Some(cairn_engine::Error::KeepsNothing { .. }) => {
                return Some(
                    "keep more (e.g. --keep-last 1), or pass --allow-empty to remove them all"
                        .into(),
                )
            }
            Some(cairn_engine::Error::NothingToForget) => {
                return Some("the rules are --keep-last, --keep-hourly, --keep-daily, --keep-weekly, --keep-monthly, --keep-yearly, --keep-within and --keep-tag".into())
            }
            Some(cairn_engine::Error::AmbiguousLatest { .. }) => {
                return Some("choose the source with --source SOURCE".into())
            }
            _ => {}
        }
        // The client's error, or its kind (what a wrapping error exposes).
        let kind = cause
            .downcast_ref::<cairn_cluster::QdrantError>()
            .map(|q| &q.kind)
            .or_else(|| cause.downcast_ref::<cairn_cluster::QdrantErrorKind>());
        if kind.is_some_and(unauthorized) {
            return Some(API_KEY_HINT.into());
        }
    }
    None
}

/// Maps an error to the documented exit code.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    use cairn_engine::Error as E;
    for cause in err.chain() {
        if let Some(cairn_cluster::Error::Verification(_)) = cause.downcast_ref() {
            return exit::INTEGRITY;
        }
        if let Some(e) = engine_error(cause) {
            return match e {
                E::NotARepository { .. }
                | E::NewerFormat { .. }
                | E::AlreadyInitialized { .. }
                | E::PasswordRequired { .. }
                | E::WrongPassword { .. }
                | E::WriteOnlyKey { .. }
                | E::Store(cairn_engine::StoreError::WriteOnly { .. }) => exit::REPOSITORY,
                E::Store(cairn_engine::StoreError::Undecryptable { .. }) => exit::INTEGRITY,
                E::Corrupt { .. } | E::MissingChunk { .. } | E::Malformed { .. } => exit::INTEGRITY,
                E::PacksVanished { .. } | E::PruneRefused(_) => exit::INTEGRITY,
                E::Busy(_) => exit::BUSY,
                E::Interrupted => exit::INTERRUPTED,
                E::Store(cairn_engine::StoreError::InvalidLocation { .. }) => exit::REPOSITORY,
                _ => exit::FAILURE,
            };
        }
    }
    exit::FAILURE
}

pub fn parse_time(s: &str) -> std::result::Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| format!("{s:?} is not an RFC 3339 time ({e}); e.g. 2026-11-20T02:00:00Z"))
}

fn to_u32(v: u64, what: &str) -> Result<u32> {
    u32::try_from(v).with_context(|| format!("{what} is too large"))
}

pub async fn init(g: &GlobalArgs, a: InitArgs) -> Result<()> {
    let loc = location(g)?;
    let avg = to_u32(
        a.avg_chunk_size
            .unwrap_or(u64::from(ChunkerParams::default().avg_size)),
        "average chunk size",
    )?;
    let mut chunker = ChunkerParams::with_average(avg);
    if let Some(min) = a.min_chunk_size {
        chunker.min_size = to_u32(min, "minimum chunk size")?;
    }
    if let Some(max) = a.max_chunk_size {
        chunker.max_size = to_u32(max, "maximum chunk size")?;
    }
    chunker.tar_aware = !a.no_tar_aware;
    match a.vector_chunk_size {
        Some(0) => chunker.members = MemberSizes::default(),
        Some(n) => {
            chunker.members.vectors =
                Some(ChunkSizes::with_average(to_u32(n, "vector chunk size")?));
        }
        None => {}
    }
    if !chunker.tar_aware {
        chunker.members = MemberSizes::default();
    }
    let opts = InitOptions {
        chunker,
        compression: Compression {
            zstd_level: a.compression_level,
            ..Compression::default()
        },
        pack_size: a.pack_size,
        cipher: cairn_crypto::Cipher::from_name(&a.cipher)
            .expect("invariant: clap accepts only known ciphers"),
        object_lock: a.object_lock.map(|mode| cairn_engine::ObjectLock {
            mode,
            days: a.lock_days,
        }),
        encryption: if a.no_encryption {
            None
        } else {
            let given = match crate::repo::password(g)? {
                Some(p) => Some(p),
                None => {
                    crate::repo::prompt(&format!("password for the new repository {loc}"), true)?
                }
            };
            let Some(password) = given else {
                anyhow::bail!(cairn_engine::Error::InvalidArgument(
                    "cairn init encrypts the repository: give it a password with CAIRN_PASSWORD, --password-file FILE or --password-command CMD (or --no-encryption to rely on the storage's own encryption)".into()
                ));
            };
            Some(cairn_engine::NewKey {
                password,
                kdf: a.kdf.params()?,
                label: "first key".into(),
                access: cairn_crypto::Access::Full,
            })
        },
        ..InitOptions::default()
    };
    let store = cairn_engine::RepoStore::open(loc, true).map_err(cairn_engine::Error::from)?;
    let repo = Repository::init(store, opts, &cache_root(g)).await?;
    let c = repo.config();
    if g.json {
        let summary = cairn_engine::InitSummary {
            repository: loc.to_string(),
            config: c.clone(),
        };
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        let vectors = c.chunker.members.vectors.map_or(String::new(), |v| {
            format!(
                ", vector data {}/{}/{} in whole records",
                v.min_size, v.avg_size, v.max_size
            )
        });
        println!(
            "created {} repository {} at {loc} (format version {}; chunks {}/{}/{} bytes{vectors}, zstd level {}, packs {})",
            if c.encryption.is_some() { "encrypted" } else { "unencrypted" },
            c.id.short(),
            c.version,
            c.chunker.min_size,
            c.chunker.avg_size,
            c.chunker.max_size,
            c.compression.zstd_level,
            human(c.pack_size)
        );
    }
    Ok(())
}

/// Sets the returned flag on Ctrl-C or SIGTERM.
pub fn cancel_on_signal(cancel: Arc<std::sync::atomic::AtomicBool>) {
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            Some(()) = async { match term.as_mut() { Some(t) => t.recv().await, None => std::future::pending().await } } => {}
        }
        tracing::warn!("interrupt received: finishing uploads in flight, then stopping");
        cancel.store(true, Ordering::Relaxed);
    });
}

pub async fn backup(g: &GlobalArgs, a: BackupArgs) -> Result<()> {
    if let Some(name) = &a.schedule {
        return crate::daemon::backup_schedule(g, name, a.config.clone()).await;
    }
    let repo = open(g).await?;
    let opts = BackupOptions {
        tags: a.tags.clone(),
        host: a.host.clone(),
        upload_concurrency: a.upload_concurrency,
        dry_run: a.dry_run,
        time: a.time,
        ..BackupOptions::default()
    };
    if !a.cluster.qdrant.is_empty() {
        cancel_on_signal(opts.cancel.clone());
        return crate::cluster::backup(g, &repo, &a.cluster, opts).await;
    }
    let source = if a.stdin {
        BackupSource::Stdin {
            name: a.stdin_name.context("--stdin needs --stdin-name")?,
        }
    } else {
        BackupSource::Paths(a.paths)
    };
    cancel_on_signal(opts.cancel.clone());
    let bar = Arc::new(Bar::new(g));
    let s = repo.backup(source, opts, bar).await?;
    let secs = s.seconds;
    let t = &s.totals;
    if g.json {
        println!("{}", serde_json::to_string(&s)?);
    } else {
        println!(
            "{} {}: {} files, {} read in {:.2}s ({}/s); {}",
            if a.dry_run {
                "dry run, snapshot"
            } else {
                "snapshot"
            },
            if a.dry_run {
                format!("{} not written", s.id.short())
            } else {
                format!("{} saved", s.id.short())
            },
            t.files,
            human(t.bytes),
            secs,
            human((t.bytes as f64 / secs.max(1e-9)) as u64),
            crate::size::added(t)
        );
    }
    Ok(())
}

pub async fn restore(g: &GlobalArgs, a: RestoreArgs) -> Result<()> {
    let repo = open(g).await?;
    let mut filter = SnapshotFilter {
        source: a.source.clone(),
        ..SnapshotFilter::default()
    };
    if !a.cluster.to_qdrant.is_empty() {
        filter.cluster = true;
        filter.collections = a.cluster.collection_names();
        let info = repo.find_snapshot_in(&a.snapshot, &filter).await?;
        return crate::cluster::restore(g, &repo, &info, &a.cluster).await;
    }
    let info = repo.find_snapshot_in(&a.snapshot, &filter).await?;
    let target = a.target.context("a target directory is needed")?;
    let path = match (&a.path, a.cluster.collection_names().as_slice()) {
        (Some(p), _) => Some(p.clone()),
        (None, [one]) if info.snapshot.is_cluster() => Some(format!("collections/{one}")),
        (None, []) => None,
        (None, _) => bail!(cairn_engine::Error::InvalidArgument(
            "restoring to a directory takes one --collection (or --path)".into()
        )),
    };
    let opts = RestoreOptions {
        filter: path,
        concurrency: a.concurrency,
        sync: !a.no_sync,
    };
    let bar = Arc::new(Bar::new(g));
    let s = repo.restore(&info, &target, &opts, bar).await?;
    let secs = s.seconds;
    if g.json {
        println!("{}", serde_json::to_string(&s)?);
    } else {
        println!(
            "restored snapshot {} to {}: {} files, {} in {:.2}s (every chunk verified; read {} in {} requests, {} over-read)",
            info.id.short(),
            target.display(),
            s.files,
            human(s.bytes),
            secs,
            human(s.bytes_read),
            s.requests,
            human(s.over_read)
        );
    }
    Ok(())
}

pub async fn dump(g: &GlobalArgs, a: DumpArgs) -> Result<()> {
    let repo = open(g).await?;
    let filter = SnapshotFilter {
        source: a.source,
        ..SnapshotFilter::default()
    };
    let info = repo.find_snapshot_in(&a.snapshot, &filter).await?;
    repo.dump(&info, &a.path, std::io::stdout()).await?;
    Ok(())
}

pub async fn snapshots(g: &GlobalArgs, a: SnapshotsArgs) -> Result<()> {
    let repo = open(g).await?;
    let list: Vec<_> = repo
        .snapshots()
        .await?
        .into_iter()
        .filter(|i| {
            a.source
                .as_deref()
                .is_none_or(|s| s == i.snapshot.source_key())
        })
        .collect();
    let mut drills = repo.drills().await?;
    if g.json {
        let rows: Vec<cairn_engine::SnapshotRow> = list
            .iter()
            .map(|i| {
                let mut row = cairn_engine::SnapshotRow::from(i);
                row.drill = drills.remove(&i.id.to_hex());
                row
            })
            .collect();
        println!("{}", serde_json::to_string(&rows)?);
        return Ok(());
    }
    println!(
        "{:<10} {:<27} {:<16} {:<30} {:>10} {:>10}  SOURCE",
        "ID", "TIME", "HOST", "CONTENT", "SIZE", "ADDED"
    );
    for i in &list {
        let s = &i.snapshot;
        let content = match &s.qdrant {
            Some(r) => crate::cluster::record_content(r),
            None => format!("{} file(s)", s.totals.files),
        };
        let tags = if s.tags.is_empty() {
            String::new()
        } else {
            format!("  [{}]", s.tags.join(","))
        };
        println!(
            "{:<10} {:<27} {:<16} {:<30} {:>10} {:>10}  {}{tags}",
            i.id.short(),
            crate::size::time(&s.time),
            s.host,
            content,
            human(s.totals.bytes),
            human(s.totals.new_stored_bytes),
            s.source_key(),
        );
        if let Some(r) = &s.qdrant {
            for c in &r.collections {
                println!("{:<10}   {}", "", crate::cluster::collection_line(c));
            }
        }
        if let Some(d) = drills.get(&i.id.to_hex()) {
            println!("{:<10}   {}", "", crate::drill::line(d));
        }
    }
    println!("{} snapshots", list.len());
    Ok(())
}

pub async fn stats(g: &GlobalArgs) -> Result<()> {
    let repo = open(g).await?;
    let s = repo.stats().await?;
    if g.json {
        println!("{}", serde_json::to_string(&s)?);
        return Ok(());
    }
    println!("snapshots:          {}", s.snapshots);
    println!("logical size:       {}", human(s.logical_bytes));
    println!(
        "unique chunk data:  {} in {} chunks",
        human(s.unique_bytes),
        s.unique_chunks
    );
    println!(
        "stored size:        {} ({} packs {}, index {}, manifests {})",
        human(s.total_bytes),
        s.packs,
        human(s.pack_bytes),
        human(s.index_bytes),
        human(s.snapshot_bytes)
    );
    let share = |n: u64| 100.0 * n as f64 / s.total_bytes.max(1) as f64;
    println!(
        "metadata:           {} ({:.2} %: index, manifests, chunk lists {}); pack headers and trailers {} ({:.2} %)",
        human(s.metadata_bytes),
        share(s.metadata_bytes),
        human(s.chunk_list_bytes),
        human(s.pack_overhead_bytes),
        share(s.pack_overhead_bytes)
    );
    println!("dedup ratio:        {:.2}x", s.dedup_ratio);
    println!("compression ratio:  {:.2}x", s.compression_ratio);
    println!("overall:            {:.2}x", s.overall_ratio);
    Ok(())
}
