//! The work itself, shared by the CLI, the Jobs the operator creates and the local drill:
//! back up an asset, restore one, verify and list what is stored.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use lifeboat_api::agent_job::{KubernetesStateScope, POD_IP_ENV, REDIS_LOAD_PORT};
use lifeboat_api::agent_result::{ArtifactInfo, BackupMetadata, METADATA_SCHEMA_VERSION, ToolInfo};
use lifeboat_api::backup_policy::{
    Asset, AssetSource, Compression, CompressionAlgorithm, Encryption,
};
use lifeboat_api::common::{
    PostgresConnection, RedisConnection, RestoreTarget, S3Location, SecretKeyRef, Target,
};
use lifeboat_api::identity;
use lifeboat_api::restore_request::RestoreOptions;

use crate::crypto::{Identities, Recipients};
use crate::error::{AgentError, Result};
use crate::layout::{
    Listed, Local, S3Auth, S3Role, S3Settings, S3Store, Scope, Slot, Store, ambient_identity,
};
use crate::signing::{SigningKey, Trust, Unsigned};
use crate::stream::{Decoding, Encoding};
use crate::{bucket, postgres, redis, stream};

/// Where secrets are read from and backups written to.
pub struct Env {
    pub store: Store,
    /// Secret `name`/`key` is the file `<secrets_dir>/<name>/<key>`.
    pub secrets_dir: PathBuf,
    /// The namespace's signing key: every verb that writes or reads backups needs it.
    pub signing_key: Option<SigningKey>,
    /// Whether unsigned (legacy) metadata is read.
    pub unsigned: Unsigned,
}

impl Env {
    /// An environment that reads Secrets from `secrets_dir` and has no store of its own (a
    /// validation Job, or the first step of building one).
    pub fn without_store(secrets_dir: PathBuf) -> Self {
        Self {
            store: Store::Local(PathBuf::new()),
            secrets_dir,
            signing_key: None,
            unsigned: Unsigned::Refuse,
        }
    }

    /// The signing key, which every verb that writes or reads backups needs.
    pub fn key(&self) -> Result<&SigningKey> {
        self.signing_key.as_ref().ok_or_else(|| {
            AgentError::config(
                "no signing key: give --signing-key FILE or LIFEBOAT_SIGNING_KEY_FILE (in a Job, the Secret lifeboat-signing-key the operator keeps in its namespace)",
            )
        })
    }

    /// What metadata read from the store is checked against.
    pub fn trust(&self) -> Result<Trust<'_>> {
        Ok(Trust {
            key: Some(self.key()?),
            unsigned: self.unsigned,
        })
    }

    /// The value of Secret key `r`, from its mounted file. Secret volumes are optional, so a
    /// Secret (or key) missing from the namespace is a missing file here: `SecretNotFound`,
    /// naming the Secret and key, never a value.
    pub fn secret(&self, r: &SecretKeyRef) -> Result<String> {
        let path = self.secrets_dir.join(&r.name).join(&r.key);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                AgentError::new(
                    lifeboat_api::agent_result::ErrorClass::SecretNotFound,
                    format!(
                        "Secret {:?} with key {:?} not found in the namespace",
                        r.name, r.key
                    ),
                )
            } else {
                AgentError::config(format!(
                    "Secret {}/{} (expected at {}): {e}",
                    r.name,
                    r.key,
                    path.display()
                ))
            }
        })?;
        Ok(text.trim_end_matches(['\n', '\r']).to_owned())
    }

    /// A client of the bucket at `loc`, its keys and CA bundle read from the Secret files.
    /// Without a `credentialsSecret` only the platform's [`identity::AmbientIdentity`] decides,
    /// read from the pod's environment: refused under `none`, the web identity token only under
    /// `webIdentity`.
    pub fn s3(&self, loc: &S3Location, role: S3Role) -> Result<S3Store> {
        let env = |name: &str| std::env::var(name).ok();
        let what = format!("s3://{}", loc.bucket);
        let auth = match identity::decide(loc, ambient_identity(env)?, &what) {
            Ok(identity::S3Identity::Keys(c)) => {
                let key = |k: &str| SecretKeyRef {
                    name: c.name.clone(),
                    key: k.to_owned(),
                };
                S3Auth::Keys {
                    id: self.secret(&key(&c.access_key_id_key))?,
                    secret: self.secret(&key(&c.secret_access_key_key))?,
                }
            }
            Ok(identity::S3Identity::WebIdentity) => S3Auth::web_identity(env)?,
            Err(refused) => {
                return Err(AgentError::new(
                    lifeboat_api::agent_result::ErrorClass::AmbientIdentityDisabled,
                    refused.to_string(),
                ));
            }
        };
        S3Store::new(S3Settings {
            endpoint: loc.endpoint.clone(),
            bucket: loc.bucket.clone(),
            prefix: loc.prefix.clone(),
            region: loc.region.clone(),
            path_style: loc.force_path_style,
            auth,
            ca_bundle: loc
                .ca_bundle_secret
                .as_ref()
                .map(|r| self.secret(r))
                .transpose()?,
            role,
        })
    }

    /// The age identities in Secret key `r`.
    pub fn identities(&self, r: &SecretKeyRef) -> Result<Identities> {
        Identities::parse(&self.secret(r)?, &format!("Secret {}/{}", r.name, r.key))
    }

    pub fn pg(&self, c: &PostgresConnection) -> Result<postgres::Conn> {
        Ok(postgres::Conn {
            host: c.host.clone(),
            port: c.port,
            user: c.user.clone(),
            password: c
                .password_secret
                .as_ref()
                .map(|s| self.secret(s))
                .transpose()?,
            ssl_mode: c.ssl_mode,
        })
    }

    pub fn redis(&self, c: &RedisConnection) -> Result<redis::Conn> {
        Ok(redis::Conn {
            host: c.host.clone(),
            port: c.port,
            username: c.username.clone(),
            password: c
                .password_secret
                .as_ref()
                .map(|s| self.secret(s))
                .transpose()?,
            tls: c.tls,
        })
    }
}

/// The zstd level a policy's compression asks for (`None`: stored uncompressed).
pub fn level(c: &Compression) -> Option<i32> {
    match c.algorithm {
        CompressionAlgorithm::Zstd => Some(i32::from(c.level)),
        CompressionAlgorithm::None => None,
    }
}

/// The file name suffix of an encoding: `.zst` when compressed, then `.age` when encrypted, so
/// a person with only the files knows how to read them (`age -d | zstd -d`).
pub(crate) fn suffix(e: &Encoding) -> String {
    let mut s = String::new();
    if e.level.is_some() {
        s.push_str(".zst");
    }
    if e.recipients.is_some() {
        s.push_str(".age");
    }
    s
}

/// Backs up `asset` into the backup directory `dir` (already claimed as `id`) and commits its
/// metadata last. With `encryption`, every artifact is encrypted to its recipients after
/// compression. On failure the asset's partial files are removed: nothing half-written stays.
pub fn backup(
    env: &Env,
    slot: &Slot,
    asset: &Asset,
    compression: &Compression,
    encryption: Option<&Encryption>,
    scope: Option<&KubernetesStateScope>,
) -> Result<BackupMetadata> {
    let started = Timestamp::now();
    // No key, no backup: checked before the source is touched.
    let key = env.key()?;
    let encoding = Encoding {
        level: level(compression),
        recipients: encryption
            .map(|e| Recipients::parse(&e.recipients))
            .transpose()?,
    };
    let canary = if asset.canary {
        Some(write_canary(env, asset, &slot.id)?)
    } else {
        None
    };
    let mut created: Vec<String> = Vec::new();
    let result = backup_artifacts(env, slot, asset, &encoding, scope, &mut created);
    let (artifacts, snapshot, tool, source) = match result {
        Ok(v) => v,
        Err(e) => {
            env.store.discard(slot, &created);
            return Err(e);
        }
    };
    crate::fault::point("backup.artifacts-stored");
    let metadata = BackupMetadata {
        schema_version: METADATA_SCHEMA_VERSION,
        // commit records the slot's namespace, policy and id.
        namespace: String::new(),
        backup_id: slot.id.clone(),
        policy: slot.scope.policy().to_owned(),
        asset: asset.name.clone(),
        kind: asset.kind(),
        tool,
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        source,
        started_at: started,
        finished_at: Timestamp::now(),
        snapshot_time: snapshot,
        artifacts,
        compression: match compression.algorithm {
            CompressionAlgorithm::Zstd => format!("zstd:{}", compression.level),
            CompressionAlgorithm::None => "none".into(),
        },
        encryption: encoding.recipients.as_ref().map(Recipients::info),
        canary,
        adopted_from: None,
        object_lock: None,
        base_backup: None,
        signature: None,
    };
    env.store.commit(slot, metadata, key)
}

/// The canary marker of backup `id`, written into the asset's source just before it is captured.
fn write_canary(
    env: &Env,
    asset: &Asset,
    id: &str,
) -> Result<lifeboat_api::agent_result::CanaryMarker> {
    let now = Timestamp::now();
    match &asset.source {
        AssetSource::Postgres(pg) => {
            crate::canary::write_postgres(&env.pg(&pg.connection)?, &pg.databases, id, now)
        }
        AssetSource::Redis(r) => crate::canary::write_redis(&env.redis(&r.connection)?, id, now),
        AssetSource::ObjectStorage(b) => crate::canary::write_bucket(env, &b.source, id, now),
        AssetSource::KubernetesState(_) => Err(AgentError::config(
            "canary markers are written into PostgreSQL, Redis and bucket sources only",
        )),
    }
}

type Artifacts = (Vec<ArtifactInfo>, Timestamp, ToolInfo, String);

fn backup_artifacts(
    env: &Env,
    slot: &Slot,
    asset: &Asset,
    encoding: &Encoding,
    scope: Option<&KubernetesStateScope>,
    created: &mut Vec<String>,
) -> Result<Artifacts> {
    let suffix = suffix(encoding);
    match &asset.source {
        AssetSource::Postgres(pg) => {
            let conn = env.pg(&pg.connection)?;
            let mut extra = Vec::new();
            for s in &pg.dump_options.schemas {
                extra.push(format!("--schema={s}"));
            }
            for s in &pg.dump_options.exclude_schemas {
                extra.push(format!("--exclude-schema={s}"));
            }
            for t in &pg.dump_options.exclude_tables {
                extra.push(format!("--exclude-table={t}"));
            }
            if pg.dump_options.no_owner {
                extra.push("--no-owner".into());
            }
            if !pg.allow_empty {
                for db in &pg.databases {
                    postgres::ensure_not_empty(&conn, db)?;
                }
            }
            let mut artifacts = Vec::new();
            let mut snapshot: Option<Timestamp> = None;
            for db in &pg.databases {
                let name = format!("{}.{db}.pgdump{suffix}", asset.name);
                created.push(name.clone());
                let (stored, at) = postgres::backup(&conn, db, &extra, &mut |r| {
                    env.store.put(slot, &name, r, encoding)
                })?;
                snapshot = Some(snapshot.map_or(at, |s| s.min(at)));
                artifacts.push(ArtifactInfo {
                    name,
                    raw_bytes: stored.raw_bytes,
                    stored_bytes: stored.stored_bytes,
                    sha256: stored.sha256,
                });
            }
            let source = format!(
                "postgres://{}:{}/{}",
                conn.host,
                conn.port,
                pg.databases.join(",")
            );
            Ok((
                artifacts,
                snapshot.unwrap_or_else(Timestamp::now),
                crate::tools::version("pg_dump")?,
                source,
            ))
        }
        AssetSource::Redis(r) => {
            let conn = env.redis(&r.connection)?;
            if !r.allow_empty {
                redis::ensure_not_empty(&conn)?;
            }
            let name = format!("{}.rdb{suffix}", asset.name);
            created.push(name.clone());
            let (stored, at) =
                redis::backup(&conn, &mut |r| env.store.put(slot, &name, r, encoding))?;
            let artifact = ArtifactInfo {
                name,
                raw_bytes: stored.raw_bytes,
                stored_bytes: stored.stored_bytes,
                sha256: stored.sha256,
            };
            let source = format!("redis://{}:{}", conn.host, conn.port);
            Ok((
                vec![artifact],
                at,
                crate::tools::version("redis-cli")?,
                source,
            ))
        }
        AssetSource::ObjectStorage(b) => {
            let (artifacts, at) =
                bucket::backup(env, slot, &asset.name, b, encoding, &suffix, created)?;
            Ok((
                artifacts,
                at,
                ToolInfo {
                    name: "lifeboat-agent".into(),
                    version: format!("{} (object_store)", env!("CARGO_PKG_VERSION")),
                },
                bucket::describe(&b.source),
            ))
        }
        AssetSource::KubernetesState(k) => {
            let (state, source) = crate::kubestate::backup(k, needs_scope(scope)?)?;
            // One document: a namespace's objects are megabytes, not gigabytes, so it is built
            // in memory and streamed through the same encode path as every artifact.
            let json = serde_json::to_vec(&state)
                .map_err(|e| AgentError::config(format!("encoding the cluster state: {e}")))?;
            let name = format!("{}.cluster_state.json{suffix}", asset.name);
            created.push(name.clone());
            let stored = env.store.put(slot, &name, &mut json.as_slice(), encoding)?;
            Ok((
                vec![ArtifactInfo {
                    name,
                    raw_bytes: stored.raw_bytes,
                    stored_bytes: stored.stored_bytes,
                    sha256: stored.sha256,
                }],
                state.captured_at,
                ToolInfo {
                    name: "lifeboat-agent".into(),
                    version: format!(
                        "{} (API discovery; kube-apiserver {})",
                        env!("CARGO_PKG_VERSION"),
                        state.server_version
                    ),
                },
                source,
            ))
        }
    }
}

/// Checks every artifact of a listed backup against its metadata; returns the local copy.
pub fn verify(env: &Env, listed: &Listed) -> Result<crate::layout::Local> {
    let local = env.store.local(listed)?;
    for a in &listed.metadata.artifacts {
        stream::verify(&local.dir.join(&a.name), &a.sha256, a.stored_bytes)?;
    }
    Ok(local)
}

/// How the artifacts of `listed` (its files in `local`) are read back. For an encrypted backup
/// the identity in Secret key `identity` is read and tried on every artifact's age header: a
/// missing identity (Config) or a wrong one (Auth) is found before anything is touched.
pub fn decoding(
    env: &Env,
    listed: &Listed,
    local: &Local,
    identity: Option<&SecretKeyRef>,
) -> Result<Decoding> {
    let compressed = listed.metadata.compression.starts_with("zstd");
    let Some(info) = &listed.metadata.encryption else {
        return Ok(Decoding {
            compressed,
            identities: None,
        });
    };
    if info.algorithm != "age" {
        return Err(AgentError::config(format!(
            "backup {} is encrypted with {:?}, which this agent cannot decrypt",
            listed.id, info.algorithm
        )));
    }
    let r = identity.ok_or_else(|| {
        AgentError::config(format!(
            "backup {} of {} is encrypted with age (to {}): restoring it needs the identity, set encryption.identitySecret",
            listed.id,
            listed.metadata.asset,
            info.recipients.join(", ")
        ))
    })?;
    let identities = env.identities(r)?;
    for a in &listed.metadata.artifacts {
        stream::check_identity(&local.dir.join(&a.name), &identities)?;
    }
    Ok(Decoding {
        compressed,
        identities: Some(identities),
    })
}

/// Restores `listed` (a backup of `asset`) into `target`, or into the asset's own source when
/// there is no target; an encrypted backup is decrypted with the age identity in Secret key
/// `identity`. Checksums (and the identity) are checked first: a corrupt backup or a wrong key
/// never touches the target.
pub fn restore(
    env: &Env,
    listed: &Listed,
    asset: &Asset,
    target: Option<&RestoreTarget>,
    options: &RestoreOptions,
    identity: Option<&SecretKeyRef>,
    scope: Option<&KubernetesStateScope>,
) -> Result<String> {
    let local = env.store.local(listed)?;
    let decoding = decoding(env, listed, &local, identity)?;
    let to = target.map(|t| &t.to);
    match &asset.source {
        AssetSource::Postgres(pg) => {
            let (conn, rename, create) = match to {
                Some(Target::Postgres(t)) => (
                    env.pg(&t.connection)?,
                    t.database.clone(),
                    t.create_database,
                ),
                None => (env.pg(&pg.connection)?, None, false),
                Some(_) => return Err(not_its_kind(asset, "PostgreSQL (postgres)")),
            };
            // Every database's dump is decoded and verified (one read of the stored bytes)
            // before the first pg_restore: a corrupt artifact never touches a target.
            let mut dumps = Vec::new();
            for a in &listed.metadata.artifacts {
                let db = a
                    .name
                    .strip_prefix(&format!("{}.", asset.name))
                    .and_then(|rest| rest.split(".pgdump").next())
                    .ok_or_else(|| {
                        AgentError::integrity(format!("unexpected artifact name {}", a.name))
                    })?;
                // pg_restore --jobs needs a seekable file, so the dump is staged in TMPDIR,
                // indexed on the way so that its TOC gets the data offsets a streamed pg_dump
                // could not write (see pgarchive).
                let scratch = tempfile::NamedTempFile::new()
                    .map_err(|e| AgentError::storage("temporary file", e))?;
                let tmp_err = |e| AgentError::storage("temporary file", e);
                let mut out = crate::pgarchive::Indexing {
                    inner: std::io::BufWriter::with_capacity(
                        256 * 1024,
                        scratch.reopen().map_err(tmp_err)?,
                    ),
                    indexer: crate::pgarchive::Indexer::new(),
                };
                stream::unpack_verified(
                    &local.dir.join(&a.name),
                    &decoding,
                    &a.sha256,
                    a.stored_bytes,
                    &mut out,
                )?;
                out.inner.flush().map_err(tmp_err)?;
                let mut indexer = out.indexer;
                indexer.finish();
                let patched = indexer
                    .patch(&mut scratch.reopen().map_err(tmp_err)?)
                    .map_err(tmp_err)?;
                match indexer.failure() {
                    None => eprintln!("{db}: {patched} data offsets written into the dump's TOC"),
                    Some(why) => eprintln!(
                        "{db}: dump not indexed ({why}); pg_restore will scan it for its data"
                    ),
                }
                dumps.push((db.to_owned(), scratch));
            }
            wait_until_serving(&format!("PostgreSQL {}:{}", conn.host, conn.port), || {
                postgres::query_within(&conn, "postgres", "SELECT 1", PROBE_TIMEOUT).map(drop)
            })?;
            let mut done = Vec::new();
            for (db, dump) in &dumps {
                let into = rename.clone().unwrap_or_else(|| db.clone());
                postgres::restore(
                    &conn,
                    dump.path(),
                    &into,
                    create,
                    options.postgres_jobs,
                    options.clean,
                )?;
                done.push(format!("postgres://{}:{}/{into}", conn.host, conn.port));
            }
            Ok(done.join(", "))
        }
        AssetSource::Redis(r) => {
            let into = match to {
                Some(Target::Redis(t)) => Some(t),
                None => None,
                Some(_) => return Err(not_its_kind(asset, "Redis (redis)")),
            };
            let artifact = listed
                .metadata
                .artifacts
                .first()
                .ok_or_else(|| AgentError::integrity("backup has no artifact"))?;
            for a in &listed.metadata.artifacts {
                stream::verify(&local.dir.join(&a.name), &a.sha256, a.stored_bytes)?;
            }
            let conn = env.redis(into.map_or(&r.connection, |t| &t.connection))?;
            let stored = local.dir.join(&artifact.name);
            // dataDir names a directory the agent writes (Redis on a host); without it the
            // target is a server the agent reaches only over the network (a pod with its own
            // volume), loaded over replication.
            match r.restore_data_dir(into) {
                Some(data_dir) => {
                    redis::restore(&conn, &stored, &decoding, Path::new(&data_dir), "dump.rdb")?;
                    Ok(format!("{data_dir}/dump.rdb (restart Redis to load it)"))
                }
                None => {
                    let rdb = tempfile::NamedTempFile::new()
                        .map_err(|e| AgentError::storage("temporary file", e))?;
                    {
                        let file = rdb
                            .reopen()
                            .map_err(|e| AgentError::storage("temporary file", e))?;
                        stream::unpack(&stored, &decoding, std::io::BufWriter::new(&file))?;
                        file.sync_all()
                            .map_err(|e| AgentError::storage("temporary file", e))?;
                    }
                    let keys = redis::check_rdb(rdb.path())?;
                    wait_until_serving(&format!("Redis {}:{}", conn.host, conn.port), || {
                        conn.run_within(0, &["PING"], PROBE_TIMEOUT).map(drop)
                    })?;
                    let loaded =
                        crate::redis_load::load(&conn, rdb.path(), keys, load_listener()?)?;
                    Ok(format!(
                        "redis://{}:{}: {} keys loaded over replication, {}",
                        conn.host,
                        conn.port,
                        loaded.keys,
                        loaded.durable.describe()
                    ))
                }
            }
        }
        AssetSource::ObjectStorage(b) => {
            let into = match to {
                None => &b.source,
                Some(Target::ObjectStorage(s3)) => s3,
                Some(_) => return Err(not_its_kind(asset, "a bucket (objectStorage)")),
            };
            bucket::restore(env, listed, &local, &decoding, into)
        }
        AssetSource::KubernetesState(_) => {
            kubernetes_state(listed, &local, &decoding, target, needs_scope(scope)?, true)
        }
    }
}

/// How long a restore waits for its target to answer at all. A restore of a whole namespace
/// recreates the database's StatefulSet in its Kubernetes-state step just before, and its pod
/// is not serving yet when the data step starts (restore Jobs are never retried, and the
/// operator has no RBAC on users' workloads to watch their readiness); an address nobody
/// serves within this bound is the unreachable target it looks like.
const TARGET_WAIT: std::time::Duration = std::time::Duration::from_secs(180);
/// One probe's bound: a connection attempt or its answer.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Probes the target until it answers: only an unreachable or silent server is waited for
/// ([`TARGET_WAIT`] at most); any other answer, a refusal included, ends the wait, and the
/// restore then meets that answer itself.
fn wait_until_serving(what: &str, mut probe: impl FnMut() -> Result<()>) -> Result<()> {
    use lifeboat_api::agent_result::ErrorClass;
    let deadline = std::time::Instant::now() + TARGET_WAIT;
    let mut said = false;
    loop {
        match probe() {
            Err(e)
                if matches!(e.class, ErrorClass::SourceUnreachable | ErrorClass::Timeout)
                    && std::time::Instant::now() < deadline =>
            {
                if !said {
                    eprintln!("{what} not serving yet ({e}); waiting up to {TARGET_WAIT:?}");
                    said = true;
                }
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
            Err(e) if matches!(e.class, ErrorClass::SourceUnreachable | ErrorClass::Timeout) => {
                return Err(e);
            }
            _ => {
                if said {
                    eprintln!("{what} serving");
                }
                return Ok(());
            }
        }
    }
}

/// Where a Redis load listens: every address of the pod on [`REDIS_LOAD_PORT`], advertised
/// as the pod's IP from the downward API.
fn load_listener() -> Result<crate::redis_load::Listener> {
    let ip = std::env::var(POD_IP_ENV)
        .ok()
        .and_then(|v| v.parse::<std::net::IpAddr>().ok())
        .ok_or_else(|| {
            AgentError::config(format!(
                "a Redis target without dataDir is loaded over replication, which needs the pod's IP in {POD_IP_ENV}"
            ))
        })?;
    let any: std::net::IpAddr = if ip.is_ipv6() {
        std::net::Ipv6Addr::UNSPECIFIED.into()
    } else {
        std::net::Ipv4Addr::UNSPECIFIED.into()
    };
    crate::redis_load::Listener::bind(std::net::SocketAddr::new(any, REDIS_LOAD_PORT), ip)
}

/// A restore target of another kind than its asset (admission does not compare the two).
fn not_its_kind(asset: &Asset, kind: &str) -> AgentError {
    AgentError::config(format!(
        "the restore target of {} is not {kind}, the asset's kind",
        asset.name
    ))
}

/// The backups of `asset` in `scope` at `env`, oldest first, as `env`'s trust admits them.
pub fn list_asset(env: &Env, scope: &Scope, asset: &str) -> Result<Vec<Listed>> {
    env.store.list_asset(scope, asset, env.trust()?)
}

/// Applies `rules` to the backups of `asset`, and clears what unfinished backups of it left once
/// they have been idle for `stale_after` ([`crate::retention::STALE_AFTER`] after each backup):
/// returns what was deleted (or, without `execute`, would be). A listing that fails aborts
/// everything: an unreadable history is never permission to delete. `fresh` is the backup this
/// pass follows, which it never deletes.
#[allow(clippy::too_many_arguments)]
pub fn prune(
    env: &Env,
    scope: &Scope,
    asset: &str,
    fresh: Option<&str>,
    rules: &lifeboat_api::backup_policy::Retention,
    execute: bool,
    allow_mass_delete: bool,
    stale_after: jiff::SignedDuration,
) -> Result<Vec<String>> {
    let listed = list_asset(env, scope, asset)?;
    prune_listed(
        env,
        scope,
        asset,
        listed,
        fresh,
        rules,
        execute,
        allow_mass_delete,
        stale_after,
    )
    .map(|(deleted, _)| deleted)
}

/// [`prune`] on `listed`, the asset's backups as [`list_asset`] just returned them; also returns
/// the backups it kept, for the caller that reads the same listing next (off-site copies) and
/// need not list the store again.
#[allow(clippy::too_many_arguments)]
pub fn prune_listed(
    env: &Env,
    scope: &Scope,
    asset: &str,
    listed: Vec<Listed>,
    fresh: Option<&str>,
    rules: &lifeboat_api::backup_policy::Retention,
    execute: bool,
    allow_mass_delete: bool,
    stale_after: jiff::SignedDuration,
) -> Result<(Vec<String>, Vec<Listed>)> {
    let candidates: Vec<crate::retention::Candidate> = listed
        .iter()
        .map(|l| crate::retention::Candidate {
            id: l.id.clone(),
            snapshot_time: l.metadata.snapshot_time,
            verified: l.verified.is_some(),
            fresh: fresh == Some(l.id.as_str()),
            locked_until: l.metadata.object_lock.as_ref().map(|o| o.retain_until),
        })
        .collect();
    let doomed = crate::retention::select(
        asset,
        &candidates,
        rules,
        Timestamp::now(),
        allow_mass_delete,
    )
    .map_err(|e| AgentError::config(e.to_string()))?;
    // Unfinished backups (no metadata) of this asset, once idle for a day: never one in progress.
    let now = Timestamp::now();
    let stale: Vec<_> = env
        .store
        .leftovers(scope, asset)?
        .into_iter()
        .filter(|l| crate::retention::is_stale(l.newest, now, stale_after))
        .collect();
    if execute {
        for l in listed.iter().filter(|l| doomed.contains(&l.id)) {
            env.store.remove(l)?;
        }
        for l in &stale {
            env.store.discard(&l.slot, &l.files);
        }
    }
    let kept = listed
        .into_iter()
        .filter(|l| !execute || !doomed.contains(&l.id))
        .collect();
    let deleted = doomed
        .into_iter()
        .chain(
            stale
                .iter()
                .map(|l| format!("{} (unfinished: {})", l.slot.id, l.files.join(", "))),
        )
        .collect();
    Ok((deleted, kept))
}

/// Applies a Kubernetes-state backup (a server-side dry run unless `execute`), after its checksum
/// is verified in the one read that decodes it.
fn kubernetes_state(
    listed: &Listed,
    local: &crate::layout::Local,
    decoding: &stream::Decoding,
    target: Option<&RestoreTarget>,
    scope: &KubernetesStateScope,
    execute: bool,
) -> Result<String> {
    let artifact = listed
        .metadata
        .artifacts
        .first()
        .ok_or_else(|| AgentError::integrity("backup has no artifact"))?;
    let mut plain = Vec::new();
    stream::unpack_verified(
        &local.dir.join(&artifact.name),
        decoding,
        &artifact.sha256,
        artifact.stored_bytes,
        &mut plain,
    )?;
    let state: crate::kubestate::ClusterState = serde_json::from_slice(&plain).map_err(|e| {
        AgentError::integrity(format!("{}: not a cluster state: {e}", artifact.name))
    })?;
    let mapping = target.and_then(|t| match &t.to {
        Target::KubernetesState(k) => Some(k),
        _ => None,
    });
    let done = crate::kubestate::restore(&state, mapping, scope, execute)?;
    let mut pending = if done.pending > 0 {
        format!(
            ", {} more wait for a CRD or a namespace this restore creates (not dry-run)",
            done.pending
        )
    } else {
        String::new()
    };
    if done.left_to_platform > 0 {
        pending.push_str(&format!(
            ", {} left to the platform team (Namespaces, quotas, limit ranges)",
            done.left_to_platform
        ));
    }
    Ok(format!(
        "kubernetes: {} objects of {} kinds {}{pending}",
        done.objects,
        done.kinds,
        if execute {
            "applied (server-side apply)"
        } else {
            "accepted by a server-side dry run"
        }
    ))
}

/// The dry run of a Kubernetes-state restore: every object sent to the API server, which
/// validates and admits it, with nothing changed.
pub fn plan_kubernetes_state(
    env: &Env,
    listed: &Listed,
    target: Option<&RestoreTarget>,
    identity: Option<&SecretKeyRef>,
    scope: Option<&KubernetesStateScope>,
) -> Result<String> {
    let local = env.store.local(listed)?;
    let decoding = decoding(env, listed, &local, identity)?;
    kubernetes_state(
        listed,
        &local,
        &decoding,
        target,
        needs_scope(scope)?,
        false,
    )
}

/// A Kubernetes-state backup or restore is never run without a scope: there is no default
/// wider than what the caller says.
fn needs_scope(scope: Option<&KubernetesStateScope>) -> Result<&KubernetesStateScope> {
    scope.ok_or_else(|| {
        AgentError::config(
            "a Kubernetes-state backup or restore needs a scope: --allow-namespace NS \
             (repeatable) or --cluster-scope (inside a Job, the operator's document gives it)",
        )
    })
}
