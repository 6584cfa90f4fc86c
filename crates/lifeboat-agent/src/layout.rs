//! Where backups live: `<root>/<namespace>/<policy>/<backup-id>/` with one artifact per asset
//! (and database) and `<asset>.metadata.json`, signed and written last, as the commit marker. A
//! backup without metadata is unfinished: never listed, never restored. Every read and delete
//! stays inside one namespace's policy directory, and metadata is accepted only where it says
//! it lies: two namespaces whose policies share a name and a bucket never see each other's
//! backups. The layout of earlier agents, `<root>/<policy>/<backup-id>/`, is read by `adopt`
//! only ([`Scope::legacy`]).
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
use lifeboat_api::agent_result::{BackupMetadata, VerificationRecord};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::error::{AgentError, Result};
use crate::signing::{SigningKey, Trust};
use crate::stream::{self, Encoding, Stored};

const METADATA_SUFFIX: &str = ".metadata.json";
/// `<asset>.verified.json`: a [`VerificationRecord`], written after the metadata.
const VERIFIED_SUFFIX: &str = ".verified.json";
/// The object that claims a backup id on S3, created only if absent (`If-None-Match: *`) and
/// removed once the run is over; what a killed run leaves of it, prune clears.
const CLAIM_MARKER: &str = ".lifeboat-claim";

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
pub(crate) fn env_duration(var: &str, default: std::time::Duration) -> Result<std::time::Duration> {
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

/// One policy's backups: `<namespace>/<policy>`, or (for `adopt` only) the layout without
/// namespaces, `<policy>`. The names are checked here, so neither can step out of the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scope {
    namespace: Option<String>,
    policy: String,
}

impl Scope {
    pub fn new(namespace: &str, policy: &str) -> Result<Self> {
        check_namespace(namespace)?;
        check_policy(policy)?;
        Ok(Self {
            namespace: Some(namespace.to_owned()),
            policy: policy.to_owned(),
        })
    }

    /// `<policy>` at the top of the store: where agents before namespaced layouts wrote. Read
    /// only by `adopt`, whose operator says which namespace those backups belong to.
    pub fn legacy(policy: &str) -> Result<Self> {
        check_policy(policy)?;
        Ok(Self {
            namespace: None,
            policy: policy.to_owned(),
        })
    }

    pub fn policy(&self) -> &str {
        &self.policy
    }

    /// The namespace (`None` only in the layout without namespaces).
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    pub(crate) fn parts(&self) -> Vec<&str> {
        self.namespace
            .iter()
            .map(String::as_str)
            .chain([self.policy.as_str()])
            .collect()
    }

    pub(crate) fn dir(&self, root: &Path) -> PathBuf {
        self.parts()
            .iter()
            .fold(root.to_path_buf(), |p, s| p.join(s))
    }
}

/// A directory of the store: a path under a local root, or key segments under the S3 prefix.
/// What reads and deletes of single files share, whatever the directory holds.
pub(crate) trait Prefix {
    fn dir(&self, root: &Path) -> PathBuf;
    fn parts(&self) -> Vec<&str>;
}

impl Prefix for Scope {
    fn dir(&self, root: &Path) -> PathBuf {
        Scope::dir(self, root)
    }

    fn parts(&self) -> Vec<&str> {
        Scope::parts(self)
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.parts().join("/"))
    }
}

/// A claimed backup directory (`<namespace>/<policy>/<id>`).
#[derive(Clone, Debug)]
pub struct Slot {
    pub id: String,
    pub scope: Scope,
}

impl Slot {
    fn dir(&self, root: &Path) -> PathBuf {
        self.scope.dir(root).join(&self.id)
    }

    fn parts(&self) -> Vec<&str> {
        let mut parts = self.scope.parts();
        parts.push(&self.id);
        parts
    }
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
    /// What requests object_store cannot make are made with (boxed: large, and rarely used).
    direct: Box<Direct>,
    prefix: String,
    pub(crate) rt: tokio::runtime::Runtime,
    pub(crate) what: String,
    role: S3Role,
}

/// The store's own client, options and region, for the one request object_store has no call for
/// (S3 Object Lock's `PutObjectRetention`), and the lock when the destination sets one.
struct Direct {
    amazon: object_store::aws::AmazonS3,
    options: object_store::ClientOptions,
    region: String,
    lock: Option<crate::objectlock::Locker>,
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
    /// How requests are signed.
    pub auth: S3Auth,
    /// PEM certificates trusted besides the system's roots for the endpoint (a private CA).
    pub ca_bundle: Option<String>,
    pub role: S3Role,
}

/// How the agent authenticates to a bucket: the only two sources it ever uses.
pub enum S3Auth {
    /// The access key id and secret key of the location's `credentialsSecret`.
    Keys { id: String, secret: String },
    /// The pod's web identity token exchanged at STS for the role (IRSA).
    WebIdentity {
        token_file: PathBuf,
        role_arn: String,
    },
}

/// The variables EKS's IRSA webhook sets: the projected token's path and the role to assume.
const WEB_IDENTITY_TOKEN_FILE: &str = "AWS_WEB_IDENTITY_TOKEN_FILE";
const ROLE_ARN: &str = "AWS_ROLE_ARN";

impl S3Auth {
    /// The web identity of the pod, from `env` (the process environment in a Job): its token
    /// file must exist and its role be named, or it is [`ErrorClass::WebIdentityMissing`]
    /// with no other source tried.
    ///
    /// [`ErrorClass::WebIdentityMissing`]: lifeboat_api::agent_result::ErrorClass::WebIdentityMissing
    pub fn web_identity(env: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let missing = |what: String| {
            AgentError::new(
                lifeboat_api::agent_result::ErrorClass::WebIdentityMissing,
                format!(
                    "S3 ambient identity is webIdentity but {what}: the pod needs a projected service account token ({WEB_IDENTITY_TOKEN_FILE}) and a role ({ROLE_ARN}), as the IRSA webhook sets them; no other credential source is used"
                ),
            )
        };
        let var = |name: &str| env(name).filter(|v| !v.is_empty());
        let token_file = var(WEB_IDENTITY_TOKEN_FILE)
            .map(PathBuf::from)
            .ok_or_else(|| missing(format!("{WEB_IDENTITY_TOKEN_FILE} is not set")))?;
        let role_arn = var(ROLE_ARN).ok_or_else(|| missing(format!("{ROLE_ARN} is not set")))?;
        if !token_file.is_file() {
            return Err(missing(format!(
                "the token file {} does not exist",
                token_file.display()
            )));
        }
        Ok(Self::WebIdentity {
            token_file,
            role_arn,
        })
    }
}

/// The platform's [`AmbientIdentity`] as the operator set it on the pod; unset is `none`, so a
/// Job made by anything else gets no ambient identity either.
pub fn ambient_identity(
    env: impl Fn(&str) -> Option<String>,
) -> Result<lifeboat_api::identity::AmbientIdentity> {
    match env(lifeboat_api::identity::AMBIENT_IDENTITY_ENV) {
        None => Ok(Default::default()),
        Some(v) => v
            .parse()
            .map_err(|e: lifeboat_api::identity::UnknownAmbientIdentity| {
                AgentError::config(e.to_string())
            }),
    }
}

impl S3Store {
    pub fn new(s: S3Settings) -> Result<Self> {
        let mut options = object_store::ClientOptions::new()
            .with_connect_timeout(S3_CONNECT_TIMEOUT)
            .with_timeout(env_duration(
                "LIFEBOAT_S3_REQUEST_TIMEOUT",
                S3_REQUEST_TIMEOUT,
            )?);
        if let Some(pem) = &s.ca_bundle {
            let certs = object_store::Certificate::from_pem_bundle(pem.as_bytes())
                .map_err(|e| AgentError::config(format!("CA bundle of {}: {e}", s.endpoint)))?;
            if certs.is_empty() {
                return Err(AgentError::config(format!(
                    "CA bundle of {}: no PEM certificate in it",
                    s.endpoint
                )));
            }
            for cert in certs {
                options = options.with_root_certificate(cert);
            }
        }
        // AmazonS3Builder::build (object_store 0.14) takes the first credential source it was
        // given: a provider, access keys, a web identity token file with a role, the ECS and
        // EKS container endpoints, and only when none is set the instance metadata service.
        // The builder starts from `new()`, never `from_env()`, so no AWS_* variable of the pod
        // (keys, container endpoints, a metadata endpoint) reaches it, and each arm sets a source
        // that comes before the container and instance providers: neither can be chosen.
        use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
        let builder = match &s.auth {
            S3Auth::Keys { id, secret } => AmazonS3Builder::new()
                .with_access_key_id(id)
                .with_secret_access_key(secret),
            S3Auth::WebIdentity {
                token_file,
                role_arn,
            } => AmazonS3Builder::new()
                .with_config(
                    AmazonS3ConfigKey::WebIdentityTokenFile,
                    token_file.to_string_lossy(),
                )
                .with_config(AmazonS3ConfigKey::RoleArn, role_arn),
        };
        let store = builder
            .with_endpoint(&s.endpoint)
            .with_bucket_name(&s.bucket)
            .with_region(&s.region)
            // Before with_allow_http, which sets a field of these options.
            .with_client_options(options.clone())
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
        let options = options.with_allow_http(s.endpoint.starts_with("http://"));
        Ok(Self {
            store: Arc::new(store.clone()),
            direct: Box::new(Direct {
                amazon: store,
                options,
                region: s.region.clone(),
                lock: None,
            }),
            prefix: s.prefix.trim_matches('/').to_owned(),
            rt,
            what: format!("s3://{}/{}", s.bucket, s.prefix.trim_matches('/')),
            role: s.role,
        })
    }

    /// Locks every object this store writes for a backup (`lock`, the destination's
    /// `objectLock`): artifacts once uploaded, the metadata once written, each before the
    /// backup counts.
    pub fn with_object_lock(
        mut self,
        lock: Option<&lifeboat_api::common::ObjectLock>,
    ) -> Result<Self> {
        let d = &mut self.direct;
        d.lock = lock
            .map(|l| {
                crate::objectlock::Locker::new(d.amazon.clone(), &d.options, &d.region, l.clone())
            })
            .transpose()?;
        Ok(self)
    }

    /// Locks `key` until `until` when this store locks objects (a no-op otherwise).
    pub(crate) fn lock_object(&self, key: &ObjectPath, until: Option<Timestamp>) -> Result<()> {
        match (&self.direct.lock, until) {
            (Some(locker), Some(until)) => self
                .rt
                .block_on(locker.lock(key, until))
                .map_err(|e| self.err(e)),
            _ => Ok(()),
        }
    }

    /// The retention a backup's metadata records and its last object gets: `None` when this
    /// store does not lock.
    pub(crate) fn lock_from_now(&self) -> Option<lifeboat_api::agent_result::ObjectLockInfo> {
        self.direct
            .lock
            .as_ref()
            .map(|l| lifeboat_api::agent_result::ObjectLockInfo {
                mode: l.mode(),
                retain_until: l.until_from_now(),
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
    /// status or the transport error kind in a stable way), except an untrusted certificate,
    /// found in its chain of causes (its text says only "error sending request").
    pub(crate) fn err<E: std::fmt::Display + 'static>(&self, e: E) -> AgentError {
        let text = e.to_string();
        let any: &dyn std::any::Any = &e;
        if let Some(cause) = any
            .downcast_ref::<object_store::Error>()
            .and_then(|e| untrusted_certificate(e))
        {
            return AgentError::new(
                lifeboat_api::agent_result::ErrorClass::TlsUntrusted,
                format!(
                    "{}: the endpoint's TLS certificate is not trusted ({cause}); give its CA \
                     in caBundleSecret: {text}",
                    self.what
                ),
            );
        }
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

    /// The objects of `scope`'s backups, each with its backup id and file name: only keys
    /// exactly `<scope>/<id>/<name>` (a namespace's directory may hold other policies, and the
    /// old layout's `<policy>/` a namespace of that name).
    fn backup_objects(&self, scope: &Scope) -> Result<Vec<(String, String, ObjectMeta)>> {
        let prefix = self.key(&scope.parts());
        let objects = self
            .rt
            .block_on(self.store.list(Some(&prefix)).try_collect::<Vec<_>>())
            .map_err(|e| self.err(e))?;
        Ok(objects
            .into_iter()
            .filter_map(|o| {
                let rest: Vec<String> = o
                    .location
                    .prefix_match(&prefix)?
                    .map(|p| p.as_ref().to_owned())
                    .collect();
                let [id, name] = <[String; 2]>::try_from(rest).ok()?;
                Some((id, name, o))
            })
            .collect())
    }

    pub(crate) fn get(&self, key: &ObjectPath) -> Result<bytes::Bytes> {
        self.rt
            .block_on(async { self.store.get(key).await?.bytes().await })
            .map_err(|e| self.err(e))
    }

    pub(crate) fn put_object(&self, key: &ObjectPath, bytes: Vec<u8>) -> Result<()> {
        self.rt
            .block_on(self.store.put(key, PutPayload::from(bytes)))
            .map(|_| ())
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
    /// Claims a new backup of `scope` named after `at`, its milliseconds and a random suffix
    /// (`20261124T101500Z-123-3fa9c2d1`): unique by construction, so two runs in the same
    /// moment never share one even on a store that ignores conditional writes, and sorted by
    /// time, ids of earlier agents (`20261124T101500Z`) among them. A directory is claimed by
    /// creating it (atomic); an S3 id by creating its marker object only if absent, which a
    /// store that honours `If-None-Match` makes atomic too.
    pub fn claim(&self, scope: &Scope, at: Timestamp) -> Result<Slot> {
        let base = at.strftime("%Y%m%dT%H%M%SZ-%3f").to_string();
        for _ in 0..8 {
            let mut suffix = [0u8; 4];
            getrandom::fill(&mut suffix)
                .map_err(|e| AgentError::config(format!("random bytes: {e}")))?;
            let slot = Slot {
                id: format!("{base}-{}", stream::hex(&suffix)),
                scope: scope.clone(),
            };
            let free = match self {
                Store::Local(root) => {
                    let parent = scope.dir(root);
                    fs::create_dir_all(&parent)
                        .map_err(|e| AgentError::storage(parent.display(), e))?;
                    let dir = slot.dir(root);
                    match fs::create_dir(&dir) {
                        Ok(()) => true,
                        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
                        Err(e) => return Err(AgentError::storage(dir.display(), e)),
                    }
                }
                Store::S3(s3) => {
                    let mut parts = slot.parts();
                    parts.push(CLAIM_MARKER);
                    let opts = PutOptions {
                        mode: PutMode::Create,
                        ..Default::default()
                    };
                    let key = s3.key(&parts);
                    let put = s3.rt.block_on(s3.store.put_opts(
                        &key,
                        PutPayload::from_static(b"{}"),
                        opts,
                    ));
                    match put {
                        Ok(_) => true,
                        Err(object_store::Error::AlreadyExists { .. }) => false,
                        // A store that refuses conditional writes outright: the random suffix
                        // alone keeps ids apart, as on one that ignores them.
                        Err(e) if not_implemented(&e.to_string()) => {
                            s3.put_object(&key, b"{}".to_vec())?;
                            true
                        }
                        Err(e) => return Err(s3.err(e)),
                    }
                }
            };
            if free {
                crate::fault::point("backup.claimed");
                return Ok(slot);
            }
        }
        Err(AgentError::storage(
            format!("{}/{base}-*", self.describe_scope(scope)),
            std::io::Error::other("every random backup id tried was taken"),
        ))
    }

    /// Ends a claim once the run's metadata is written (or it failed): the S3 marker goes. A
    /// failure to delete it is left to prune, which clears it with the run's leftovers.
    pub fn release(&self, slot: &Slot) {
        if let Store::S3(s3) = self {
            let mut parts = slot.parts();
            parts.push(CLAIM_MARKER);
            let _ = s3.rt.block_on(s3.store.delete(&s3.key(&parts)));
        }
    }

    /// Makes `slot` ready for its artifacts when it was not claimed here: a copy of a backup
    /// keeps its id, unique already. A directory is created; S3 needs nothing.
    pub fn prepare(&self, slot: &Slot) -> Result<()> {
        match self {
            Store::Local(root) => {
                let dir = slot.dir(root);
                fs::create_dir_all(&dir).map_err(|e| AgentError::storage(dir.display(), e))
            }
            Store::S3(_) => Ok(()),
        }
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
                let path = slot.dir(root).join(name);
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
                let mut parts = slot.parts();
                parts.push(name);
                let key = s3.key(&parts);
                let writer = s3.upload(key.clone());
                // A failed upload surfaces as an I/O error of the writer, which the stream calls
                // a Storage failure; the store's own answer decides (a 403 on a write is a
                // permission the keys lack, AuthFailed, not a full or broken store).
                let (stored, writer) = stream::store_with(writer, encoding, &s3.what, produce)
                    .map_err(|e| s3.reclassify(e))?;
                writer.finish().map_err(|e| s3.err(e))?;
                s3.lock_object(&key, s3.lock_from_now().map(|l| l.retain_until))?;
                Ok(stored)
            }
        }
    }

    /// Signs the metadata of an asset with `key` and writes it last: until it exists, the backup
    /// does not. The namespace, policy and id it records are the slot's. Returns what was
    /// written.
    pub fn commit(
        &self,
        slot: &Slot,
        mut metadata: BackupMetadata,
        key: &SigningKey,
    ) -> Result<BackupMetadata> {
        metadata.namespace = slot.scope.namespace.clone().unwrap_or_default();
        metadata.policy = slot.scope.policy.clone();
        metadata.backup_id = slot.id.clone();
        // Computed after every artifact was locked, so the latest lock of the backup: retention
        // reads it, and keeps the backup until then.
        metadata.object_lock = match self {
            Store::S3(s3) => s3.lock_from_now(),
            Store::Local(_) => None,
        };
        key.sign(&mut metadata)?;
        let json = serde_json::to_vec_pretty(&metadata)
            .map_err(|e| AgentError::config(format!("serializing metadata: {e}")))?;
        let name = format!("{}{METADATA_SUFFIX}", metadata.asset);
        match self {
            Store::Local(root) => {
                let dir = slot.dir(root);
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
                write().map_err(|e| AgentError::storage(path.display(), e))?;
            }
            Store::S3(s3) => {
                let mut parts = slot.parts();
                parts.push(&name);
                crate::fault::point("commit.before-put");
                let key = s3.key(&parts);
                s3.put_object(&key, json)?;
                if let Err(e) =
                    s3.lock_object(&key, metadata.object_lock.as_ref().map(|l| l.retain_until))
                {
                    // Metadata that says "locked" over objects that are not must not count: it
                    // goes (unlocked, so it can), and the run fails.
                    let _ = s3.rt.block_on(s3.store.delete(&key));
                    return Err(e);
                }
            }
        }
        Ok(metadata)
    }

    /// Removes the files of a backup that failed before its metadata was written.
    pub fn discard(&self, slot: &Slot, names: &[String]) {
        match self {
            Store::Local(root) => {
                let dir = slot.dir(root);
                for n in names {
                    let _ = fs::remove_file(dir.join(n));
                }
                let _ = fs::remove_dir(&dir); // only when empty: other assets may share it
            }
            Store::S3(s3) => {
                for n in names {
                    let mut parts = slot.parts();
                    parts.push(n);
                    let _ = s3.rt.block_on(s3.store.delete(&s3.key(&parts)));
                }
            }
        }
    }

    /// Every committed backup of `scope`, oldest first, each metadata checked against `trust`
    /// (its signature) and against where it lies (namespace, policy, id, asset). Unreadable,
    /// malformed, unsigned, wrongly signed or misplaced metadata is an error, not a silent skip:
    /// retention or a restore must never act on a wrong picture.
    pub fn list(&self, scope: &Scope, trust: Trust<'_>) -> Result<Vec<Listed>> {
        let mut out = Vec::new();
        // (id, asset) -> its verification record; attached once everything is read.
        let mut verified: std::collections::HashMap<(String, String), VerificationRecord> =
            Default::default();
        let mut read = |id: &str, name: &str, bytes: &[u8], what: &str| -> Result<()> {
            if name.starts_with('.') {
                return Ok(());
            }
            if name.ends_with(VERIFIED_SUFFIX) {
                let record: VerificationRecord = serde_json::from_slice(bytes).map_err(|e| {
                    AgentError::integrity(format!("{what}: not a verification record: {e}"))
                })?;
                verified.insert((id.to_owned(), record.asset.clone()), record);
                return Ok(());
            }
            let metadata = crate::signing::open(bytes, what, trust)?;
            check_place(&metadata, scope, id, name, what)?;
            out.push(Listed {
                id: id.to_owned(),
                slot: Slot {
                    id: id.to_owned(),
                    scope: scope.clone(),
                },
                metadata,
                verified: None,
            });
            Ok(())
        };
        let wanted =
            |name: &str| name.ends_with(METADATA_SUFFIX) || name.ends_with(VERIFIED_SUFFIX);
        match self {
            Store::Local(root) => walk_local(&scope.dir(root), |id, file| {
                let name = file.file_name().to_string_lossy().into_owned();
                if !wanted(&name) {
                    return Ok(());
                }
                let bytes = fs::read(file.path())
                    .map_err(|e| AgentError::storage(file.path().display(), e))?;
                read(id, &name, &bytes, &file.path().display().to_string())
            })?,
            Store::S3(s3) => {
                for (id, name, o) in s3.backup_objects(scope)? {
                    if !wanted(&name) || name.starts_with('.') {
                        continue;
                    }
                    let bytes = s3.get(&o.location)?;
                    read(&id, &name, &bytes, o.location.as_ref())?;
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
                let dir = listed.slot.dir(root);
                let tmp = dir.join(format!(".{name}.tmp"));
                let path = dir.join(&name);
                fs::write(&tmp, &json)
                    .and_then(|()| fs::rename(&tmp, &path))
                    .map_err(|e| AgentError::storage(path.display(), e))
            }
            Store::S3(s3) => {
                let mut parts = listed.slot.parts();
                parts.push(&name);
                s3.put_object(&s3.key(&parts), json)
            }
        }
    }

    /// Writes `name` (a plain file name) at the top of `scope`'s directory, replacing it
    /// atomically: drill evidence records sit next to the backups they are about. Never inside a
    /// backup directory, so listing and retention never take it for a backup.
    pub fn put_policy_file(&self, scope: &Scope, name: &str, bytes: Vec<u8>) -> Result<String> {
        check_file_name(name)?;
        match self {
            Store::Local(root) => {
                let dir = scope.dir(root);
                fs::create_dir_all(&dir).map_err(|e| AgentError::storage(dir.display(), e))?;
                let tmp = dir.join(format!(".{name}.tmp"));
                let path = dir.join(name);
                fs::write(&tmp, &bytes)
                    .and_then(|()| fs::rename(&tmp, &path))
                    .map_err(|e| AgentError::storage(path.display(), e))?;
                Ok(path.display().to_string())
            }
            Store::S3(s3) => {
                let mut parts = scope.parts();
                parts.push(name);
                s3.put_object(&s3.key(&parts), bytes)?;
                Ok(format!("{}/{scope}/{name}", s3.what.trim_end_matches('/')))
            }
        }
    }

    /// The files at the top of `scope`'s directory (drill evidence records), by name.
    pub fn policy_files(&self, scope: &Scope) -> Result<Vec<String>> {
        self.names_at(scope)
    }

    /// The names of the files directly in directory `at` (hidden ones left out), sorted; none
    /// when it does not exist.
    pub(crate) fn names_at(&self, at: &impl Prefix) -> Result<Vec<String>> {
        let mut out = Vec::new();
        match self {
            Store::Local(root) => {
                let dir = at.dir(root);
                let entries = match fs::read_dir(&dir) {
                    Ok(e) => e,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
                    Err(e) => return Err(AgentError::storage(dir.display(), e)),
                };
                for e in entries {
                    let e = e.map_err(|e| AgentError::storage(dir.display(), e))?;
                    let name = e.file_name().to_string_lossy().into_owned();
                    if e.path().is_file() && !name.starts_with('.') {
                        out.push(name);
                    }
                }
            }
            Store::S3(s3) => {
                let prefix = s3.key(&at.parts());
                let listing = s3
                    .rt
                    .block_on(s3.store.list_with_delimiter(Some(&prefix)))
                    .map_err(|e| s3.err(e))?;
                for o in listing.objects {
                    if let Some(name) = o.location.filename()
                        && !name.starts_with('.')
                    {
                        out.push(name.to_owned());
                    }
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Reads file `name` at the top of `scope`'s directory.
    pub fn read_policy_file(&self, scope: &Scope, name: &str) -> Result<Vec<u8>> {
        check_file_name(name)?;
        self.read_at(scope, name)
    }

    /// The bytes of object `name` in directory `at`.
    pub(crate) fn read_at(&self, at: &impl Prefix, name: &str) -> Result<Vec<u8>> {
        match self {
            Store::Local(root) => {
                let path = at.dir(root).join(name);
                fs::read(&path).map_err(|e| AgentError::storage(path.display(), e))
            }
            Store::S3(s3) => {
                let mut parts = at.parts();
                parts.push(name);
                Ok(s3.get(&s3.key(&parts))?.to_vec())
            }
        }
    }

    /// Deletes file `name` at the top of `scope`'s directory.
    pub fn remove_policy_file(&self, scope: &Scope, name: &str) -> Result<()> {
        check_file_name(name)?;
        self.delete_at(scope, name, false)
    }

    /// Deletes object `name` in directory `at`; one already gone is an error unless
    /// `missing_ok` (S3 does not tell).
    pub(crate) fn delete_at(&self, at: &impl Prefix, name: &str, missing_ok: bool) -> Result<()> {
        match self {
            Store::Local(root) => {
                let path = at.dir(root).join(name);
                match fs::remove_file(&path) {
                    Err(e) if missing_ok && e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    r => r.map_err(|e| AgentError::storage(path.display(), e)),
                }
            }
            Store::S3(s3) => {
                let mut parts = at.parts();
                parts.push(name);
                s3.rt
                    .block_on(s3.store.delete(&s3.key(&parts)))
                    .map_err(|e| s3.err(e))
            }
        }
    }

    /// The backups of `asset` in `scope`, oldest first, as `trust` admits them.
    pub fn list_asset(&self, scope: &Scope, asset: &str, trust: Trust<'_>) -> Result<Vec<Listed>> {
        Ok(self
            .list(scope, trust)?
            .into_iter()
            .filter(|l| l.metadata.asset == asset)
            .collect())
    }

    /// The backup `id` (or the newest, for `latest`) of `asset`.
    pub fn find(&self, scope: &Scope, id: &str, asset: &str, trust: Trust<'_>) -> Result<Listed> {
        let all = self.list_asset(scope, asset, trust)?;
        let found = if id == "latest" {
            all.into_iter().last()
        } else {
            all.into_iter().find(|l| l.id == id)
        };
        found.ok_or_else(|| {
            AgentError::not_found(format!(
                "no complete backup {id:?} of asset {asset:?} in {scope}"
            ))
        })
    }

    /// The artifacts of `listed` as local files: the backup directory itself, or a download.
    pub fn local(&self, listed: &Listed) -> Result<Local> {
        match self {
            Store::Local(root) => Ok(Local {
                dir: listed.slot.dir(root),
                _download: None,
            }),
            Store::S3(s3) => {
                let tmp = tempfile::Builder::new()
                    .prefix("lifeboat-download-")
                    .tempdir()
                    .map_err(|e| AgentError::storage("temporary directory", e))?;
                for a in &listed.metadata.artifacts {
                    let mut parts = listed.slot.parts();
                    parts.push(&a.name);
                    let key = s3.key(&parts);
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

    /// Copies artifact `name` of backup `from` into `to` unchanged (`adopt`): a server-side copy
    /// on S3, a synced file copy in a directory. The caller verifies the copy.
    pub fn copy_artifact(&self, from: &Slot, to: &Slot, name: &str) -> Result<()> {
        match self {
            Store::Local(root) => {
                let (src, dir) = (from.dir(root).join(name), to.dir(root));
                let dst = dir.join(name);
                fs::create_dir_all(&dir).map_err(|e| AgentError::storage(dir.display(), e))?;
                fs::copy(&src, &dst)
                    .and_then(|_| fs::File::open(&dst)?.sync_all())
                    .map_err(|e| AgentError::storage(dst.display(), e))
            }
            Store::S3(s3) => {
                let (mut src, mut dst) = (from.parts(), to.parts());
                src.push(name);
                dst.push(name);
                s3.rt
                    .block_on(s3.store.copy(&s3.key(&src), &s3.key(&dst)))
                    .map_err(|e| s3.err(e))
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
                let dir = listed.slot.dir(root);
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
                let key = |n: &str| {
                    let mut parts = listed.slot.parts();
                    parts.push(n);
                    s3.key(&parts)
                };
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

    /// The files `asset` left in backups of `scope` that never got its metadata (a crash, a
    /// killed Job), with the newest modification time of anything in that backup: another
    /// database of the same run may still be writing next to them. A claim marker counts as
    /// every asset's: the run that left it may have been any of them.
    pub fn leftovers(&self, scope: &Scope, asset: &str) -> Result<Vec<Leftover>> {
        let meta = format!("{asset}{METADATA_SUFFIX}");
        let ours = |name: &str| {
            name != meta
                && (name == CLAIM_MARKER
                    || name.starts_with(&format!("{asset}."))
                    || name.starts_with(&format!(".{asset}.")))
        };
        // id -> (file names, newest modification, committed)
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
            Store::Local(root) => walk_local(&scope.dir(root), |id, file| {
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
                for (id, name, o) in s3.backup_objects(scope)? {
                    let modified = Timestamp::from_millisecond(o.last_modified.timestamp_millis())
                        .map_err(|e| s3.err(e))?;
                    note(&id, &name, modified);
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
                        scope: scope.clone(),
                    },
                    files,
                    newest: newest?,
                })
            })
            .collect())
    }

    /// For messages: where a backup is.
    pub fn describe(&self, slot: &Slot) -> String {
        format!("{}/{}", self.describe_scope(&slot.scope), slot.id)
    }

    /// For messages: where a policy's backups are.
    pub fn describe_scope(&self, scope: &Scope) -> String {
        match self {
            Store::Local(root) => scope.dir(root).display().to_string(),
            Store::S3(s3) => format!("{}/{scope}", s3.what.trim_end_matches('/')),
        }
    }
}

/// Calls `visit(id, file)` for every file in every backup directory under `dir` (a scope's).
fn walk_local(dir: &Path, mut visit: impl FnMut(&str, &fs::DirEntry) -> Result<()>) -> Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(AgentError::storage(dir.display(), e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| AgentError::storage(dir.display(), e))?;
        let backup = entry.path();
        if !backup.is_dir() {
            continue;
        }
        let id = entry.file_name().to_string_lossy().into_owned();
        for file in fs::read_dir(&backup).map_err(|e| AgentError::storage(backup.display(), e))? {
            let file = file.map_err(|e| AgentError::storage(backup.display(), e))?;
            if file.path().is_file() {
                visit(&id, &file)?;
            }
        }
    }
    Ok(())
}

/// Metadata must say it is where it lies: its namespace, policy and backup id those of its
/// directory, its asset that of its file name. A document copied from another namespace,
/// policy or backup is refused, whatever its signature (which covers what it records).
fn check_place(m: &BackupMetadata, scope: &Scope, id: &str, file: &str, what: &str) -> Result<()> {
    let mut wrong = Vec::new();
    let namespace = scope.namespace.as_deref().unwrap_or_default();
    // Unsigned legacy metadata (read only with the opt-in) records no namespace.
    let legacy = m.signature.is_none() && m.namespace.is_empty();
    if m.namespace != namespace && !legacy {
        wrong.push(format!("namespace {:?}", m.namespace));
    }
    if m.policy != scope.policy {
        wrong.push(format!("policy {:?}", m.policy));
    }
    if m.backup_id != id {
        wrong.push(format!("backup {:?}", m.backup_id));
    }
    if file != format!("{}{METADATA_SUFFIX}", m.asset) {
        wrong.push(format!("asset {:?}", m.asset));
    }
    if wrong.is_empty() {
        return Ok(());
    }
    Err(AgentError::integrity(format!(
        "{what}: the metadata records {} but lies in {scope}/{id}: moved from another place, refused",
        wrong.join(", ")
    )))
}

/// A Kubernetes namespace name (an RFC 1123 label): the first directory of every backup path.
fn check_namespace(ns: &str) -> Result<()> {
    let ok = !ns.is_empty()
        && ns.len() <= 63
        && ns
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !ns.starts_with('-')
        && !ns.ends_with('-');
    if !ok {
        return Err(AgentError::config(format!("invalid namespace name {ns:?}")));
    }
    Ok(())
}

/// A policy's directory name: a Kubernetes object name, or one with `_safety` appended.
fn check_policy(policy: &str) -> Result<()> {
    let ok = policy.len() <= 260
        && policy
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && policy.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'.' | b'_')
        });
    if !ok {
        return Err(AgentError::config(format!(
            "invalid policy name {policy:?}"
        )));
    }
    Ok(())
}

fn check_file_name(name: &str) -> Result<()> {
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return Err(AgentError::config(format!("invalid file name {name:?}")));
    }
    Ok(())
}

/// The failure class of an object-store error, from its text (object_store reports S3's answers
/// as text: the status line and the XML error code).
/// The rustls refusal of a server certificate among the causes of `e`, if any. A TLS error
/// reaches here inside an `io::Error`, whose `source()` skips the error it wraps, so each
/// `io::Error` is opened as well.
fn untrusted_certificate<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a rustls::Error> {
    let mut next = Some(e);
    while let Some(err) = next {
        if let Some(r @ rustls::Error::InvalidCertificate(_)) = err.downcast_ref::<rustls::Error>()
        {
            return Some(r);
        }
        if let Some(inner) = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| untrusted_certificate(inner))
        {
            return Some(inner);
        }
        next = err.source();
    }
    None
}

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

/// Whether an S3 error says the store does not implement what was asked (a conditional write).
fn not_implemented(text: &str) -> bool {
    has_status(text, "501") || text.contains("NotImplemented")
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
    use lifeboat_api::identity::AmbientIdentity;

    #[test]
    fn the_mode_is_none_unless_the_pod_says_otherwise_and_a_typo_is_refused() {
        let from = |v: Option<&str>| ambient_identity(|_| v.map(str::to_owned));
        assert_eq!(from(None).unwrap(), AmbientIdentity::None);
        assert_eq!(from(Some("none")).unwrap(), AmbientIdentity::None);
        assert_eq!(
            from(Some("webIdentity")).unwrap(),
            AmbientIdentity::WebIdentity
        );
        assert_eq!(
            from(Some("WebIdentity")).unwrap_err().class,
            ErrorClass::Config
        );
    }

    #[test]
    fn web_identity_needs_a_token_file_that_exists_and_a_role() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "t").unwrap();
        let token = token.to_string_lossy().into_owned();
        let env = |file: Option<&str>, role: Option<&str>| {
            let (file, role) = (file.map(str::to_owned), role.map(str::to_owned));
            S3Auth::web_identity(move |k| match k {
                "AWS_WEB_IDENTITY_TOKEN_FILE" => file.clone(),
                "AWS_ROLE_ARN" => role.clone(),
                _ => None,
            })
        };
        let missing = |r: Result<S3Auth>| r.err().map(|e| e.class);
        assert_eq!(
            missing(env(None, Some("arn"))),
            Some(ErrorClass::WebIdentityMissing)
        );
        assert_eq!(
            missing(env(Some(&token), None)),
            Some(ErrorClass::WebIdentityMissing)
        );
        assert_eq!(
            missing(env(Some(&token), Some(""))),
            Some(ErrorClass::WebIdentityMissing)
        );
        assert_eq!(
            missing(env(Some("/nonexistent/token"), Some("arn"))),
            Some(ErrorClass::WebIdentityMissing)
        );
        assert!(matches!(
            env(Some(&token), Some("arn:aws:iam::1:role/r")),
            Ok(S3Auth::WebIdentity { role_arn, .. }) if role_arn == "arn:aws:iam::1:role/r"
        ));
    }

    #[test]
    fn ids_are_the_time_to_the_millisecond_and_a_random_suffix_and_sort_by_time() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::Local(root.path().to_path_buf());
        let scope = Scope::new("shop", "orders").unwrap();
        let at: Timestamp = "2026-11-24T10:15:00.123Z".parse().unwrap();
        let (a, b) = (
            store.claim(&scope, at).unwrap(),
            store.claim(&scope, at).unwrap(),
        );
        assert_ne!(a.id, b.id);
        for id in [&a.id, &b.id] {
            let (time, suffix) = id.rsplit_once('-').unwrap();
            assert_eq!(time, "20261124T101500Z-123");
            assert!(
                suffix.len() == 8 && suffix.bytes().all(|c| c.is_ascii_hexdigit()),
                "{id}"
            );
            assert!(root.path().join("shop/orders").join(id).is_dir());
        }
        let later = store
            .claim(&scope, at + jiff::SignedDuration::from_millis(1))
            .unwrap();
        assert!(later.id > a.id && later.id > b.id);
        // Ids of earlier agents (to the second) sort with them by time.
        assert!("20261124T101500Z" < a.id.as_str() && a.id.as_str() < "20261124T101501Z");
        assert!(Scope::new("Shop", "orders").is_err());
        assert!(Scope::new("shop", "../x").is_err());
        assert!(Scope::new("shop", "orders_safety").is_ok());
    }

    #[test]
    fn a_number_that_contains_403_is_not_a_403() {
        let slow_down = "Error performing GET http://127.0.0.1:40319/backups?list-type=2 in 6.393434037s, after 10 retries - Server returned non-2xx status code: 503 Service Unavailable: <Error><Code>SlowDown</Code></Error>";
        assert_eq!(classify(slow_down, S3Role::Backups), ErrorClass::Storage);
        let denied = "Server returned non-2xx status code: 403 Forbidden: <Error><Code>AccessDenied</Code></Error>";
        assert_eq!(classify(denied, S3Role::Backups), ErrorClass::Auth);
        assert!(has_status("status 403", "403"));
        assert!(!has_status("port 40319, 1.403s, 94031", "403"));
        assert!(not_implemented(
            "Server returned non-2xx status code: 501 Not Implemented: <Code>NotImplemented</Code>"
        ));
        assert!(!not_implemented(slow_down));
    }
}
