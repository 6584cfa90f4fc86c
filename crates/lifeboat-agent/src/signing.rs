//! Signed metadata. Every `<asset>.metadata.json` carries an HMAC-SHA256, with its namespace's
//! key, over its canonical JSON (the document without `signature`, keys sorted, no whitespace).
//! Artifacts and a bucket's manifest are covered through their sha256 in it, so whoever can
//! write to the store but holds no key cannot make a backup that list, verify or restore
//! accept; and since each namespace has its own key (derived by the operator from the platform
//! team's master key), one namespace's backups do not verify in another's.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use hmac::{KeyInit, Mac};
use lifeboat_api::agent_result::{
    BackupMetadata, LEGACY_METADATA_SCHEMA_VERSION, METADATA_SCHEMA_VERSION, MetadataSignature,
    SignatureAlgorithm,
};
use serde_json::Value;

use crate::error::{AgentError, Result};
use crate::stream::hex;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// A namespace's signing key.
pub struct SigningKey {
    bytes: Vec<u8>,
    id: String,
}

/// Whether metadata without a signature is read: only for legacy backups, on request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Unsigned {
    #[default]
    Refuse,
    /// `allowUnsigned` / `--allow-unsigned`.
    Accept,
}

/// What reading a backup's metadata checks it against.
#[derive(Clone, Copy)]
pub struct Trust<'a> {
    /// The namespace's key; `None` only where no signed metadata can be (the old layout).
    pub key: Option<&'a SigningKey>,
    pub unsigned: Unsigned,
}

impl SigningKey {
    /// Shortest key accepted: HMAC-SHA256's output size.
    pub const MIN_BYTES: usize = 32;

    /// A key from its bytes (`what` names where they came from, for messages).
    pub fn from_bytes(bytes: Vec<u8>, what: &str) -> Result<Self> {
        if bytes.len() < Self::MIN_BYTES {
            return Err(AgentError::config(format!(
                "{what}: a signing key needs at least {} bytes, it has {}",
                Self::MIN_BYTES,
                bytes.len()
            )));
        }
        let id = hex(&mac(&bytes, &[b"lifeboat.dev/signing/key-id"])?[..8]);
        Ok(Self { bytes, id })
    }

    /// Reads the key file at `path` (its bytes are the key, as the Secret's value is).
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path)
            .map_err(|e| AgentError::config(format!("signing key {}: {e}", path.display())))?;
        Self::from_bytes(bytes, &path.display().to_string())
    }

    /// The key at `path`, created (32 random bytes, mode 0600) when there is none: for the
    /// local drill, which needs no platform team.
    pub fn read_or_create(path: &Path) -> Result<Self> {
        if !path.exists() {
            let mut bytes = vec![0u8; Self::MIN_BYTES];
            getrandom::fill(&mut bytes)
                .map_err(|e| AgentError::config(format!("random bytes: {e}")))?;
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| AgentError::storage(dir.display(), e))?;
            }
            use std::os::unix::fs::OpenOptionsExt;
            let created = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .and_then(|mut f| f.write_all(&bytes).and_then(|()| f.sync_all()));
            match created {
                Ok(()) => eprintln!("lifeboat-agent: created the signing key {}", path.display()),
                // Another run created it first: read that one.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(AgentError::storage(path.display(), e)),
            }
        }
        Self::read(path)
    }

    /// Signs `metadata` (any signature it had is replaced).
    pub fn sign(&self, metadata: &mut BackupMetadata) -> Result<()> {
        metadata.signature = None;
        let value = serde_json::to_value(&*metadata)
            .map_err(|e| AgentError::config(format!("serializing metadata: {e}")))?;
        metadata.signature = Some(MetadataSignature {
            algorithm: SignatureAlgorithm::HmacSha256,
            key_id: self.id.clone(),
            value: hex(&mac(&self.bytes, &[&canonical(&value)])?),
        });
        Ok(())
    }
}

impl SigningKey {
    /// The signature of a record that is not backup metadata (a WAL segment's), over its
    /// canonical JSON without `signature`, with `label` MACed first: a record of one kind never
    /// verifies as another, nor as backup metadata.
    pub fn sign_record(&self, label: &str, record: &Value) -> Result<MetadataSignature> {
        let mut body = record.clone();
        if let Some(o) = body.as_object_mut() {
            o.remove("signature");
        }
        Ok(MetadataSignature {
            algorithm: SignatureAlgorithm::HmacSha256,
            key_id: self.id.clone(),
            value: hex(&mac(
                &self.bytes,
                &[label.as_bytes(), b"\0", &canonical(&body)],
            )?),
        })
    }

    /// Checks `record`'s `signature` (made by [`SigningKey::sign_record`] with `label`); an
    /// unsigned record, another key's or a changed one is an Integrity failure.
    pub fn check_record(&self, label: &str, record: &Value, what: &str) -> Result<()> {
        let signature: MetadataSignature = record
            .get("signature")
            .cloned()
            .map(serde_json::from_value)
            .transpose()
            .map_err(|e| AgentError::integrity(format!("{what}: malformed signature: {e}")))?
            .ok_or_else(|| AgentError::integrity(format!("{what}: not signed: refused")))?;
        if signature.key_id != self.id {
            return Err(AgentError::integrity(format!(
                "{what}: signed with another key (key id {}): refused",
                signature.key_id
            )));
        }
        let expected = unhex(&signature.value)
            .ok_or_else(|| AgentError::integrity(format!("{what}: the signature is not hex")))?;
        let mut body = record.clone();
        if let Some(o) = body.as_object_mut() {
            o.remove("signature");
        }
        let mut m = hmac(&self.bytes)?;
        m.update(label.as_bytes());
        m.update(b"\0");
        m.update(&canonical(&body));
        m.verify_slice(&expected).map_err(|_| {
            AgentError::integrity(format!(
                "{what}: the signature does not match: changed after it was signed, refused"
            ))
        })
    }
}

/// The default key file of the local CLI: `$XDG_CONFIG_HOME/lifeboat/signing-key`, else
/// `~/.config/lifeboat/signing-key` (outside the backup directory, which is the point of it).
pub fn default_key_file() -> Option<PathBuf> {
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(config.join("lifeboat").join("signing-key"))
}

/// Parses a metadata document and checks its signature (or, for an unsigned one, that `trust`
/// accepts unsigned metadata); the signature stays in what is returned. Where it lies is
/// checked by the caller, which knows the place.
pub fn open(bytes: &[u8], what: &str, trust: Trust<'_>) -> Result<BackupMetadata> {
    let malformed = |e: &dyn std::fmt::Display| {
        AgentError::integrity(format!("{what}: malformed metadata: {e}"))
    };
    let mut value: Value = serde_json::from_slice(bytes).map_err(|e| malformed(&e))?;
    let version = value.get("schemaVersion").and_then(Value::as_u64);
    if version != Some(u64::from(METADATA_SCHEMA_VERSION))
        && version != Some(u64::from(LEGACY_METADATA_SCHEMA_VERSION))
    {
        return Err(AgentError::integrity(format!(
            "{what}: metadata schema version {} is not {METADATA_SCHEMA_VERSION}",
            version.map_or_else(|| "(none)".to_owned(), |v| v.to_string())
        )));
    }
    let signature = value
        .as_object_mut()
        .and_then(|o| o.remove("signature"))
        .map(|s| serde_json::from_value::<MetadataSignature>(s).map_err(|e| malformed(&e)))
        .transpose()?;
    match &signature {
        None => {
            if trust.unsigned != Unsigned::Accept {
                return Err(AgentError::integrity(format!(
                    "{what}: the metadata is not signed: refused (for a backup taken before metadata was signed, allowUnsigned or --allow-unsigned accepts it)"
                )));
            }
        }
        Some(signature) => {
            let key = trust.key.ok_or_else(|| {
                AgentError::config(format!(
                    "{what}: the metadata is signed and no signing key was given to check it"
                ))
            })?;
            if signature.key_id != key.id {
                return Err(AgentError::integrity(format!(
                    "{what}: signed with another key (key id {}; this namespace's key is {}): a backup of another namespace or cluster, refused",
                    signature.key_id, key.id
                )));
            }
            let expected = unhex(&signature.value).ok_or_else(|| {
                AgentError::integrity(format!("{what}: the signature is not hex"))
            })?;
            let mut m = hmac(&key.bytes)?;
            m.update(&canonical(&value));
            // verify_slice compares in constant time.
            m.verify_slice(&expected).map_err(|_| {
                AgentError::integrity(format!(
                    "{what}: the signature does not match: the metadata was changed after it was signed, refused"
                ))
            })?;
        }
    }
    let mut metadata: BackupMetadata = serde_json::from_value(value).map_err(|e| malformed(&e))?;
    metadata.signature = signature;
    for a in &metadata.artifacts {
        if a.name.contains('/') || a.name.starts_with('.') {
            return Err(AgentError::integrity(format!(
                "{what}: artifact name {:?} escapes the backup",
                a.name
            )));
        }
    }
    Ok(metadata)
}

fn hmac(key: &[u8]) -> Result<HmacSha256> {
    <HmacSha256 as KeyInit>::new_from_slice(key)
        .map_err(|e| AgentError::config(format!("signing key: {e}")))
}

fn mac(key: &[u8], parts: &[&[u8]]) -> Result<Vec<u8>> {
    let mut m = hmac(key)?;
    for p in parts {
        m.update(p);
    }
    Ok(m.finalize().into_bytes().to_vec())
}

/// The canonical JSON of `v`: object keys sorted, no whitespace. Written here rather than taken
/// from a JCS crate because metadata holds only strings, integers, booleans and nesting, for
/// which sorting keys and serde_json's own escaping are the whole canonical form.
fn canonical(v: &Value) -> Vec<u8> {
    fn write(v: &Value, out: &mut Vec<u8>) {
        match v {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                out.push(b'{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write(&Value::String(k.clone()), out);
                    out.push(b':');
                    if let Some(v) = map.get(k) {
                        write(v, out);
                    }
                }
                out.push(b'}');
            }
            Value::Array(items) => {
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write(item, out);
                }
                out.push(b']');
            }
            scalar => {
                // Writing a scalar Value into a Vec cannot fail.
                let _ = serde_json::to_writer(&mut *out, scalar);
            }
        }
    }
    let mut out = Vec::new();
    write(v, &mut out);
    out
}

/// Lowercase hex, as [`hex`] writes it, and nothing else: `from_str_radix` alone would also take
/// a sign (`+f`), so one signature would have several spellings (found by tests/fuzz.rs).
fn unhex(s: &str) -> Option<Vec<u8>> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    s.as_bytes()
        .chunks(2)
        .map(|pair| match pair {
            [hi, lo] => Some(digit(*hi)? << 4 | digit(*lo)?),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn metadata() -> BackupMetadata {
        serde_json::from_str(r#"{"schemaVersion":2,"namespace":"shop","backupId":"20261124T100000Z-0a1b2c3d","policy":"orders","asset":"db","kind":"postgres",
            "tool":{"name":"pg_dump","version":"15"},"agentVersion":"0.1.0","source":"postgres://h:5432/d",
            "startedAt":"2026-11-24T10:00:00Z","finishedAt":"2026-11-24T10:01:00Z",
            "snapshotTime":"2026-11-24T10:00:00Z","artifacts":[{"name":"db.d.pgdump.zst","rawBytes":10,
            "storedBytes":5,"sha256":"00"}],"compression":"zstd:3"}"#).unwrap()
    }

    fn key(byte: u8) -> SigningKey {
        SigningKey::from_bytes(vec![byte; 32], "test").unwrap()
    }

    fn trust(k: &SigningKey) -> Trust<'_> {
        Trust {
            key: Some(k),
            unsigned: Unsigned::Refuse,
        }
    }

    #[test]
    fn a_signed_document_opens_with_its_key_only_and_not_once_edited() {
        let (k, other) = (key(1), key(2));
        let mut m = metadata();
        k.sign(&mut m).unwrap();
        let bytes = serde_json::to_vec_pretty(&m).unwrap();
        assert_eq!(open(&bytes, "m", trust(&k)).unwrap(), m);
        let e = open(&bytes, "m", trust(&other)).unwrap_err();
        assert!(e.message.contains("another key"), "{}", e.message);
        // Key order and whitespace are not part of what is signed; content is.
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert!(open(&canonical(&v), "m", trust(&k)).is_ok());
        let edited = String::from_utf8(bytes)
            .unwrap()
            .replace("\"sha256\": \"00\"", "\"sha256\": \"01\"");
        let e = open(edited.as_bytes(), "m", trust(&k)).unwrap_err();
        assert!(e.message.contains("does not match"), "{}", e.message);
    }

    #[test]
    fn unsigned_documents_need_the_opt_in() {
        let k = key(1);
        let bytes = serde_json::to_vec(&metadata()).unwrap();
        let e = open(&bytes, "m", trust(&k)).unwrap_err();
        assert!(e.message.contains("not signed"), "{}", e.message);
        let accept = Trust {
            key: Some(&k),
            unsigned: Unsigned::Accept,
        };
        assert!(open(&bytes, "m", accept).is_ok());
    }

    #[test]
    fn short_keys_are_refused_and_ids_do_not_reveal_the_key() {
        assert!(SigningKey::from_bytes(vec![7; 31], "k").is_err());
        let k = key(0x41);
        assert_eq!(k.id.len(), 16);
        assert!(!k.id.contains("4141"));
        assert_ne!(k.id, key(0x42).id);
    }

    #[test]
    fn signatures_are_lowercase_hex_only() {
        assert_eq!(unhex("00ff7a"), Some(vec![0, 255, 0x7a]));
        for bad in ["+f", "0", "0F", "zz", "-1"] {
            assert_eq!(unhex(bad), None, "{bad}");
        }
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_depth() {
        let v: Value =
            serde_json::from_str(r#"{"b":1,"a":{"d":[{"z":"é\n","y":true}],"c":null}}"#).unwrap();
        assert_eq!(
            String::from_utf8(canonical(&v)).unwrap(),
            r#"{"a":{"c":null,"d":[{"y":true,"z":"é\n"}]},"b":1}"#
        );
    }
}
