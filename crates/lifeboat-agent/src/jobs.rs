//! The work itself, shared by the CLI, the Jobs the operator creates and the local drill:
//! back up an asset, restore one, verify and list what is stored.

use std::path::PathBuf;

use jiff::Timestamp;
use lifeboat_api::agent_job::KubernetesStateScope;
use lifeboat_api::agent_result::{BackupMetadata, METADATA_SCHEMA_VERSION};
use lifeboat_api::backup_policy::{Asset, Compression, CompressionAlgorithm, Encryption};
use lifeboat_api::common::{
    PostgresConnection, RedisConnection, RestoreTarget, S3Location, SecretKeyRef,
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
use crate::{postgres, redis, stream};

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
    let driver = crate::kinds::driver(&asset.source);
    let canary = if asset.canary {
        Some(driver.canary(env, &slot.id, Timestamp::now())?)
    } else {
        None
    };
    let mut created: Vec<String> = Vec::new();
    let capture = crate::kinds::Capture {
        env,
        slot,
        asset,
        encoding: &encoding,
        suffix: &suffix(&encoding),
        scope,
    };
    let result = driver.capture(&capture, &mut created);
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
    crate::kinds::driver(&asset.source).restore(&crate::kinds::Restore {
        env,
        listed,
        local: &local,
        decoding: &decoding,
        asset,
        to: target.map(|t| &t.to),
        options,
        scope,
    })
}

/// How long a restore waits for its target to answer at all. A restore of a whole namespace
/// recreates the database's StatefulSet in its Kubernetes-state step just before, and its pod
/// is not serving yet when the data step starts (restore Jobs are never retried, and the
/// operator has no RBAC on users' workloads to watch their readiness); an address nobody
/// serves within this bound is the unreachable target it looks like.
const TARGET_WAIT: std::time::Duration = std::time::Duration::from_secs(180);
/// One probe's bound: a connection attempt or its answer.
pub(crate) const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Probes the target until it answers: only an unreachable or silent server is waited for
/// ([`TARGET_WAIT`] at most); any other answer, a refusal included, ends the wait, and the
/// restore then meets that answer itself.
pub(crate) fn wait_until_serving(what: &str, mut probe: impl FnMut() -> Result<()>) -> Result<()> {
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
    crate::kinds::apply_kubernetes_state(
        listed,
        &local,
        &decoding,
        target.map(|t| &t.to),
        needs_scope(scope)?,
        false,
    )
}

/// A Kubernetes-state backup or restore is never run without a scope: there is no default
/// wider than what the caller says.
pub(crate) fn needs_scope(scope: Option<&KubernetesStateScope>) -> Result<&KubernetesStateScope> {
    scope.ok_or_else(|| {
        AgentError::config(
            "a Kubernetes-state backup or restore needs a scope: --allow-namespace NS \
             (repeatable) or --cluster-scope (inside a Job, the operator's document gives it)",
        )
    })
}
