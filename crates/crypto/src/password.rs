//! Repository passwords and where they come from. A password is never
//! printed: its `Debug` is a placeholder and errors name only its source.

use std::fmt;
use std::path::PathBuf;

use zeroize::Zeroizing;

use crate::{Error, Result};

/// A password, zeroed when dropped.
#[derive(Clone)]
pub struct Password(Zeroizing<String>);

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(..)")
    }
}

impl Password {
    /// Wraps `s`.
    #[must_use]
    pub fn new(s: String) -> Self {
        Self(Zeroizing::new(s))
    }

    /// Its bytes (UTF-8).
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

/// Where a password is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordSource {
    /// The value of an environment variable (`CAIRN_PASSWORD`).
    Env(String),
    /// The first line of a file.
    File(PathBuf),
    /// The first line a shell command prints (`sh -c`).
    Command(String),
}

impl fmt::Display for PasswordSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Env(v) => write!(f, "${v}"),
            Self::File(p) => write!(f, "password file {}", p.display()),
            Self::Command(c) => write!(f, "password command `{c}`"),
        }
    }
}

/// The first line of `text`, without its line ending; an empty password is
/// refused.
fn first_line(text: Zeroizing<String>, from: &PasswordSource) -> Result<Password> {
    let line = text.lines().next().unwrap_or_default();
    if line.is_empty() {
        return Err(Error::Password(format!("{from} gives an empty password")));
    }
    Ok(Password::new(line.to_string()))
}

impl PasswordSource {
    /// Reads the password.
    ///
    /// # Errors
    /// [`Error::Password`] naming the source (never the password): an unset
    /// variable, an unreadable file, a command that fails, an empty password.
    pub fn read(&self) -> Result<Password> {
        match self {
            Self::Env(var) => match std::env::var(var) {
                Ok(v) if !v.is_empty() => Ok(Password::new(v)),
                Ok(_) => Err(Error::Password(format!("{self} is empty"))),
                Err(_) => Err(Error::Password(format!("{self} is not set"))),
            },
            Self::File(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| Error::Password(format!("cannot read {self}: {e}")))?;
                first_line(Zeroizing::new(text), self)
            }
            Self::Command(cmd) => {
                let out = std::process::Command::new("sh")
                    .arg("-c")
                    .arg(cmd)
                    .stdin(std::process::Stdio::null())
                    .stderr(std::process::Stdio::inherit())
                    .output()
                    .map_err(|e| Error::Password(format!("cannot run {self}: {e}")))?;
                let text = Zeroizing::new(String::from_utf8_lossy(&out.stdout).into_owned());
                if !out.status.success() {
                    return Err(Error::Password(format!("{self} failed: {}", out.status)));
                }
                first_line(text, self)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_read_first_lines_and_name_themselves_on_error() {
        let dir = std::env::temp_dir().join(format!("cairn-pw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("pw");
        std::fs::write(&f, "s3cret\r\nignored\n").unwrap();
        assert_eq!(
            PasswordSource::File(f.clone()).read().unwrap().as_bytes(),
            b"s3cret"
        );
        std::fs::write(&f, "\n").unwrap();
        let e = PasswordSource::File(f.clone())
            .read()
            .unwrap_err()
            .to_string();
        assert!(e.contains("empty"), "{e}");
        assert_eq!(
            PasswordSource::Command("printf 'a b\\n'".into())
                .read()
                .unwrap()
                .as_bytes(),
            b"a b"
        );
        // What a failing command printed (a password, maybe) is not shown.
        let e = PasswordSource::Command("echo $((40 + 2)); exit 3".into())
            .read()
            .unwrap_err()
            .to_string();
        assert!(e.contains("failed") && !e.contains("42"), "{e}");
        let e = PasswordSource::Env("CAIRN_TEST_UNSET_PASSWORD_VAR".into())
            .read()
            .unwrap_err()
            .to_string();
        assert!(e.contains("not set"), "{e}");
        assert_eq!(format!("{:?}", Password::new("x".into())), "Password(..)");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
