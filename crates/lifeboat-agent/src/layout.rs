//! Where backups live, as the playbook describes the hierarchy: `<root>/<policy>/<backup-id>/`
//! with one artifact per asset (and database) and `<asset>.metadata.json`, written last, as the
//! commit marker. A backup without metadata is unfinished: never listed, never restored.
//!
//! Two stores: a local directory (a volume inside Jobs) and S3-compatible object storage, through
//! object_store (multipart uploads stream; a PUT of the metadata object is atomic). The agent is
//! synchronous; the S3 store drives object_store on a small runtime of its own.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use jiff::Timestamp;
use lifeboat_api::agent_result::{BackupMetadata, METADATA_SCHEMA_VERSION, VerificationRecord};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::error::{AgentError, Result};
use crate::stream::{self, Encoding, Stored};

const METADATA_SUFFIX: &str = ".metadata.json";
/// `<asset>.verified.json`: a [`VerificationRecord`], written after the metadata.
const VERIFIED_SUFFIX: &str = ".verified.json";

/// Size of one multipart-upload part.
const UPLOAD_PART_BYTES: usize = 8 * 1024 * 1024;
/// Parts uploading at once.
const UPLOAD_PARTS_IN_FLIGHT: usize = 3;

/// Every S3 request is bounded: a connection within this, an answer within
/// [`S3_REQUEST_TIMEOUT`] (`LIFEBOAT_S3_REQUEST_TIMEOUT`), retries of a failed or unanswered
/// request only until [`S3_RETRY_TIMEOUT`] after the first attempt (`LIFEBOAT_S3_RETRY_TIMEOUT`).
/// An endpoint that accepts a connection and never answers thus fails the run in minutes, not at
/// the Job's deadline. The values are object_store's own defaults, named here so the bound is
/// the agent's decision and the platform team can move it (a part of 8 MiB must fit in one
/// request's time on the slowest link).
const S3_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
const S3_REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
const S3_RETRY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(180);

/// `var` as a duration (`30s`, `2m`), or `default` when unset.
fn env_duration(var: &str, default: std::time::Duration) -> Result<std::time::Duration> {
    match std::env::var(var) {
        Ok(v) => v
            .parse::<lifeboat_api::duration::Duration>()
            .map(|d| d.as_std())
            .map_err(|e| AgentError::config(format!("{var}={v:?}: {e}"))),
        Err(_) => Ok(default),
    }
}

/// Where backups are stored.
pub enum Store {
    Local(PathBuf),
    S3(S3Store),
}

/// A claimed backup directory (`<policy>/<id>`).
#[derive(Clone, Debug)]
pub struct Slot {
    pub id: String,
    pub policy: String,
}

/// One committed backup of one asset.
#[derive(Clone, Debug)]
pub struct Listed {
    pub id: String,
    pub slot: Slot,
    pub metadata: BackupMetadata,
    /// Set once the backup has been proven readable (`verify --record`, a drill).
    pub verified: Option<VerificationRecord>,
}

/// What an unfinished backup left of one asset.
#[derive(Clone, Debug)]
pub struct Leftover {
    pub slot: Slot,
    pub files: Vec<String>,
    /// The newest modification of anything in that backup (all assets).
    pub newest: Timestamp,
}

/// A backup's artifacts as local files (the directory itself, or a downloaded copy).
pub struct Local {
    pub dir: PathBuf,
    _download: Option<tempfile::TempDir>,
}

pub struct S3Store {
    pub(crate) store: Arc<dyn ObjectStore>,
    prefix: String,
    pub(crate) rt: tokio::runtime::Runtime,
    pub(crate) what: String,
    role: S3Role,
}

/// What a bucket is to the agent, which decides what an unreachable endpoint means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum S3Role {
    /// Where backups are stored: failing to reach it is a Storage failure.
    Backups,
    /// An asset's data (a source to back up, a target to restore into): failing to reach it is
    /// SourceUnreachable, like a database that does not answer.
    Data,
}

/// Settings of an S3-compatible store, credentials already read from their files.
pub struct S3Settings {
    pub endpoint: String,
    pub bucket: String,
    pub prefix: String,
    pub region: String,
    pub path_style: bool,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub role: S3Role,
}

impl S3Store {
    pub fn new(s: S3Settings) -> Result<Self> {
        let store = object_store::aws::AmazonS3Builder::new()
            .with_endpoint(&s.endpoint)
            .with_bucket_name(&s.bucket)
            .with_region(&s.region)
            .with_access_key_id(&s.access_key_id)
            .with_secret_access_key(&s.secret_access_key)
            // Before with_allow_http, which sets a field of these options.
            .with_client_options(
                object_store::ClientOptions::new()
                    .with_connect_timeout(S3_CONNECT_TIMEOUT)
                    .with_timeout(env_duration(
                        "LIFEBOAT_S3_REQUEST_TIMEOUT",
                        S3_REQUEST_TIMEOUT,
                    )?),
            )
            .with_allow_http(s.endpoint.starts_with("http://"))
            .with_virtual_hosted_style_request(!s.path_style)
            .with_retry(object_store::RetryConfig {
                retry_timeout: env_duration("LIFEBOAT_S3_RETRY_TIMEOUT", S3_RETRY_TIMEOUT)?,
                ..Default::default()
            })
            .build()
            .map_err(|e| {
                AgentError::config(format!("S3 store {} at {}: {e}", s.bucket, s.endpoint))
            })?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| AgentError::config(format!("runtime: {e}")))?;
        Ok(Self {
            store: Arc::new(store),
            prefix: s.prefix.trim_matches('/').to_owned(),
            rt,
            what: format!("s3://{}/{}", s.bucket, s.prefix.trim_matches('/')),
            role: s.role,
        })
    }

    /// The key prefix inside the bucket, without slashes at either end ("" for the whole bucket).
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    pub(crate) fn key(&self, parts: &[&str]) -> ObjectPath {
        let mut all: Vec<&str> = Vec::new();
        if !self.prefix.is_empty() {
            all.push(&self.prefix);
        }
        all.extend(parts);
        ObjectPath::from(all.join("/"))
    }

    /// `e` classified again from its text when the stream called it a Storage failure: errors
    /// of the source keep their class.
    pub(crate) fn reclassify(&self, e: AgentError) -> AgentError {
        if e.class == lifeboat_api::agent_result::ErrorClass::Storage {
            AgentError::new(classify(&e.message, self.role), e.message)
        } else {
            e
        }
    }

    /// An object_store error, classified from its text (object_store does not expose the HTTP
    /// status or the transport error kind in a stable way).
    pub(crate) fn err(&self, e: impl std::fmt::Display) -> AgentError {
        let text = e.to_string();
        AgentError::new(classify(&text, self.role), format!("{}: {text}", self.what))
    }

    /// A streaming upload of `key` (a multipart upload once it outgrows one part; nothing is
    /// visible in the bucket until [`UploadWriter::finish`]).
    ///
    /// Memory is bounded by part size × parts in flight: object_store's default (10 MiB × 8)
    /// would hold up to 90 MiB; 8 MiB parts (S3's minimum is 5 MiB), at most 3 uploading while the
    /// next fills, keep the agent near 32 MiB of buffers whatever the artifact's size, and 3
    /// parallel parts already saturate a loopback or in-region link.
    pub(crate) fn upload(&self, key: ObjectPath) -> UploadWriter<'_> {
        UploadWriter {
            rt: &self.rt,
            inner: object_store::buffered::BufWriter::with_capacity(
                self.store.clone(),
                key,
                UPLOAD_PART_BYTES,
            )
            .with_max_concurrency(UPLOAD_PARTS_IN_FLIGHT),
        }
    }

    fn keys_under(&self, parts: &[&str]) -> Result<Vec<ObjectPath>> {
        let prefix = self.key(parts);
        self.rt
            .block_on(
                self.store
                    .list(Some(&prefix))
                    .map_ok(|m| m.location)
                    .try_collect::<Vec<_>>(),
            )
            .map_err(|e| self.err(e))
    }
}

/// A synchronous `Write` over object_store's streaming multipart writer.
pub(crate) struct UploadWriter<'a> {
    rt: &'a tokio::runtime::Runtime,
    inner: object_store::buffered::BufWriter,
}

impl UploadWriter<'_> {
    pub(crate) fn with_attributes(self, attributes: object_store::Attributes) -> Self {
        Self {
            rt: self.rt,
            inner: self.inner.with_attributes(attributes),
        }
    }

    /// Completes the upload: the object appears.
    pub(crate) fn finish(mut self) -> std::result::Result<(), std::io::Error> {
        use tokio::io::AsyncWriteExt;
        self.rt.block_on(self.inner.shutdown())
    }

    /// Abandons the upload: the object never appears.
    pub(crate) fn abort(mut self) {
        let _ = self.rt.block_on(self.inner.abort());
    }
}

impl Write for UploadWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        use tokio::io::AsyncWriteExt;
        self.rt.block_on(self.inner.write_all(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Store {
    /// Claims a new backup named after `at` (`20261124T101500Z`, with a suffix when taken).
    pub fn claim(&self, policy: &str, at: Timestamp) -> Result<Slot> {
        check_name(policy)?;
        let base = at.strftime("%Y%m%dT%H%M%SZ").to_string();
        for n in 1..1000 {
            let id = if n == 1 {
                base.clone()
            } else {
                format!("{base}-{n}")
            };
            let free = match self {
                // create_dir is atomic: two runs never share a directory by accident.
                Store::Local(root) => {
                    let parent = root.join(policy);
                    fs::create_dir_all(&parent)
                        .map_err(|e| AgentError::storage(parent.display(), e))?;
                    match fs::create_dir(parent.join(&id)) {
                        Ok(()) => true,
                        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
                        Err(e) => return Err(AgentError::storage(parent.join(&id).display(), e)),
                    }
                }
                Store::S3(s3) => s3.keys_under(&[policy, &id])?.is_empty(),
            };
            if free {
                crate::fault::point("backup.claimed");
                return Ok(Slot {
                    id,
                    policy: policy.to_owned(),
                });
            }
        }
        Err(AgentError::config(format!("too many backups named {base}")))
    }

    /// Streams `source` into artifact `name` of `slot`.
    pub fn put(
        &self,
        slot: &Slot,
        name: &str,
        source: &mut dyn Read,
        encoding: &Encoding,
    ) -> Result<Stored> {
        let what = format!("{}/{name}", self.describe(slot));
        self.put_with(slot, name, encoding, &mut |w| {
            stream::copy_from(source, w, &what)
        })
    }

    /// Artifact `name` of `slot`, written by `produce` (a tar builder, a copy) through the
    /// encoding chain to the file or the upload.
    pub fn put_with(
        &self,
        slot: &Slot,
        name: &str,
        encoding: &Encoding,
        produce: &mut dyn FnMut(&mut dyn Write) -> Result<()>,
    ) -> Result<Stored> {
        match self {
            Store::Local(root) => {
                let path = root.join(&slot.policy).join(&slot.id).join(name);
                let file =
                    fs::File::create(&path).map_err(|e| AgentError::storage(path.display(), e))?;
                let what = path.display().to_string();
                let (stored, writer) = stream::store_with(
                    std::io::BufWriter::with_capacity(256 * 1024, file),
                    encoding,
                    &what,
                    produce,
                )?;
                let file = writer
                    .into_inner()
                    .map_err(|e| AgentError::storage(&what, e.into_error()))?;
                file.sync_all().map_err(|e| AgentError::storage(&what, e))?;
                Ok(stored)
            }
            Store::S3(s3) => {
                let key = s3.key(&[&slot.policy, &slot.id, name]);
                let writer = s3.upload(key);
                // A failed upload surfaces as an I/O error of the writer, which the stream calls
                // a Storage failure; the store's own answer decides (a 403 on a write is a
                // permission the keys lack, AuthFailed, not a full or broken store).
                let (stored, writer) = stream::store_with(writer, encoding, &s3.what, produce)
                    .map_err(|e| s3.reclassify(e))?;
                writer.finish().map_err(|e| s3.err(e))?;
                Ok(stored)
            }
        }
    }

    /// Writes the metadata of an asset last: until it exists, the backup does not.
    pub fn commit(&self, slot: &Slot, metadata: &BackupMetadata) -> Result<()> {
        let json = serde_json::to_vec_pretty(metadata)
            .map_err(|e| AgentError::config(format!("serializing metadata: {e}")))?;
        let name = format!("{}{METADATA_SUFFIX}", metadata.asset);
        match self {
            Store::Local(root) => {
                let dir = root.join(&slot.policy).join(&slot.id);
                let tmp = dir.join(format!(".{name}.tmp"));
                let path = dir.join(&name);
                let write = || -> std::io::Result<()> {
                    let mut f = fs::File::create(&tmp)?;
                    f.write_all(&json)?;
                    f.sync_all()?;
                    crate::fault::point("commit.tmp-written");
                    fs::rename(&tmp, &path)?;
                    fs::File::open(&dir)?.sync_all()
                };
                write().map_err(|e| AgentError::storage(path.display(), e))
            }
            Store::S3(s3) => {
                let key = s3.key(&[&slot.policy, &slot.id, &name]);
                crate::fault::point("commit.before-put");
                s3.rt
                    .block_on(s3.store.put(&key, PutPayload::from(json)))
                    .map(|_| ())
                    .map_err(|e| s3.err(e))
            }
        }
    }

    /// Removes the files of a backup that failed before its metadata was written.
    pub fn discard(&self, slot: &Slot, names: &[String]) {
        match self {
            Store::Local(root) => {
                let dir = root.join(&slot.policy).join(&slot.id);
                for n in names {
                    let _ = fs::remove_file(dir.join(n));
                }
                let _ = fs::remove_dir(&dir); // only when empty: other assets may share it
            }
            Store::S3(s3) => {
                for n in names {
                    let _ = s3
                        .rt
                        .block_on(s3.store.delete(&s3.key(&[&slot.policy, &slot.id, n])));
                }
            }
        }
    }

    /// Every committed backup of `policy`, oldest first. Unreadable or malformed metadata is an
    /// error, not a silent skip: retention or a restore must never act on a wrong picture.
    pub fn list(&self, policy: &str) -> Result<Vec<Listed>> {
        check_name(policy)?;
        let mut out = Vec::new();
        // (id, asset) -> its verification record; attached once everything is read.
        let mut verified: std::collections::HashMap<(String, String), VerificationRecord> =
            Default::default();
        let mut note_verified = |id: &str, bytes: &[u8], what: &str| -> Result<()> {
            let record: VerificationRecord = serde_json::from_slice(bytes).map_err(|e| {
                AgentError::integrity(format!("{what}: not a verification record: {e}"))
            })?;
            verified.insert((id.to_owned(), record.asset.clone()), record);
            Ok(())
        };
        match self {
            Store::Local(root) => walk_local(root, policy, |id, file| {
                let name = file.file_name().to_string_lossy().into_owned();
                if !name.starts_with('.') && name.ends_with(VERIFIED_SUFFIX) {
                    let bytes = fs::read(file.path())
                        .map_err(|e| AgentError::storage(file.path().display(), e))?;
                    return note_verified(id, &bytes, &file.path().display().to_string());
                }
                if name.starts_with('.') || !name.ends_with(METADATA_SUFFIX) {
                    return Ok(());
                }
                let bytes = fs::read(file.path())
                    .map_err(|e| AgentError::storage(file.path().display(), e))?;
                let metadata = parse_metadata(&bytes, &file.path().display().to_string())?;
                out.push(Listed {
                    id: id.to_owned(),
                    slot: Slot {
                        id: id.to_owned(),
                        policy: policy.to_owned(),
                    },
                    metadata,
                    verified: None,
                });
                Ok(())
            })?,
            Store::S3(s3) => {
                for key in s3.keys_under(&[policy])? {
                    let parts: Vec<&str> = key.as_ref().rsplit('/').take(2).collect();
                    let [name, id] = parts[..] else { continue };
                    let verification = !name.starts_with('.') && name.ends_with(VERIFIED_SUFFIX);
                    if !verification && (name.starts_with('.') || !name.ends_with(METADATA_SUFFIX))
                    {
                        continue;
                    }
                    let bytes = s3
                        .rt
                        .block_on(async { s3.store.get(&key).await?.bytes().await })
                        .map_err(|e| s3.err(e))?;
                    if verification {
                        note_verified(id, &bytes, key.as_ref())?;
                        continue;
                    }
                    let metadata = parse_metadata(&bytes, key.as_ref())?;
                    out.push(Listed {
                        id: id.to_owned(),
                        slot: Slot {
                            id: id.to_owned(),
                            policy: policy.to_owned(),
                        },
                        metadata,
                        verified: None,
                    });
                }
            }
        }
        for l in &mut out {
            l.verified = verified.remove(&(l.id.clone(), l.metadata.asset.clone()));
        }
        out.sort_by(|a, b| {
            (a.metadata.snapshot_time, &a.id).cmp(&(b.metadata.snapshot_time, &b.id))
        });
        Ok(out)
    }

    /// Records that `listed` was proven readable: `<asset>.verified.json`, replaced atomically.
    pub fn record_verification(&self, listed: &Listed, record: &VerificationRecord) -> Result<()> {
        let json = serde_json::to_vec_pretty(record)
            .map_err(|e| AgentError::config(format!("serializing the verification: {e}")))?;
        let name = format!("{}{VERIFIED_SUFFIX}", listed.metadata.asset);
        match self {
            Store::Local(root) => {
                let dir = root.join(&listed.slot.policy).join(&listed.slot.id);
                let tmp = dir.join(format!(".{name}.tmp"));
                let path = dir.join(&name);
                fs::write(&tmp, &json)
                    .and_then(|()| fs::rename(&tmp, &path))
                    .map_err(|e| AgentError::storage(path.display(), e))
            }
            Store::S3(s3) => {
                let key = s3.key(&[&listed.slot.policy, &listed.slot.id, &name]);
                s3.rt
                    .block_on(s3.store.put(&key, PutPayload::from(json)))
                    .map(|_| ())
                    .map_err(|e| s3.err(e))
            }
        }
    }

    /// Writes `name` (a plain file name) at the top of `policy`'s prefix, replacing it
    /// atomically: drill evidence records sit next to the backups they are about. Never inside a
    /// backup directory, so listing and retention never take it for a backup.
    pub fn put_policy_file(&self, policy: &str, name: &str, bytes: Vec<u8>) -> Result<String> {
        check_name(policy)?;
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            return Err(AgentError::config(format!("invalid file name {name:?}")));
        }
        match self {
            Store::Local(root) => {
                let dir = root.join(policy);
                fs::create_dir_all(&dir).map_err(|e| AgentError::storage(dir.display(), e))?;
                let tmp = dir.join(format!(".{name}.tmp"));
                let path = dir.join(name);
                fs::write(&tmp, &bytes)
                    .and_then(|()| fs::rename(&tmp, &path))
                    .map_err(|e| AgentError::storage(path.display(), e))?;
                Ok(path.display().to_string())
            }
            Store::S3(s3) => {
                let key = s3.key(&[policy, name]);
                s3.rt
                    .block_on(s3.store.put(&key, PutPayload::from(bytes)))
                    .map_err(|e| s3.err(e))?;
                Ok(format!("{}/{policy}/{name}", s3.what.trim_end_matches('/')))
            }
        }
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
                "no complete backup {id:?} of asset {asset:?} for policy {policy:?}"
            ))
        })
    }

    /// The artifacts of `listed` as local files: the backup directory itself, or a download.
    pub fn local(&self, listed: &Listed) -> Result<Local> {
        match self {
            Store::Local(root) => Ok(Local {
                dir: root.join(&listed.slot.policy).join(&listed.slot.id),
                _download: None,
            }),
            Store::S3(s3) => {
                let tmp = tempfile::Builder::new()
                    .prefix("lifeboat-download-")
                    .tempdir()
                    .map_err(|e| AgentError::storage("temporary directory", e))?;
                for a in &listed.metadata.artifacts {
                    let key = s3.key(&[&listed.slot.policy, &listed.slot.id, &a.name]);
                    let path = tmp.path().join(&a.name);
                    let mut file = fs::File::create(&path)
                        .map_err(|e| AgentError::storage(path.display(), e))?;
                    s3.rt
                        .block_on(async {
                            let mut chunks = s3.store.get(&key).await?.into_stream();
                            while let Some(chunk) = chunks.next().await {
                                file.write_all(&chunk?).map_err(|e| {
                                    object_store::Error::Generic {
                                        store: "local",
                                        source: Box::new(e),
                                    }
                                })?;
                            }
                            Ok::<(), object_store::Error>(())
                        })
                        .map_err(|e| s3.err(e))?;
                }
                let dir = tmp.path().to_path_buf();
                Ok(Local {
                    dir,
                    _download: Some(tmp),
                })
            }
        }
    }

    /// Deletes one asset's backup: its metadata first (so a half-deleted backup is never listed
    /// as complete), then its artifacts.
    pub fn remove(&self, listed: &Listed) -> Result<()> {
        let meta = format!("{}{METADATA_SUFFIX}", listed.metadata.asset);
        let verified = format!("{}{VERIFIED_SUFFIX}", listed.metadata.asset);
        match self {
            Store::Local(root) => {
                let dir = root.join(&listed.slot.policy).join(&listed.slot.id);
                fs::remove_file(dir.join(&meta))
                    .map_err(|e| AgentError::storage(dir.join(&meta).display(), e))?;
                let _ = fs::remove_file(dir.join(&verified));
                for a in &listed.metadata.artifacts {
                    match fs::remove_file(dir.join(&a.name)) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(AgentError::storage(dir.join(&a.name).display(), e)),
                    }
                }
                let _ = fs::remove_dir(&dir);
                Ok(())
            }
            Store::S3(s3) => {
                let key = |n: &str| s3.key(&[&listed.slot.policy, &listed.slot.id, n]);
                s3.rt
                    .block_on(s3.store.delete(&key(&meta)))
                    .map_err(|e| s3.err(e))?;
                let _ = s3.rt.block_on(s3.store.delete(&key(&verified)));
                for a in &listed.metadata.artifacts {
                    s3.rt
                        .block_on(s3.store.delete(&key(&a.name)))
                        .map_err(|e| s3.err(e))?;
                }
                Ok(())
            }
        }
    }

    /// The files `asset` left in backups of `policy` that never got its metadata (a crash, a
    /// killed Job), with the newest modification time of anything in that backup: another
    /// database of the same run may still be writing next to them.
    pub fn leftovers(&self, policy: &str, asset: &str) -> Result<Vec<Leftover>> {
        check_name(policy)?;
        let meta = format!("{asset}{METADATA_SUFFIX}");
        let ours = |name: &str| {
            name != meta
                && (name.starts_with(&format!("{asset}."))
                    || name.starts_with(&format!(".{asset}.")))
        };
        // id -> (file names, newest modification)
        let mut by_id: std::collections::BTreeMap<String, (Vec<String>, Option<Timestamp>, bool)> =
            Default::default();
        let mut note = |id: &str, name: &str, modified: Timestamp| {
            let e = by_id.entry(id.to_owned()).or_default();
            e.1 = Some(e.1.map_or(modified, |m: Timestamp| m.max(modified)));
            if name == meta {
                e.2 = true;
            } else if ours(name) {
                e.0.push(name.to_owned());
            }
        };
        match self {
            Store::Local(root) => walk_local(root, policy, |id, file| {
                let modified = file
                    .metadata()
                    .and_then(|m| m.modified())
                    .map_err(|e| AgentError::storage(file.path().display(), e))?;
                let modified = Timestamp::try_from(modified).map_err(|e| {
                    AgentError::storage(file.path().display(), std::io::Error::other(e.to_string()))
                })?;
                note(id, &file.file_name().to_string_lossy(), modified);
                Ok(())
            })?,
            Store::S3(s3) => {
                let prefix = s3.key(&[policy]);
                let objects = s3
                    .rt
                    .block_on(s3.store.list(Some(&prefix)).try_collect::<Vec<_>>())
                    .map_err(|e| s3.err(e))?;
                for o in objects {
                    let parts: Vec<&str> = o.location.as_ref().rsplit('/').take(2).collect();
                    let [name, id] = parts[..] else { continue };
                    let modified = Timestamp::from_millisecond(o.last_modified.timestamp_millis())
                        .map_err(|e| s3.err(e))?;
                    note(id, name, modified);
                }
            }
        }
        Ok(by_id
            .into_iter()
            .filter(|(_, (files, _, committed))| !committed && !files.is_empty())
            .filter_map(|(id, (files, newest, _))| {
                Some(Leftover {
                    slot: Slot {
                        id,
                        policy: policy.to_owned(),
                    },
                    files,
                    newest: newest?,
                })
            })
            .collect())
    }

    /// For messages: where a backup is.
    pub fn describe(&self, slot: &Slot) -> String {
        match self {
            Store::Local(root) => root.join(&slot.policy).join(&slot.id).display().to_string(),
            Store::S3(s3) => format!("{}/{}/{}", s3.what, slot.policy, slot.id),
        }
    }
}

/// Calls `visit(id, file)` for every file in every backup directory of `policy` under `root`.
fn walk_local(
    root: &Path,
    policy: &str,
    mut visit: impl FnMut(&str, &fs::DirEntry) -> Result<()>,
) -> Result<()> {
    let parent = root.join(policy);
    let entries = match fs::read_dir(&parent) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(AgentError::storage(parent.display(), e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| AgentError::storage(parent.display(), e))?;
        let dir = entry.path();
        if !dir.is_dir() {
            continue;
        }
        let id = entry.file_name().to_string_lossy().into_owned();
        for file in fs::read_dir(&dir).map_err(|e| AgentError::storage(dir.display(), e))? {
            let file = file.map_err(|e| AgentError::storage(dir.display(), e))?;
            visit(&id, &file)?;
        }
    }
    Ok(())
}

fn check_name(policy: &str) -> Result<()> {
    if policy.is_empty() || policy.contains('/') || policy.starts_with('.') {
        return Err(AgentError::config(format!(
            "invalid policy name {policy:?}"
        )));
    }
    Ok(())
}

/// Parses and checks one metadata document.
pub fn parse_metadata(bytes: &[u8], what: &str) -> Result<BackupMetadata> {
    let m: BackupMetadata = serde_json::from_slice(bytes)
        .map_err(|e| AgentError::integrity(format!("{what}: malformed metadata: {e}")))?;
    if m.schema_version != METADATA_SCHEMA_VERSION {
        return Err(AgentError::integrity(format!(
            "{what}: metadata schema version {} is not {METADATA_SCHEMA_VERSION}",
            m.schema_version
        )));
    }
    for a in &m.artifacts {
        if a.name.contains('/') || a.name.starts_with('.') {
            return Err(AgentError::integrity(format!(
                "{what}: artifact name {:?} escapes the backup",
                a.name
            )));
        }
    }
    Ok(m)
}

/// For a local store: the directory of a backup.
pub fn local_dir(root: &Path, slot: &Slot) -> PathBuf {
    root.join(&slot.policy).join(&slot.id)
}

/// The failure class of an object-store error, from its text (object_store reports S3's answers
/// as text: the status line and the XML error code).
fn classify(text: &str, role: S3Role) -> lifeboat_api::agent_result::ErrorClass {
    use lifeboat_api::agent_result::ErrorClass;
    let unreachable = [
        "Connection refused",
        "tcp connect error",
        "dns error",
        "No route to host",
    ];
    let lower = text.to_ascii_lowercase();
    // "404 Not Found" with NoSuchBucket is how a missing bucket answers a list (found by the
    // missing-bucket case of tests/bucket.rs; it was reported as a Storage failure).
    if lower.contains("notfound")
        || lower.contains("not found")
        || text.contains("NoSuchBucket")
        || text.contains("NoSuchKey")
    {
        ErrorClass::NotFound
    } else if has_status(text, "403")
        || text.contains("Forbidden")
        || text.contains("AccessDenied")
        || text.contains("InvalidAccessKeyId")
        || text.contains("SignatureDoesNotMatch")
    {
        ErrorClass::Auth
    } else if role == S3Role::Data && unreachable.iter().any(|u| text.contains(u)) {
        ErrorClass::SourceUnreachable
    } else {
        ErrorClass::Storage
    }
}

/// Whether `code` stands in `text` as a number of its own: a bare substring test took the
/// "...434037s" of a retry duration for a 403 and called a run of 503s an authentication failure
/// (tests/storage_faults.rs, once in a while).
fn has_status(text: &str, code: &str) -> bool {
    text.match_indices(code).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + code.len()..].chars().next();
        !before.is_some_and(|c| c.is_ascii_digit() || c == '.')
            && !after.is_some_and(|c| c.is_ascii_digit() || c == '.')
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use lifeboat_api::agent_result::ErrorClass;

    #[test]
    fn a_number_that_contains_403_is_not_a_403() {
        let slow_down = "Error performing GET http://127.0.0.1:40319/backups?list-type=2 in 6.393434037s, after 10 retries - Server returned non-2xx status code: 503 Service Unavailable: <Error><Code>SlowDown</Code></Error>";
        assert_eq!(classify(slow_down, S3Role::Backups), ErrorClass::Storage);
        let denied = "Server returned non-2xx status code: 403 Forbidden: <Error><Code>AccessDenied</Code></Error>";
        assert_eq!(classify(denied, S3Role::Backups), ErrorClass::Auth);
        assert!(has_status("status 403", "403"));
        assert!(!has_status("port 40319, 1.403s, 94031", "403"));
    }
}
