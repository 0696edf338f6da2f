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

/// Where a password comes from: a command, else a file, else the
/// environment variable `env` when it is set; `None` otherwise.
pub fn password_source(
    command: Option<&str>,
    file: Option<&std::path::Path>,
    env: &str,
) -> Option<PasswordSource> {
    if let Some(c) = command {
        return Some(PasswordSource::Command(c.to_string()));
    }
    if let Some(f) = file {
        return Some(PasswordSource::File(f.to_path_buf()));
    }
    std::env::var_os(env).map(|_| PasswordSource::Env(env.into()))
}

/// The environment variable that holds the repository password.
pub const PASSWORD_ENV: &str = "CAIRN_PASSWORD";

/// The repository password, when one is given.
///
/// # Errors
/// A source that cannot be read (named; the password never is).
pub fn password(g: &GlobalArgs) -> Result<Option<Password>> {
    password_source(
        g.password_command.as_deref(),
        g.password_file.as_deref(),
        PASSWORD_ENV,
    )
    .map(|s| s.read())
    .transpose()
    .map_err(|e| anyhow::anyhow!(cairn_engine::Error::InvalidArgument(e.to_string())))
}

/// Asks for a password on the terminal (without echo) when standard input
/// is one; `None` otherwise. With `confirm`, asks twice.
///
/// # Errors
/// An empty password, two that differ, or a terminal that cannot be read.
pub fn prompt(what: &str, confirm: bool) -> Result<Option<Password>> {
    use std::io::IsTerminal;
    if !std::io::stdin().is_terminal() {
        return Ok(None);
    }
    let first = Password::new(rpassword::prompt_password(format!("{what}: "))?);
    if first.as_bytes().is_empty() {
        bail!(cairn_engine::Error::InvalidArgument(
            "the password is empty".into()
        ));
    }
    if confirm {
        let again = zeroize::Zeroizing::new(rpassword::prompt_password("the same again: ")?);
        if again.as_bytes() != first.as_bytes() {
            bail!(cairn_engine::Error::InvalidArgument(
                "the two passwords differ".into()
            ));
        }
    }
    Ok(Some(first))
}

/// Opens the repository (no local state needed: the cache is rebuilt). An
/// encrypted one without a password given is asked for it on a terminal.
pub async fn open(g: &GlobalArgs) -> Result<Repository> {
    let loc = location(g)?;
    let store = cairn_engine::RepoStore::open(loc, false).map_err(cairn_engine::Error::from)?;
    let given = password(g)?;
    let repo = match Repository::open_with(store.clone(), &cache_root(g), given.as_ref()).await {
        Err(e @ cairn_engine::Error::PasswordRequired { .. }) => {
            match prompt(&format!("password for {loc}"), false)? {
                Some(p) => Repository::open_with(store, &cache_root(g), Some(&p)).await?,
                None => return Err(e.into()),
            }
        }
        r => r?,
    };
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
