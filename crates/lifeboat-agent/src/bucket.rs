//! The object-storage asset: a bucket (or a prefix of it) on S3-compatible storage, copied
//! natively through object_store (no rclone binary in the image, the same client and credentials
//! as the S3 destination).
//!
//! A backup is two artifacts, both through the one encoding path (zstd, age, sha256):
//! - `<asset>.objects.tar…`: every object, streamed from its GET into a tar entry (never a
//!   whole object in memory), named by its key relative to the prefix;
//! - `<asset>.manifest.jsonl…`: one JSON line per object, in tar order (key, size, sha256 of the
//!   content, last-modified, ETag, HTTP attributes).
//!
//! The manifest is a separate artifact, not a tar member, because a restore needs it *before*
//! the data: it checks every object against its line while the object streams to the target,
//! and publishes it only when size and sha256 match. Inside the tar it could only come first if
//! every checksum were known before the first byte is written (two reads of the source), or
//! last, after every object was already uploaded. JSON Lines, staged in a temporary file, keeps
//! memory flat whatever the object count; it has its own sha256 in `metadata.json` like any
//! artifact.
//!
//! Limits of the object_store client, refused rather than changed silently: keys with empty
//! segments (`a//b`), `.` or `..` segments or control characters fail the listing; a folder
//! marker (`dir/`, zero bytes) is listed without its slash and then cannot be read, so it is
//! skipped like an object deleted after the listing (both are recorded in the manifest as
//! `vanished`).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};

use futures::StreamExt;
use jiff::Timestamp;
use lifeboat_api::agent_result::ArtifactInfo;
use lifeboat_api::backup_policy::ObjectStorageAsset;
use lifeboat_api::common::S3Location;
use object_store::path::Path as ObjectPath;
use object_store::{Attribute, AttributeValue, Attributes, ObjectStoreExt};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{AgentError, Result};
use crate::jobs::Env;
use crate::layout::{Listed, Local, S3Role, S3Store, Slot};
use crate::stream::{self, Decoding, Encoding};

/// Marks the objects artifact (before the compression and encryption suffixes).
pub const OBJECTS: &str = ".objects.tar";
/// Marks the manifest artifact.
pub const MANIFEST: &str = ".manifest.jsonl";
const MANIFEST_VERSION: u32 = 1;

/// The first line of a manifest.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Header {
    manifest: u32,
    /// The bucket and prefix, without credentials.
    source: String,
    /// When the listing started: the snapshot time.
    listed_at: Timestamp,
}

/// One object line: what the tar entry of the same position must hold.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectEntry {
    /// Key relative to the source prefix.
    pub key: String,
    pub size: u64,
    /// sha256 of the object's content, lowercase hex.
    pub sha256: String,
    pub last_modified: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// HTTP attributes given back on restore (`contentType`, `cacheControl`, …, `meta:<name>`
    /// for user metadata).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
}

/// An object listed but gone by the time it was read (or a folder marker, see the module doc).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Vanished {
    vanished: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
enum Line {
    Object(ObjectEntry),
    Vanished(Vanished),
}

/// For messages and metadata: where a bucket is, without credentials.
pub fn describe(loc: &S3Location) -> String {
    format!(
        "s3://{}/{} at {}",
        loc.bucket,
        loc.prefix.trim_matches('/'),
        loc.endpoint
    )
}

/// The object_store path of `prefix` as the literal key prefix it is (`Path::from` would
/// percent-encode characters such as `#` and change the key).
fn literal(key: &str) -> Result<ObjectPath> {
    ObjectPath::parse(key).map_err(|e| {
        AgentError::config(format!(
            "key {key:?} cannot be addressed through object_store: {e}"
        ))
    })
}

/// Backs up the objects under `asset.source` into `<asset>.objects.tar…` and
/// `<asset>.manifest.jsonl…` of `slot`. Returns the artifacts and the snapshot time (when the
/// listing started). An empty source is refused unless `allowEmpty`, before anything is written.
pub fn backup(
    env: &Env,
    slot: &Slot,
    name: &str,
    asset: &ObjectStorageAsset,
    encoding: &Encoding,
    suffix: &str,
    created: &mut Vec<String>,
) -> Result<(Vec<ArtifactInfo>, Timestamp)> {
    let src = env.s3(&asset.source, S3Role::Data)?;
    let prefix = src.prefix().to_owned();
    let list_prefix = (!prefix.is_empty()).then(|| literal(&prefix)).transpose()?;
    let listed_at = Timestamp::now();
    let mut listing = src.store.list(list_prefix.as_ref()).peekable();
    let first = src.rt.block_on(std::pin::Pin::new(&mut listing).peek());
    let empty = first.is_none();
    if matches!(first, Some(Err(_)))
        && let Some(Err(e)) = src.rt.block_on(listing.next())
    {
        // Refused credentials, a missing bucket: fail before any artifact exists.
        return Err(src.err(e));
    }
    if empty && !asset.allow_empty {
        return Err(AgentError::not_found(format!(
            "{}: no objects: refusing to record an empty backup (set allowEmpty: true when an empty source is expected)",
            describe(&asset.source)
        )));
    }

    // The manifest is staged in an anonymous temporary file: memory stays flat at any count.
    let mut manifest_file =
        tempfile::tempfile().map_err(|e| AgentError::storage("temporary file", e))?;
    let mut manifest = std::io::BufWriter::new(&manifest_file);
    write_line(
        &mut manifest,
        &Header {
            manifest: MANIFEST_VERSION,
            source: describe(&asset.source),
            listed_at,
        },
    )?;

    let objects_name = format!("{name}{OBJECTS}{suffix}");
    created.push(objects_name.clone());
    let mut tally = Tally::default();
    let source = Source {
        src: &src,
        prefix: &prefix,
        described: &asset.source,
    };
    let objects = env
        .store
        .put_with(slot, &objects_name, encoding, &mut |w| {
            let mut tar = tar::Builder::new(w);
            while let Some(meta) = src.rt.block_on(listing.next()) {
                let meta = meta.map_err(|e| src.err(e))?;
                source.append(&meta, &mut tar, &objects_name, &mut manifest, &mut tally)?;
            }
            tar.finish()
                .map_err(|e| AgentError::storage(&objects_name, e))
        })?;
    manifest
        .flush()
        .map_err(|e| AgentError::storage("temporary manifest", e))?;
    drop(manifest);
    tally.refuse_empty(asset)?;
    eprintln!("lifeboat-agent: {name}: {}", tally.summary(&asset.source));

    let manifest_name = format!("{name}{MANIFEST}{suffix}");
    created.push(manifest_name.clone());
    manifest_file
        .seek(SeekFrom::Start(0))
        .map_err(|e| AgentError::storage("temporary manifest", e))?;
    let manifest = env
        .store
        .put(slot, &manifest_name, &mut manifest_file, encoding)?;
    let info = |name: String, s: stream::Stored| ArtifactInfo {
        name,
        raw_bytes: s.raw_bytes,
        stored_bytes: s.stored_bytes,
        sha256: s.sha256,
    };
    Ok((
        vec![info(objects_name, objects), info(manifest_name, manifest)],
        listed_at,
    ))
}

/// What a backup pass read from its source.
#[derive(Default)]
struct Tally {
    count: u64,
    bytes: u64,
    vanished: u64,
    /// Objects besides canary markers: a source holding only its markers is empty.
    data_objects: u64,
}

impl Tally {
    /// `N objects (B bytes) from <source>`, and how many vanished when some did.
    fn summary(&self, source: &S3Location) -> String {
        let Self {
            count,
            bytes,
            vanished,
            ..
        } = self;
        let mut line = format!("{count} objects ({bytes} bytes) from {}", describe(source));
        if *vanished > 0 {
            line.push_str(&format!(", {vanished} vanished after the listing"));
        }
        line
    }

    /// Refuses a pass that found only canary markers, or only objects that vanished before
    /// they were read, unless the asset allows an empty source.
    fn refuse_empty(&self, asset: &ObjectStorageAsset) -> Result<()> {
        if asset.allow_empty {
            return Ok(());
        }
        if self.count > 0 && self.data_objects == 0 {
            return Err(AgentError::not_found(format!(
                "{}: no objects but canary markers: refusing to record an empty backup (set allowEmpty: true when an empty source is expected)",
                describe(&asset.source)
            )));
        }
        if self.count == 0 && self.vanished > 0 {
            return Err(AgentError::not_found(format!(
                "{}: every listed object vanished before it was read: refusing an empty backup",
                describe(&asset.source)
            )));
        }
        Ok(())
    }
}

/// The source bucket a backup pass reads, and the prefix its listing is under.
struct Source<'a> {
    src: &'a S3Store,
    prefix: &'a str,
    described: &'a S3Location,
}

impl Source<'_> {
    /// Appends the object `meta` lists to `tar` (entry `objects_name`) and its line to
    /// `manifest`, checksummed as it streams; an object gone since the listing gets a
    /// `Vanished` line instead. Counted in `tally`.
    fn append<W: Write>(
        &self,
        meta: &object_store::ObjectMeta,
        tar: &mut tar::Builder<W>,
        objects_name: &str,
        manifest: &mut impl Write,
        tally: &mut Tally,
    ) -> Result<()> {
        let src = self.src;
        let key = meta.location.as_ref();
        let rel = if self.prefix.is_empty() {
            key
        } else {
            key.strip_prefix(self.prefix)
                .and_then(|k| k.strip_prefix('/'))
                .ok_or_else(|| src.err(format!("listing returned {key:?}, outside the prefix")))?
        };
        let got = match src.rt.block_on(src.store.get(&meta.location)) {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => {
                eprintln!(
                    "lifeboat-agent: {key} vanished after the listing (or is a folder marker): skipped"
                );
                tally.vanished += 1;
                return write_line(
                    manifest,
                    &Vanished {
                        vanished: rel.to_owned(),
                    },
                );
            }
            Err(e) => return Err(src.err(e)),
        };
        let size = got.meta.size;
        let last_modified = Timestamp::from_millisecond(got.meta.last_modified.timestamp_millis())
            .map_err(|e| src.err(e))?;
        let etag = got.meta.e_tag.clone();
        let attributes = attributes_to_manifest(&got.attributes);
        let mut header = tar::Header::new_gnu();
        header.set_size(size);
        header.set_mode(0o644);
        header.set_mtime(u64::try_from(last_modified.as_second()).unwrap_or(0));
        header.set_entry_type(tar::EntryType::Regular);
        let mut body = Download::new(src, got.into_stream());
        crate::fault::point("bucket.object");
        let appended = tar.append_data(&mut header, rel, &mut body);
        if let Some(e) = body.failed.take() {
            return Err(e);
        }
        appended.map_err(|e| AgentError::storage(format!("{objects_name} ({key})"), e))?;
        if body.bytes != size {
            return Err(AgentError::storage(
                describe(self.described),
                std::io::Error::other(format!(
                    "{key} ended after {} of its {size} bytes",
                    body.bytes
                )),
            ));
        }
        write_line(
            manifest,
            &ObjectEntry {
                key: rel.to_owned(),
                size,
                sha256: stream::hex(&body.hasher.finalize()),
                last_modified,
                etag,
                attributes,
            },
        )?;
        tally.count += 1;
        if !rel.starts_with(&format!("{}/", crate::canary::BUCKET_DIR)) {
            tally.data_objects += 1;
        }
        tally.bytes += size;
        Ok(())
    }
}

fn write_line<T: Serialize>(out: &mut impl Write, value: &T) -> Result<()> {
    serde_json::to_writer(&mut *out, value)
        .map_err(|e| AgentError::storage("temporary manifest", std::io::Error::other(e)))?;
    out.write_all(b"\n")
        .map_err(|e| AgentError::storage("temporary manifest", e))
}

/// The attributes a restore can give back, under stable names (storage classes are left out:
/// they differ between providers and a restore into another one would be refused).
fn attributes_to_manifest(attributes: &Attributes) -> BTreeMap<String, String> {
    attributes
        .iter()
        .filter_map(|(k, v)| {
            let name = match k {
                Attribute::ContentDisposition => "contentDisposition".to_owned(),
                Attribute::ContentEncoding => "contentEncoding".to_owned(),
                Attribute::ContentLanguage => "contentLanguage".to_owned(),
                Attribute::ContentType => "contentType".to_owned(),
                Attribute::CacheControl => "cacheControl".to_owned(),
                Attribute::Metadata(m) => format!("meta:{m}"),
                _ => return None,
            };
            Some((name, v.as_ref().to_owned()))
        })
        .collect()
}

fn attributes_from_manifest(map: &BTreeMap<String, String>) -> Attributes {
    let mut out = Attributes::new();
    for (k, v) in map {
        let key = match k.as_str() {
            "contentDisposition" => Attribute::ContentDisposition,
            "contentEncoding" => Attribute::ContentEncoding,
            "contentLanguage" => Attribute::ContentLanguage,
            "contentType" => Attribute::ContentType,
            "cacheControl" => Attribute::CacheControl,
            other => match other.strip_prefix("meta:") {
                Some(m) => Attribute::Metadata(m.to_owned().into()),
                None => continue,
            },
        };
        out.insert(key, AttributeValue::from(v.clone()));
    }
    out
}

/// A synchronous `Read` over an object's streamed body, counting and hashing what it yields. A
/// failure of the source is kept with its class (the tar builder only sees an io::Error).
struct Download<'a> {
    src: &'a S3Store,
    body: futures::stream::BoxStream<'static, object_store::Result<bytes::Bytes>>,
    chunk: bytes::Bytes,
    hasher: Sha256,
    bytes: u64,
    failed: Option<AgentError>,
}

impl<'a> Download<'a> {
    fn new(
        src: &'a S3Store,
        body: futures::stream::BoxStream<'static, object_store::Result<bytes::Bytes>>,
    ) -> Self {
        Self {
            src,
            body,
            chunk: bytes::Bytes::new(),
            hasher: Sha256::new(),
            bytes: 0,
            failed: None,
        }
    }
}

impl Read for Download<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.chunk.is_empty() {
            match self.src.rt.block_on(self.body.next()) {
                None => return Ok(0),
                Some(Ok(chunk)) => self.chunk = chunk,
                Some(Err(e)) => {
                    let text = e.to_string();
                    self.failed = Some(self.src.err(e));
                    return Err(std::io::Error::other(text));
                }
            }
        }
        let n = buf.len().min(self.chunk.len());
        let part = self.chunk.split_to(n);
        buf[..n].copy_from_slice(&part);
        self.hasher.update(&part);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// Restores a bucket backup into `target`: checksums of both artifacts are verified and the
/// manifest read before the target is touched; then every object is uploaded from the tar
/// stream, checked against its manifest line (key, size, sha256) while it streams, and
/// published only when it matches. Objects of the target that are not in the backup stay.
pub fn restore(
    env: &Env,
    listed: &Listed,
    local: &Local,
    decoding: &Decoding,
    target: &S3Location,
) -> Result<String> {
    let find = |marker: &str| {
        listed
            .metadata
            .artifacts
            .iter()
            .find(|a| a.name.contains(marker))
            .ok_or_else(|| {
                AgentError::integrity(format!(
                    "backup {} of {} has no {marker} artifact",
                    listed.id, listed.metadata.asset
                ))
            })
    };
    let objects = find(OBJECTS)?;
    let manifest = find(MANIFEST)?;
    let objects_path = local.dir.join(&objects.name);
    let manifest_path = local.dir.join(&manifest.name);
    stream::verify(&objects_path, &objects.sha256, objects.stored_bytes)?;
    // The plaintext manifest is staged (it is read twice: checked whole, then in step with the
    // tar), verified against its checksum in the same pass.
    let mut plain = tempfile::tempfile().map_err(|e| AgentError::storage("temporary file", e))?;
    stream::unpack_verified(
        &manifest_path,
        decoding,
        &manifest.sha256,
        manifest.stored_bytes,
        std::io::BufWriter::new(&plain),
    )?;
    let what = manifest.name.as_str();
    let rewind = |f: &mut std::fs::File| {
        f.seek(SeekFrom::Start(0))
            .map_err(|e| AgentError::storage("temporary manifest", e))
    };
    rewind(&mut plain)?;
    let (mut planned, mut planned_bytes) = (0u64, 0u64);
    for_each_line(&plain, what, &mut |line| {
        if let Line::Object(o) = line {
            planned += 1;
            planned_bytes += o.size;
        }
        Ok(())
    })?;
    rewind(&mut plain)?;

    let dst = env.s3(target, S3Role::Data)?;
    let dst_prefix = dst.prefix().to_owned();
    let mut archive = tar::Archive::new(stream::open(&objects_path, decoding)?);
    let corrupt = |e: std::io::Error| AgentError::integrity(format!("{}: {e}", objects.name));
    let mut entries = archive.entries().map_err(corrupt)?;
    let (mut done, mut done_bytes) = (0u64, 0u64);
    for_each_line(&plain, what, &mut |line| {
        let Line::Object(o) = line else {
            return Ok(());
        };
        let mut entry = entries
            .next()
            .ok_or_else(|| {
                AgentError::integrity(format!("{}: ends before {:?}", objects.name, o.key))
            })?
            .map_err(corrupt)?;
        if entry.path_bytes().as_ref() != o.key.as_bytes() || entry.size() != o.size {
            return Err(AgentError::integrity(format!(
                "{}: entry {:?} ({} bytes) where the manifest has {:?} ({} bytes)",
                objects.name,
                String::from_utf8_lossy(&entry.path_bytes()),
                entry.size(),
                o.key,
                o.size
            )));
        }
        let key = if dst_prefix.is_empty() {
            o.key.clone()
        } else {
            format!("{dst_prefix}/{}", o.key)
        };
        let mut upload = dst
            .upload(literal(&key)?)
            .with_attributes(attributes_from_manifest(&o.attributes));
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut n_total = 0u64;
        let copied = loop {
            let n = match entry.read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => break Err(corrupt(e)),
            };
            hasher.update(&buf[..n]);
            n_total += n as u64;
            if let Err(e) = upload.write_all(&buf[..n]) {
                break Err(dst.err(e));
            }
        };
        let sha = stream::hex(&hasher.finalize());
        let checked = copied.and_then(|()| {
            if n_total == o.size && sha == o.sha256 {
                Ok(())
            } else {
                Err(AgentError::integrity(format!(
                    "{}: {:?} has {n_total} bytes with sha256 {sha}, the manifest says {} bytes with {}",
                    objects.name, o.key, o.size, o.sha256
                )))
            }
        });
        match checked {
            Ok(()) => upload.finish().map_err(|e| dst.err(e))?,
            Err(e) => {
                upload.abort();
                return Err(e);
            }
        }
        done += 1;
        done_bytes += o.size;
        Ok(())
    })?;
    if let Some(extra) = entries.next() {
        let name = extra
            .map(|e| String::from_utf8_lossy(&e.path_bytes()).into_owned())
            .unwrap_or_default();
        return Err(AgentError::integrity(format!(
            "{}: entry {name:?} is not in the manifest",
            objects.name
        )));
    }
    debug_assert_eq!((done, done_bytes), (planned, planned_bytes));
    Ok(format!(
        "{} ({done} objects, {done_bytes} bytes)",
        describe(target)
    ))
}

/// Calls `visit` for every line after the header of a plaintext manifest; a malformed line or
/// an unknown version is an Integrity error.
fn for_each_line(
    file: &std::fs::File,
    what: &str,
    visit: &mut dyn FnMut(Line) -> Result<()>,
) -> Result<()> {
    let bad = |n: usize, e: &dyn std::fmt::Display| {
        AgentError::integrity(format!("{what}: line {}: {e}", n + 1))
    };
    let mut lines = BufReader::new(file).lines();
    let header = lines
        .next()
        .ok_or_else(|| AgentError::integrity(format!("{what}: empty manifest")))?
        .map_err(|e| bad(0, &e))?;
    let header: Header = serde_json::from_str(&header).map_err(|e| bad(0, &e))?;
    if header.manifest != MANIFEST_VERSION {
        return Err(AgentError::integrity(format!(
            "{what}: manifest version {} is not {MANIFEST_VERSION}",
            header.manifest
        )));
    }
    for (n, line) in lines.enumerate() {
        let line = line.map_err(|e| bad(n + 1, &e))?;
        visit(serde_json::from_str(&line).map_err(|e| bad(n + 1, &e))?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_attributes_survive_the_manifest_and_storage_classes_do_not() {
        let map = BTreeMap::from([
            ("cacheControl".to_owned(), "max-age=60".to_owned()),
            (
                "contentType".to_owned(),
                "text/html; charset=utf-8".to_owned(),
            ),
            ("meta:owner".to_owned(), "shop".to_owned()),
        ]);
        assert_eq!(attributes_to_manifest(&attributes_from_manifest(&map)), map);
        let mut with_class = attributes_from_manifest(&map);
        with_class.insert(Attribute::StorageClass, "GLACIER".into());
        assert_eq!(attributes_to_manifest(&with_class), map);
    }

    /// A manifest as `backup` writes it: the header, objects with attributes, a vanished one.
    fn written_manifest() -> Vec<u8> {
        let t: Timestamp = "2026-11-24T10:00:00Z".parse().unwrap();
        let mut out = serde_json::to_string(&Header {
            manifest: MANIFEST_VERSION,
            source: "s3://source/data at http://127.0.0.1:9000".into(),
            listed_at: t,
        })
        .unwrap();
        for i in 0..6u64 {
            let line = if i == 3 {
                serde_json::to_string(&Vanished {
                    vanished: "gone/".into(),
                })
            } else {
                serde_json::to_string(&ObjectEntry {
                    key: format!("dir {i}/ünï-{i}.bin"),
                    size: i * 1000,
                    sha256: format!("{i:064x}"),
                    last_modified: t,
                    etag: Some(format!("\"{i}\"")),
                    attributes: BTreeMap::from([(
                        "contentType".to_owned(),
                        "text/plain".to_owned(),
                    )]),
                })
            };
            out.push('\n');
            out.push_str(&line.unwrap());
        }
        out.push('\n');
        out.into_bytes()
    }

    fn read(bytes: &[u8]) -> Result<Vec<Line>> {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(bytes).unwrap();
        f.seek(SeekFrom::Start(0)).unwrap();
        let mut lines = Vec::new();
        for_each_line(&f, "m", &mut |l| {
            lines.push(l);
            Ok(())
        })?;
        Ok(lines)
    }

    #[test]
    fn the_written_manifest_reads_back() {
        let lines = read(&written_manifest()).unwrap();
        assert_eq!(lines.len(), 6);
        assert!(matches!(&lines[3], Line::Vanished(v) if v.vanished == "gone/"));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 10_000,
            failure_persistence: None,
            ..proptest::prelude::ProptestConfig::default()
        })]

        /// Bytes flipped, inserted or cut anywhere in a written manifest: read, or refused as an
        /// integrity failure naming the manifest and the line, never a panic; what is read has
        /// no more lines than the manifest.
        #[test]
        fn a_mutated_manifest_is_read_or_refused_never_a_panic(
            at in proptest::prelude::any::<usize>(),
            mask in 1u8..=255,
            insert in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..8),
            cut in proptest::prelude::any::<usize>(),
        ) {
            let mut bytes = written_manifest();
            let len = bytes.len();
            bytes[at % len] ^= mask;
            let at = at % (len + 1);
            bytes.splice(at..at, insert.iter().copied());
            bytes.truncate(cut % (bytes.len() + 1));
            match read(&bytes) {
                Ok(lines) => proptest::prop_assert!(lines.len() <= 6 + insert.len()),
                Err(e) => {
                    proptest::prop_assert_eq!(e.class, lifeboat_api::agent_result::ErrorClass::Integrity);
                    proptest::prop_assert!(e.message.starts_with("m: "), "{}", e.message);
                }
            }
        }
    }

    #[test]
    fn manifest_lines_are_objects_or_vanished_and_nothing_else() {
        let object =
            r#"{"key":"a/b","size":3,"sha256":"00","lastModified":"2026-11-24T10:00:00Z"}"#;
        assert!(matches!(
            serde_json::from_str::<Line>(object).unwrap(),
            Line::Object(o) if o.key == "a/b" && o.size == 3
        ));
        assert!(matches!(
            serde_json::from_str::<Line>(r#"{"vanished":"dir"}"#).unwrap(),
            Line::Vanished(_)
        ));
        assert!(serde_json::from_str::<Line>(r#"{"key":"a","size":1}"#).is_err());
        assert!(serde_json::from_str::<Line>(r#"{"vanished":"a","extra":1}"#).is_err());
    }
}
