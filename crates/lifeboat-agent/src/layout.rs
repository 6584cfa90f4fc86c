//! The backup directory hierarchy, as the playbook describes it: `<root>/<policy>/<backup-id>/`
//! with one artifact per asset (and database) and `<asset>.metadata.json`, written last, as the
//! commit marker. A directory without metadata is an unfinished backup: never listed, never
//! restored.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use lifeboat_api::agent_result::{BackupMetadata, METADATA_SCHEMA_VERSION};

use crate::error::{AgentError, Result};

const METADATA_SUFFIX: &str = ".metadata.json";

/// A local (or mounted) backup root.
#[derive(Clone, Debug)]
pub struct Repo {
    root: PathBuf,
}

/// One committed backup of one asset.
#[derive(Clone, Debug)]
pub struct Listed {
    pub id: String,
    pub dir: PathBuf,
    pub metadata: BackupMetadata,
}

impl Repo {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn policy_dir(&self, policy: &str) -> Result<PathBuf> {
        if policy.is_empty() || policy.contains('/') || policy.starts_with('.') {
            return Err(AgentError::config(format!(
                "invalid policy name {policy:?}"
            )));
        }
        Ok(self.root.join(policy))
    }

    /// Claims a new backup directory named after `at` (`20261124T101500Z`, with a suffix when
    /// taken): `create_dir` is atomic, so two runs never share one by accident.
    pub fn claim(&self, policy: &str, at: Timestamp) -> Result<(String, PathBuf)> {
        let parent = self.policy_dir(policy)?;
        fs::create_dir_all(&parent).map_err(|e| AgentError::storage(parent.display(), e))?;
        let base = at.strftime("%Y%m%dT%H%M%SZ").to_string();
        for n in 1..1000 {
            let id = if n == 1 {
                base.clone()
            } else {
                format!("{base}-{n}")
            };
            let dir = parent.join(&id);
            match fs::create_dir(&dir) {
                Ok(()) => return Ok((id, dir)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(AgentError::storage(dir.display(), e)),
            }
        }
        Err(AgentError::config(format!("too many backups named {base}")))
    }

    /// Writes the metadata of `asset` into `dir` atomically: temporary file, fsync, rename,
    /// fsync of the directory. Until the rename, the backup does not exist.
    pub fn commit(&self, dir: &Path, metadata: &BackupMetadata) -> Result<()> {
        let json = serde_json::to_vec_pretty(metadata)
            .map_err(|e| AgentError::config(format!("serializing metadata: {e}")))?;
        let name = format!("{}{METADATA_SUFFIX}", metadata.asset);
        let tmp = dir.join(format!(".{name}.tmp"));
        let path = dir.join(&name);
        let write = || -> std::io::Result<()> {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(&json)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)?;
            fs::File::open(dir)?.sync_all()
        };
        write().map_err(|e| AgentError::storage(path.display(), e))
    }

    /// Every committed backup of `policy`, oldest first. An unreadable or malformed metadata
    /// file is an error, not a silent skip: a listing that hides damage would let retention or a
    /// restore act on a wrong picture.
    pub fn list(&self, policy: &str) -> Result<Vec<Listed>> {
        let parent = self.policy_dir(policy)?;
        let entries = match fs::read_dir(&parent) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(AgentError::storage(parent.display(), e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| AgentError::storage(parent.display(), e))?;
            let dir = entry.path();
            if !dir.is_dir() {
                continue;
            }
            let id = entry.file_name().to_string_lossy().into_owned();
            let files = fs::read_dir(&dir).map_err(|e| AgentError::storage(dir.display(), e))?;
            for file in files {
                let file = file.map_err(|e| AgentError::storage(dir.display(), e))?;
                let name = file.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') || !name.ends_with(METADATA_SUFFIX) {
                    continue;
                }
                let metadata = read_metadata(&file.path())?;
                out.push(Listed {
                    id: id.clone(),
                    dir: dir.clone(),
                    metadata,
                });
            }
        }
        out.sort_by(|a, b| {
            (a.metadata.snapshot_time, &a.id).cmp(&(b.metadata.snapshot_time, &b.id))
        });
        Ok(out)
    }

    /// The backup `id` (or the newest, for `latest`) of `asset`.
    pub fn find(&self, policy: &str, id: &str, asset: &str) -> Result<Listed> {
        let all: Vec<Listed> = self
            .list(policy)?
            .into_iter()
            .filter(|l| l.metadata.asset == asset)
            .collect();
        let found = if id == "latest" {
            all.into_iter().last()
        } else {
            all.into_iter().find(|l| l.id == id)
        };
        found.ok_or_else(|| {
            AgentError::not_found(format!(
                "no complete backup {id:?} of asset {asset:?} in {}",
                self.root.join(policy).display()
            ))
        })
    }
}

/// Reads and checks one metadata file.
pub fn read_metadata(path: &Path) -> Result<BackupMetadata> {
    let text = fs::read(path).map_err(|e| AgentError::storage(path.display(), e))?;
    let m: BackupMetadata = serde_json::from_slice(&text).map_err(|e| {
        AgentError::integrity(format!("{}: malformed metadata: {e}", path.display()))
    })?;
    if m.schema_version != METADATA_SCHEMA_VERSION {
        return Err(AgentError::integrity(format!(
            "{}: metadata schema version {} is not {METADATA_SCHEMA_VERSION}",
            path.display(),
            m.schema_version
        )));
    }
    for a in &m.artifacts {
        if a.name.contains('/') || a.name.starts_with('.') {
            return Err(AgentError::integrity(format!(
                "{}: artifact name {:?} escapes the backup",
                path.display(),
                a.name
            )));
        }
    }
    Ok(m)
}

impl Repo {
    /// Deletes one asset's backup: its metadata first (so a half-deleted backup is never listed
    /// as complete), then its artifacts, then the directory if nothing else is left in it.
    pub fn remove(&self, listed: &Listed) -> Result<()> {
        let meta = listed
            .dir
            .join(format!("{}{METADATA_SUFFIX}", listed.metadata.asset));
        fs::remove_file(&meta).map_err(|e| AgentError::storage(meta.display(), e))?;
        for a in &listed.metadata.artifacts {
            let path = listed.dir.join(&a.name);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(AgentError::storage(path.display(), e)),
            }
        }
        let _ = fs::remove_dir(&listed.dir); // only succeeds when empty
        Ok(())
    }
}
