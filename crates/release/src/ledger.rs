//! The append-only ledger of releases and the store of their files.
//!
//! On disk, under `<data dir>/releases/`:
//!
//! ```text
//! ledger.jsonl        one Release per line, each naming the hash of the line before
//! blobs/<sha256>      a read-only copy of every recorded file
//! ```

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use mortar_manifest::Manifest;

use crate::ReleaseError;
use crate::digest;
use crate::release::{Artifact, Content, Release, ServiceRelease};

/// Digits of the content digest that make a release id.
const ID_LEN: usize = 12;

/// The releases of one data directory.
#[derive(Debug, Clone)]
pub struct Ledger {
    dir: PathBuf,
}

impl Ledger {
    /// The ledger of the data directory `data_dir` (created on first record).
    pub fn open(data_dir: &Path) -> Ledger {
        Ledger {
            dir: data_dir.join("releases"),
        }
    }

    fn file(&self) -> PathBuf {
        self.dir.join("ledger.jsonl")
    }

    fn blobs(&self) -> PathBuf {
        self.dir.join("blobs")
    }

    /// Where the stored copy of `artifact` is.
    pub fn artifact_path(&self, artifact: &Artifact) -> PathBuf {
        self.blobs().join(&artifact.sha256)
    }

    /// Every release, oldest first, after checking the hash chain.
    pub fn list(&self) -> Result<Vec<Release>, ReleaseError> {
        Ok(self.read()?.into_iter().map(|(r, _)| r).collect())
    }

    /// The release `id` (a prefix of at least 4 digits is enough when unique).
    pub fn get(&self, id: &str) -> Result<Release, ReleaseError> {
        let unknown = || ReleaseError::Unknown { id: id.to_owned() };
        if id.len() < 4 {
            return Err(unknown());
        }
        let mut found = self.list()?.into_iter().filter(|r| r.id.starts_with(id));
        match (found.next(), found.next()) {
            (Some(release), None) => Ok(release),
            _ => Err(unknown()),
        }
    }

    /// Releases with the hash of their ledger line.
    fn read(&self) -> Result<Vec<(Release, String)>, ReleaseError> {
        let path = self.file();
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(ReleaseError::io(&path, e)),
        };
        let mut out: Vec<(Release, String)> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let corrupt = |detail: String| ReleaseError::Corrupt {
                path: path.clone(),
                line: i + 1,
                detail,
            };
            let release: Release = serde_json::from_str(line)
                .map_err(|e| corrupt(format!("not a release record ({e})")))?;
            let expected_prev = out.last().map(|(_, hash)| hash.clone());
            if release.prev != expected_prev {
                return Err(corrupt(
                    "its link to the line before does not match (a line was edited, removed or reordered)"
                        .to_owned(),
                ));
            }
            let content_id = id_of(&release.app, &release.manifest_sha256, &release.services)?;
            if release.id != content_id || release.seq != i as u64 + 1 {
                return Err(corrupt(format!(
                    "release {} does not match its content (expected id {content_id}, seq {})",
                    release.id,
                    i + 1
                )));
            }
            out.push((release, digest::of_bytes(line.as_bytes())));
        }
        Ok(out)
    }

    /// Records the release of `manifest` as it is on disk now: stores every
    /// file its services' commands name and appends the release. Returns
    /// the release and whether it is new (recording unchanged content again
    /// returns the existing release).
    pub fn record(&self, manifest: &Manifest) -> Result<(Release, bool), ReleaseError> {
        let manifest_bytes =
            std::fs::read(&manifest.path).map_err(|e| ReleaseError::io(&manifest.path, e))?;
        let manifest_sha256 = digest::of_bytes(&manifest_bytes);
        let mut services = Vec::new();
        for service in &manifest.services {
            let mut artifacts = Vec::new();
            for (source, named) in files_named(manifest, &service.name, &service.command)? {
                let (sha256, bytes) = digest::of_file(&source)?;
                artifacts.push(Artifact {
                    named,
                    source: source.display().to_string(),
                    sha256,
                    bytes,
                });
            }
            services.push(ServiceRelease {
                name: service.name.clone(),
                command: service.command.clone(),
                env: service.env.clone(),
                instances: service.instances,
                artifacts,
            });
        }
        let id = id_of(&manifest.app.name, &manifest_sha256, &services)?;
        let existing = self.read()?;
        if let Some((release, _)) = existing.iter().find(|(r, _)| r.id == id) {
            return Ok((release.clone(), false));
        }
        std::fs::create_dir_all(self.blobs()).map_err(|e| ReleaseError::io(self.blobs(), e))?;
        for service in &services {
            for artifact in &service.artifacts {
                self.store(Path::new(&artifact.source), artifact)?;
            }
        }
        let release = Release {
            id,
            seq: existing.len() as u64 + 1,
            created_at: now_rfc3339(),
            app: manifest.app.name.clone(),
            manifest_sha256,
            services,
            prev: existing.last().map(|(_, hash)| hash.clone()),
        };
        self.append(&release)?;
        Ok((release, true))
    }

    /// Checks that every stored file of `release` still has its digest.
    pub fn verify(&self, release: &Release) -> Result<(), ReleaseError> {
        for artifact in release.services.iter().flat_map(|s| &s.artifacts) {
            let path = self.artifact_path(artifact);
            let (sha256, _) = digest::of_file(&path)?;
            if sha256 != artifact.sha256 {
                return Err(ReleaseError::Tampered {
                    path,
                    digest: artifact.sha256.clone(),
                });
            }
        }
        Ok(())
    }

    /// Copies `source` to the blob store under its digest (once), read-only.
    fn store(&self, source: &Path, artifact: &Artifact) -> Result<(), ReleaseError> {
        let target = self.artifact_path(artifact);
        if target.exists() {
            return Ok(());
        }
        let partial = target.with_extension("partial");
        std::fs::copy(source, &partial).map_err(|e| ReleaseError::io(source, e))?;
        let (sha256, _) = digest::of_file(&partial)?;
        if sha256 != artifact.sha256 {
            let _ = std::fs::remove_file(&partial);
            return Err(ReleaseError::Tampered {
                path: source.to_owned(),
                digest: artifact.sha256.clone(),
            });
        }
        let sync = |p: &Path| {
            File::open(p)
                .and_then(|f| f.sync_all())
                .map_err(|e| ReleaseError::io(p, e))
        };
        sync(&partial)?;
        let mut perms = std::fs::metadata(&partial)
            .map_err(|e| ReleaseError::io(&partial, e))?
            .permissions();
        perms.set_readonly(true);
        std::fs::set_permissions(&partial, perms).map_err(|e| ReleaseError::io(&partial, e))?;
        std::fs::rename(&partial, &target).map_err(|e| ReleaseError::io(&target, e))?;
        sync(&self.blobs())
    }

    /// Appends one line and fsyncs it (and the directory, for a new file).
    fn append(&self, release: &Release) -> Result<(), ReleaseError> {
        let path = self.file();
        let line = serde_json::to_string(release).map_err(|e| ReleaseError::Corrupt {
            path: path.clone(),
            line: release.seq as usize,
            detail: e.to_string(),
        })?;
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| ReleaseError::io(&path, e))?;
        file.write_all(format!("{line}\n").as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| ReleaseError::io(&path, e))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| ReleaseError::io(&self.dir, e))
    }
}

/// The id of a release's content.
fn id_of(
    app: &str,
    manifest_sha256: &str,
    services: &[ServiceRelease],
) -> Result<String, ReleaseError> {
    let content = Content {
        app,
        manifest_sha256,
        services,
    };
    let bytes = serde_json::to_vec(&content).map_err(|e| ReleaseError::Corrupt {
        path: PathBuf::new(),
        line: 0,
        detail: e.to_string(),
    })?;
    Ok(digest::of_bytes(&bytes)[..ID_LEN].to_owned())
}

/// The files a command names: its program (relative to the manifest's
/// directory when it has a `/`, else found on `PATH`) and every argument
/// that is a file in the manifest's directory (a script, a config file).
fn files_named(
    manifest: &Manifest,
    service: &str,
    command: &[String],
) -> Result<Vec<(PathBuf, String)>, ReleaseError> {
    let mut out = Vec::new();
    let Some(program) = command.first() else {
        return Ok(out);
    };
    let resolved = if program.contains('/') {
        Some(manifest.dir.join(program)).filter(|p| p.is_file())
    } else {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(program))
                .find(|p| p.is_file())
        })
    };
    let resolved = resolved.ok_or_else(|| ReleaseError::MissingProgram {
        service: service.to_owned(),
        program: program.clone(),
        dir: manifest.dir.display().to_string(),
    })?;
    out.push((resolved, program.clone()));
    for arg in &command[1..] {
        let candidate = manifest.dir.join(arg);
        if !arg.starts_with('-') && candidate.is_file() {
            out.push((candidate, arg.clone()));
        }
    }
    Ok(out)
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A manifest in `dir` whose one service runs `prog` from there.
    fn manifest(dir: &Path, program: &[u8]) -> Manifest {
        std::fs::write(dir.join("prog"), program).unwrap();
        std::fs::write(dir.join("job.py"), b"print('hi')").unwrap();
        let path = dir.join("mortar.toml");
        std::fs::write(
            &path,
            "[app]\nname = \"demo\"\n\n[services.api]\ncommand = [\"./prog\", \"job.py\", \"--flag\"]\nenv = { MODE = \"fast\" }\n",
        )
        .unwrap();
        Manifest::load(&path).unwrap()
    }

    #[test]
    fn records_digests_and_copies_and_the_same_content_is_the_same_release() {
        let dir = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(data.path());
        let (first, new) = ledger.record(&manifest(dir.path(), b"v1")).unwrap();
        assert!(new);
        assert_eq!(first.seq, 1);
        let api = &first.services[0];
        assert_eq!(api.env["MODE"], "fast");
        let named: Vec<&str> = api.artifacts.iter().map(|a| a.named.as_str()).collect();
        assert_eq!(named, ["./prog", "job.py"]);
        assert_eq!(api.artifacts[0].sha256, digest::of_bytes(b"v1"));
        assert_eq!(
            std::fs::read(ledger.artifact_path(&api.artifacts[0])).unwrap(),
            b"v1"
        );

        let (again, new) = ledger.record(&manifest(dir.path(), b"v1")).unwrap();
        assert!(!new);
        assert_eq!(again, first);

        let (second, new) = ledger.record(&manifest(dir.path(), b"v2")).unwrap();
        assert!(new);
        assert_ne!(second.id, first.id);
        assert_eq!(second.seq, 2);
        let list = ledger.list().unwrap();
        assert_eq!(list, vec![first.clone(), second.clone()]);
        assert_eq!(ledger.get(&first.id[..6]).unwrap(), first);
        // The old release's program is still there, unchanged: a rollback target.
        ledger.verify(&first).unwrap();
        assert!(matches!(
            ledger.get("zzzzzz"),
            Err(ReleaseError::Unknown { .. })
        ));
    }

    #[test]
    fn an_edited_ledger_or_stored_file_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(data.path());
        let (first, _) = ledger.record(&manifest(dir.path(), b"v1")).unwrap();
        ledger.record(&manifest(dir.path(), b"v2")).unwrap();
        let file = data.path().join("releases/ledger.jsonl");
        let text = std::fs::read_to_string(&file).unwrap();
        std::fs::write(
            &file,
            text.replace("\"MODE\":\"fast\"", "\"MODE\":\"slow\""),
        )
        .unwrap();
        let error = ledger.list().unwrap_err().to_string();
        assert!(error.contains("line 1"), "{error}");
        std::fs::write(&file, &text).unwrap();
        let first_lines: Vec<&str> = text.lines().collect();
        std::fs::write(&file, format!("{}\n", first_lines[1])).unwrap();
        assert!(
            ledger.list().is_err(),
            "a removed first line breaks the chain"
        );
        std::fs::write(&file, &text).unwrap();

        let blob = ledger.artifact_path(&first.services[0].artifacts[0]);
        let mut perms = std::fs::metadata(&blob).unwrap().permissions();
        assert!(perms.readonly());
        #[allow(clippy::permissions_set_readonly_false)]
        perms.set_readonly(false);
        std::fs::set_permissions(&blob, perms).unwrap();
        std::fs::write(&blob, b"evil").unwrap();
        assert!(matches!(
            ledger.verify(&first),
            Err(ReleaseError::Tampered { .. })
        ));
    }

    #[test]
    fn a_missing_program_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        let m = manifest(dir.path(), b"v1");
        std::fs::remove_file(dir.path().join("prog")).unwrap();
        let error = Ledger::open(data.path())
            .record(&m)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("\"api\"") && error.contains("./prog"),
            "{error}"
        );
        assert!(!data.path().join("releases/ledger.jsonl").exists());
    }
}
