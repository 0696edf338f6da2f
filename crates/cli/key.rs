//! `cairn key`: the key objects of an encrypted repository (each wraps the
//! master key, or its write-only part, under one password).

use std::path::PathBuf;

use anyhow::Result;
use cairn_crypto::{Access, KdfParams, Password, PasswordSource};

use crate::global::GlobalArgs;
use crate::repo::open;
use crate::size::parse_size;

/// Argon2id cost of a new key.
#[derive(Debug, Clone, clap::Args)]
pub struct KdfArgs {
    /// Memory the password hash (Argon2id) of a new key uses (8MiB to 4GiB).
    #[arg(long, value_name = "SIZE", value_parser = parse_size, default_value = "64MiB")]
    kdf_memory: u64,
    /// Passes of the password hash of a new key.
    #[arg(long, value_name = "N", default_value_t = KdfParams::default().iterations)]
    kdf_iterations: u32,
}

impl KdfArgs {
    /// The parameters, checked.
    pub fn params(&self) -> Result<KdfParams> {
        let p = KdfParams {
            memory_kib: u32::try_from(self.kdf_memory / 1024).unwrap_or(u32::MAX),
            iterations: self.kdf_iterations,
            parallelism: 1,
        };
        p.validate()
            .map_err(|e| cairn_engine::Error::InvalidArgument(e.to_string()))?;
        Ok(p)
    }
}

/// The environment variable a new key's password may come from.
const NEW_PASSWORD_ENV: &str = "CAIRN_NEW_PASSWORD";

/// Where a new key's password comes from.
#[derive(Debug, clap::Args)]
pub struct NewPasswordArgs {
    /// Read the new password from the first line of FILE (default: the
    /// CAIRN_NEW_PASSWORD environment variable, else asked on the terminal).
    #[arg(long, value_name = "FILE")]
    new_password_file: Option<PathBuf>,
    /// Run CMD (sh -c) and use the first line it prints as the new password.
    #[arg(long, value_name = "CMD", conflicts_with = "new_password_file")]
    new_password_command: Option<String>,
    /// A label to tell this key apart in `key list`.
    #[arg(long, default_value = "")]
    label: String,
    #[command(flatten)]
    kdf: KdfArgs,
}

impl NewPasswordArgs {
    fn new_key(&self, access: Access) -> Result<cairn_engine::NewKey> {
        let given = crate::repo::password_source(
            self.new_password_command.as_deref(),
            self.new_password_file.as_deref(),
            NEW_PASSWORD_ENV,
        );
        let password: Password = match given {
            Some(source) => Some(source.read()),
            None => crate::repo::prompt("the new key's password", true)?.map(Ok),
        }
        // Neither given nor a terminal: reading the unset variable says so.
        .unwrap_or_else(|| PasswordSource::Env(NEW_PASSWORD_ENV.into()).read())
        .map_err(|e| cairn_engine::Error::InvalidArgument(format!(
            "the new key's password: {e} (give --new-password-file, --new-password-command or {NEW_PASSWORD_ENV})"
        )))?;
        Ok(cairn_engine::NewKey {
            password,
            kdf: self.kdf.params()?,
            label: self.label.clone(),
            access,
        })
    }
}

/// `cairn key …`
#[derive(Debug, clap::Subcommand)]
pub enum KeyCommand {
    /// List the keys (one per password).
    List,
    /// Add a key: another password that opens the repository.
    Add {
        /// A write-only key, for backup agents: it backs up (deduplicating
        /// against the whole repository) but cannot restore, list, check or
        /// prune backups, nor manage keys (docs/threat-model.md).
        #[arg(long)]
        write_only: bool,
        #[command(flatten)]
        new: NewPasswordArgs,
    },
    /// Remove a key (not the one this command opens the repository with).
    Remove {
        /// The key's name (a unique prefix will do).
        name: String,
    },
    /// Change the password of the key this command opens the repository
    /// with (a new key is written, then the old one removed).
    Passwd(NewPasswordArgs),
}

pub async fn key(g: &GlobalArgs, c: KeyCommand) -> Result<()> {
    let repo = open(g).await?;
    match c {
        KeyCommand::List => {
            let keys = repo.keys().await?;
            if g.json {
                println!("{}", serde_json::to_string(&keys)?);
            } else {
                for k in keys {
                    println!(
                        "{} {:<10} {:<20} {:<16} {}{}",
                        &k.name,
                        k.access,
                        if k.label.is_empty() { "-" } else { &k.label },
                        k.host,
                        k.created,
                        if k.current { "  (this password)" } else { "" }
                    );
                }
            }
        }
        KeyCommand::Add { write_only, new } => {
            let access = if write_only {
                Access::WriteOnly
            } else {
                Access::Full
            };
            let name = repo.add_key(&new.new_key(access)?).await?;
            if g.json {
                println!(
                    "{}",
                    serde_json::json!({ "added": name, "access": access.to_string() })
                );
            } else {
                println!("added {access} key {name}");
            }
        }
        KeyCommand::Remove { name } => {
            let removed = repo.remove_key(&name).await?;
            if g.json {
                println!("{}", serde_json::json!({ "removed": removed }));
            } else {
                println!("removed key {removed}");
            }
        }
        KeyCommand::Passwd(a) => {
            let (old, new) = repo.change_password(&a.new_key(repo.access())?).await?;
            if g.json {
                println!("{}", serde_json::json!({ "removed": old, "added": new }));
            } else {
                println!("password changed: key {new} replaces {old}");
            }
        }
    }
    Ok(())
}
