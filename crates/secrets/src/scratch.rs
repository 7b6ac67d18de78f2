//! [`Scratch`]: the one place plaintext secrets touch a file system — the
//! file an editor opens during `mortar secrets edit`.
//!
//! An editor needs a path; there is no way around a file. What can be done:
//! put it in a directory only the user can enter (0700), preferably on a
//! memory file system (`$XDG_RUNTIME_DIR`, else `/dev/shm`), overwrite every
//! file in it with zeros and remove it as soon as the editor is done —
//! also when the edit fails. Editors that keep copies elsewhere (a swap or
//! backup directory configured away from the file, undo history files) are
//! outside its reach; docs/secrets.md says how to turn those off.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::error::SecretsError;

/// A private directory holding one plaintext file; wiped and removed on drop.
#[derive(Debug)]
pub struct Scratch {
    dir: Option<tempfile::TempDir>,
    file: PathBuf,
    in_memory: bool,
}

impl Scratch {
    /// Writes `contents` to `<private dir>/<name>` under the first usable
    /// memory-backed base (`$XDG_RUNTIME_DIR`, `/dev/shm`), else under the
    /// system's temporary directory.
    pub fn create(name: &str, contents: &[u8]) -> Result<Scratch, SecretsError> {
        let memory_bases = std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .into_iter()
            .chain([PathBuf::from("/dev/shm")]);
        for base in memory_bases {
            if base.is_dir()
                && let Ok(mut scratch) = Scratch::create_in(&base, name, contents)
            {
                scratch.in_memory = true;
                return Ok(scratch);
            }
        }
        Scratch::create_in(&std::env::temp_dir(), name, contents)
    }

    /// Like [`Scratch::create`], under `base`.
    pub fn create_in(base: &Path, name: &str, contents: &[u8]) -> Result<Scratch, SecretsError> {
        let dir = tempfile::Builder::new()
            .prefix("mortar-secrets-")
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir_in(base)
            .map_err(|source| SecretsError::Io {
                action: "create a private directory in",
                path: base.to_owned(),
                source,
            })?;
        let file = dir.path().join(name);
        let mut scratch = Scratch {
            dir: Some(dir),
            file,
            in_memory: false,
        };
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&scratch.file)
            .and_then(|mut f| f.write_all(contents));
        if let Err(source) = written {
            return Err(SecretsError::Io {
                action: "write",
                path: std::mem::take(&mut scratch.file),
                source,
            });
        }
        Ok(scratch)
    }

    /// The plaintext file, for the editor.
    pub fn path(&self) -> &Path {
        &self.file
    }

    /// Whether it lives on a memory file system (by where it was put).
    pub fn in_memory(&self) -> bool {
        self.in_memory
    }

    /// The file's current contents.
    pub fn read(&self) -> Result<Zeroizing<Vec<u8>>, SecretsError> {
        std::fs::read(&self.file)
            .map(Zeroizing::new)
            .map_err(|source| SecretsError::Io {
                action: "read back",
                path: self.file.clone(),
                source,
            })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let Some(dir) = self.dir.take() else {
            return;
        };
        // The editor may have left backups beside the file: wipe them all.
        wipe_files(dir.path());
        // TempDir's drop removes the directory and what is left in it.
        drop(dir);
    }
}

/// Overwrites every regular file under `dir` with zeros (best effort: a
/// copy-on-write or journaling file system may keep old blocks).
fn wipe_files(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        match entry.file_type() {
            Ok(t) if t.is_dir() => wipe_files(&path),
            Ok(t) if t.is_file() => {
                let len = entry.metadata().map_or(0, |m| m.len());
                if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open(&path) {
                    let zeros = vec![0u8; usize::try_from(len).unwrap_or(0).min(1 << 24)];
                    let _ = f.write_all(&zeros).and_then(|()| f.sync_all());
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_plaintext_lives_in_a_private_directory_that_is_removed() {
        let base = tempfile::tempdir().unwrap();
        let scratch = Scratch::create_in(base.path(), "secrets.toml", b"A = \"1\"\n").unwrap();
        let dir = scratch.path().parent().unwrap().to_owned();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(scratch.path()), 0o600);
        assert_eq!(scratch.read().unwrap().as_slice(), b"A = \"1\"\n");
        // An editor's backup beside it goes too.
        std::fs::write(dir.join("secrets.toml~"), "A = \"0\"\n").unwrap();
        drop(scratch);
        assert!(!dir.exists());
    }

    #[test]
    fn create_prefers_a_memory_file_system() {
        let scratch = Scratch::create("x.toml", b"A = \"1\"").unwrap();
        let base = scratch
            .path()
            .parent()
            .unwrap()
            .parent()
            .unwrap()
            .to_owned();
        let memory: Vec<PathBuf> = std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .into_iter()
            .chain([PathBuf::from("/dev/shm")])
            .collect();
        assert_eq!(scratch.in_memory(), memory.contains(&base), "{base:?}");
        let shm_usable = tempfile::tempdir_in("/dev/shm").is_ok();
        if shm_usable && std::env::var_os("XDG_RUNTIME_DIR").is_none() {
            assert!(scratch.in_memory(), "/dev/shm is used when it is usable");
        }
        assert_eq!(scratch.read().unwrap().as_slice(), b"A = \"1\"");
    }
}
