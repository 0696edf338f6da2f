//! Opening the repository the global arguments name (`--repo`,
//! `--cache-dir`, their environment variables): every subcommand that reads
//! or writes a repository starts here.

use std::path::PathBuf;

use anyhow::{bail, Result};
use cairn_crypto::{Password, PasswordSource};
use cairn_engine::Repository;

use crate::global::GlobalArgs;

/// The repository location, or an error saying how to give one.
pub fn location(g: &GlobalArgs) -> Result<&str> {
    match g.repo.as_deref() {
        Some(r) if !r.is_empty() => Ok(r),
        _ => bail!(cairn_engine::Error::InvalidArgument(
            "no repository given: use --repo LOCATION or set CAIRN_REPOSITORY".into()
        )),
    }
}

pub fn cache_root(g: &GlobalArgs) -> PathBuf {
    g.cache_dir
        .clone()
        .or_else(|| dirs::cache_dir().map(|d| d.join("cairn")))
        .unwrap_or_else(|| std::env::temp_dir().join("cairn-cache"))
}

/// Where the repository password comes from: `--password-command`,
/// `--password-file`, or `CAIRN_PASSWORD` when set; `None` otherwise.
pub fn password_source(g: &GlobalArgs) -> Option<PasswordSource> {
    if let Some(c) = &g.password_command {
        return Some(PasswordSource::Command(c.clone()));
    }
    if let Some(f) = &g.password_file {
        return Some(PasswordSource::File(f.clone()));
    }
    std::env::var_os(PASSWORD_ENV).map(|_| PasswordSource::Env(PASSWORD_ENV.into()))
}

/// The environment variable that holds the repository password.
pub const PASSWORD_ENV: &str = "CAIRN_PASSWORD";

/// The repository password, when one is given.
///
/// # Errors
/// A source that cannot be read (named; the password never is).
pub fn password(g: &GlobalArgs) -> Result<Option<Password>> {
    password_source(g)
        .map(|s| s.read())
        .transpose()
        .map_err(|e| anyhow::anyhow!(cairn_engine::Error::InvalidArgument(e.to_string())))
}

/// Opens the repository (no local state needed: the cache is rebuilt).
pub async fn open(g: &GlobalArgs) -> Result<Repository> {
    let loc = location(g)?;
    let store = cairn_engine::RepoStore::open(loc, false).map_err(cairn_engine::Error::from)?;
    let repo = Repository::open_with(store, &cache_root(g), password(g)?.as_ref()).await?;
    Ok(match lease_override() {
        Some(d) => repo.with_lease_duration(d),
        None => repo,
    })
}

/// The lease length `CAIRN_LEASE_SECONDS` sets (docs/format.md); shorter
/// only for tests and special setups.
pub fn lease_override() -> Option<std::time::Duration> {
    std::env::var("CAIRN_LEASE_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(std::time::Duration::from_secs)
}
