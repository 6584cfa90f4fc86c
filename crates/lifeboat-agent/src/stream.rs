//! The streaming path of every artifact: bytes from a tool are counted, compressed with zstd and
//! hashed with sha256 on their way to the destination file, in constant memory. Reading back
//! checks the checksum of the stored bytes before anything is decompressed for a restore.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::crypto::{Identities, Recipients};
use crate::error::{AgentError, Result};

const BUF: usize = 256 * 1024;

/// Counts and hashes what passes through to `inner`.
struct HashingWriter<W: Write> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        crate::fault::bytes("store.bytes", self.bytes, self.bytes + n as u64);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// What was stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    pub raw_bytes: u64,
    pub stored_bytes: u64,
    pub sha256: String,
}

/// How an artifact is encoded on its way to storage: source → zstd → age → sha256 → store.
/// Encryption comes after compression (ciphertext does not compress) and before the checksum,
/// so `verify` checks the stored bytes without any key.
#[derive(Clone, Debug, Default)]
pub struct Encoding {
    /// zstd level; `None` stores the bytes as they come.
    pub level: Option<i32>,
    /// age recipients; `None` stores without encryption.
    pub recipients: Option<Recipients>,
}

/// How a stored artifact is read back to its plaintext.
#[derive(Default)]
pub struct Decoding {
    pub compressed: bool,
    /// Set for encrypted backups (and only then).
    pub identities: Option<Identities>,
}

/// Copies `source` into a new file at `path` (encoded as `encoding` says), fsyncs it, and
/// returns sizes and the sha256 of the stored bytes.
pub fn store(source: impl Read, path: &Path, encoding: &Encoding) -> Result<Stored> {
    let file = File::create(path).map_err(|e| AgentError::storage(path.display(), e))?;
    let what = path.display().to_string();
    let mut source = source;
    let (stored, writer) = store_with(
        BufWriter::with_capacity(BUF, file),
        encoding,
        &what,
        &mut |w| copy_from(&mut source, w, &what),
    )?;
    let file = writer
        .into_inner()
        .map_err(|e| AgentError::storage(path.display(), e.into_error()))?;
    file.sync_all()
        .map_err(|e| AgentError::storage(path.display(), e))?;
    Ok(stored)
}

/// Copies a source into the encoding chain; failures are the destination's (Storage). Reads
/// `BUF` at a time: `io::copy` into a `dyn Write` moves 8 KiB per call, which makes a
/// gigabyte dump 125,000 reads of the tool's pipe and as many small compressor calls.
pub fn copy_from(source: &mut dyn Read, sink: &mut dyn Write, what: &str) -> Result<()> {
    let mut buf = vec![0u8; BUF];
    loop {
        let n = match source.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(AgentError::storage(what, e)),
        };
        sink.write_all(&buf[..n])
            .map_err(|e| AgentError::storage(what, e))?;
    }
}

/// Runs `produce` against a writer whose bytes are compressed, encrypted, counted and hashed on
/// their way into `sink`. Returns the sink for the caller to finish (fsync, complete an upload).
pub fn store_with<W: Write>(
    sink: W,
    encoding: &Encoding,
    what: &str,
    produce: &mut dyn FnMut(&mut dyn Write) -> Result<()>,
) -> Result<(Stored, W)> {
    let io_err = |e: io::Error| AgentError::storage(what, e);
    let hashing = HashingWriter {
        inner: sink,
        hasher: Sha256::new(),
        bytes: 0,
    };
    let sealed = match &encoding.recipients {
        Some(r) => Sealed::Age(r.seal(hashing).map_err(io_err)?),
        None => Sealed::Plain(hashing),
    };
    let compressed = match encoding.level {
        Some(level) => Compressed::Zstd(zstd::stream::Encoder::new(sealed, level).map_err(io_err)?),
        None => Compressed::Plain(sealed),
    };
    let mut top = CountingWriter {
        inner: compressed,
        bytes: 0,
    };
    produce(&mut top)?;
    let raw_bytes = top.bytes;
    let HashingWriter {
        mut inner,
        hasher,
        bytes,
    } = top
        .inner
        .finish()
        .map_err(io_err)?
        .finish()
        .map_err(io_err)?;
    inner.flush().map_err(io_err)?;
    Ok((
        Stored {
            raw_bytes,
            stored_bytes: bytes,
            sha256: hex(&hasher.finalize()),
        },
        inner,
    ))
}

/// Counts what is written through it: the raw bytes, before compression and encryption.
struct CountingWriter<W: Write> {
    inner: W,
    bytes: u64,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The compression stage of the chain.
enum Compressed<W: Write> {
    Zstd(zstd::stream::Encoder<'static, W>),
    Plain(W),
}

impl<W: Write> Compressed<W> {
    fn finish(self) -> io::Result<W> {
        match self {
            Compressed::Zstd(e) => e.finish(),
            Compressed::Plain(w) => Ok(w),
        }
    }
}

impl<W: Write> Write for Compressed<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Compressed::Zstd(e) => e.write(buf),
            Compressed::Plain(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Compressed::Zstd(e) => e.flush(),
            Compressed::Plain(w) => w.flush(),
        }
    }
}

/// The encryption stage of the chain.
enum Sealed<W: Write> {
    Age(age::stream::StreamWriter<W>),
    Plain(W),
}

impl<W: Write> Sealed<W> {
    /// Writes age's last chunk (without it the stream is truncated) and returns the sink.
    fn finish(self) -> io::Result<W> {
        match self {
            Sealed::Age(s) => s.finish(),
            Sealed::Plain(w) => Ok(w),
        }
    }
}

impl<W: Write> Write for Sealed<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sealed::Age(s) => s.write(buf),
            Sealed::Plain(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sealed::Age(s) => s.flush(),
            Sealed::Plain(w) => w.flush(),
        }
    }
}

/// sha256 and size of the file at `path`.
pub fn checksum(path: &Path) -> Result<(String, u64)> {
    let mut file = BufReader::with_capacity(
        BUF,
        File::open(path).map_err(|e| AgentError::storage(path.display(), e))?,
    );
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; BUF];
    let mut total = 0u64;
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| AgentError::storage(path.display(), e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((hex(&hasher.finalize()), total))
}

/// Checks `path` against the expected size and sha256; an [`AgentError`] of class Integrity
/// otherwise.
pub fn verify(path: &Path, sha256: &str, size: u64) -> Result<()> {
    let (actual, bytes) = checksum(path)?;
    check(&path.display().to_string(), bytes, &actual, sha256, size)
}

/// The plaintext of stored bytes read from `input`: decrypted when the backup is encrypted
/// (a wrong identity fails here, on the header, before any byte is produced), then
/// decompressed. Read errors past this point mean corrupt data.
pub fn decoder<'r>(
    input: impl Read + 'r,
    decoding: &Decoding,
    what: &str,
) -> Result<Box<dyn Read + 'r>> {
    let opened: Box<dyn Read + 'r> = match &decoding.identities {
        Some(ids) => Box::new(ids.open(input, what)?),
        None => Box::new(input),
    };
    if decoding.compressed {
        let decoder = zstd::stream::Decoder::new(opened)
            .map_err(|e| AgentError::integrity(format!("{what}: {e}")))?;
        Ok(Box::new(decoder))
    } else {
        Ok(opened)
    }
}

/// Opens the artifact at `path` for reading its plaintext (checksum verified by the caller).
pub fn open(path: &Path, decoding: &Decoding) -> Result<Box<dyn Read>> {
    let file = File::open(path).map_err(|e| AgentError::storage(path.display(), e))?;
    decoder(
        BufReader::with_capacity(BUF, file),
        decoding,
        &path.display().to_string(),
    )
}

/// Reads the age header of the artifact at `path` with the identity: a wrong identity is
/// found before anything is touched, without reading the whole artifact.
pub fn check_identity(path: &Path, identities: &Identities) -> Result<()> {
    let file = File::open(path).map_err(|e| AgentError::storage(path.display(), e))?;
    identities
        .open(BufReader::new(file), &path.display().to_string())
        .map(|_| ())
}

/// Copies `reader` into `out`, telling a bad read (corrupt data: Integrity) from a failed write
/// (the restore output: Storage).
fn pump(reader: &mut dyn Read, out: &mut dyn Write, what: &str) -> Result<u64> {
    let mut buf = vec![0u8; BUF];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(AgentError::integrity(format!("{what}: {e}"))),
        };
        out.write_all(&buf[..n])
            .map_err(|e| AgentError::storage("restore output", e))?;
        total += n as u64;
    }
}

/// Decodes the artifact at `path` into `out` (checksum verified by the caller).
pub fn unpack(path: &Path, decoding: &Decoding, mut out: impl Write) -> Result<u64> {
    let mut plain = open(path, decoding)?;
    let n = pump(&mut plain, &mut out, &path.display().to_string())?;
    out.flush()
        .map_err(|e| AgentError::storage("restore output", e))?;
    Ok(n)
}

/// Counts and hashes what is read through it.
struct HashingReader<R: Read> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// Decodes the artifact at `path` into `out` while checking it against the expected size and
/// sha256, in one read of the stored bytes. The caller must discard `out` on error: nothing
/// reaches a restore target before this returns `Ok`.
pub fn unpack_verified(
    path: &Path,
    decoding: &Decoding,
    sha256: &str,
    size: u64,
    mut out: impl Write,
) -> Result<u64> {
    let what = path.display().to_string();
    let file = File::open(path).map_err(|e| AgentError::storage(path.display(), e))?;
    let mut reader = HashingReader {
        inner: BufReader::with_capacity(BUF, file),
        hasher: Sha256::new(),
        bytes: 0,
    };
    // The stored bytes are read to the end even when decoding failed: a damaged stream is
    // reported as the checksum mismatch it also is, the clearer message.
    let decoded = (|| {
        let mut plain = decoder(&mut reader, decoding, &what)?;
        let n = pump(&mut plain, &mut out, &what)?;
        // Whatever the decoders left unread still counts towards the checksum.
        pump(&mut plain, &mut io::sink(), &what)?;
        Ok::<u64, AgentError>(n)
    })();
    let drained = io::copy(&mut reader, &mut io::sink());
    let checked = check(
        &what,
        reader.bytes,
        &hex(&reader.hasher.finalize()),
        sha256,
        size,
    );
    let written = match (decoded, drained, checked) {
        (_, Err(e), _) => return Err(AgentError::storage(&what, e)),
        (_, _, Err(e)) => return Err(e),
        (Err(e), _, _) => return Err(e),
        (Ok(n), _, _) => n,
    };
    out.flush()
        .map_err(|e| AgentError::storage("restore output", e))?;
    Ok(written)
}

/// Compares what was read with the metadata.
fn check(what: &str, bytes: u64, actual: &str, sha256: &str, size: u64) -> Result<()> {
    if bytes != size {
        return Err(AgentError::integrity(format!(
            "{what}: {bytes} bytes stored, metadata says {size}: the artifact is truncated or was replaced"
        )));
    }
    if actual != sha256 {
        return Err(AgentError::integrity(format!(
            "{what}: sha256 {actual} does not match the metadata's {sha256}: the artifact is corrupt"
        )));
    }
    Ok(())
}

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use lifeboat_api::agent_result::ErrorClass;

    fn zstd3() -> Encoding {
        Encoding {
            level: Some(3),
            recipients: None,
        }
    }

    fn zstd() -> Decoding {
        Decoding {
            compressed: true,
            identities: None,
        }
    }

    fn new_key() -> (age::x25519::Identity, String) {
        use age::secrecy::ExposeSecret;
        let key = age::x25519::Identity::generate();
        let text = key.to_string().expose_secret().to_owned();
        (key, text)
    }

    #[test]
    fn encrypted_artifacts_round_trip_and_verify_without_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.zst.age");
        let (key, secret) = new_key();
        let data = b"PLAINTEXT-MARKER the whole dump ".repeat(20_000);
        for level in [Some(3), None] {
            let encoding = Encoding {
                level,
                recipients: Some(Recipients::parse(&[key.to_public().to_string()]).unwrap()),
            };
            let stored = store(&data[..], &path, &encoding).unwrap();
            assert_eq!(stored.raw_bytes, data.len() as u64);
            let bytes = std::fs::read(&path).unwrap();
            assert!(bytes.starts_with(b"age-encryption.org/v1\n"));
            assert!(!bytes.windows(16).any(|w| w == b"PLAINTEXT-MARKER"));
            verify(&path, &stored.sha256, stored.stored_bytes).unwrap();
            let decoding = Decoding {
                compressed: level.is_some(),
                identities: Some(Identities::parse(&secret, "test").unwrap()),
            };
            let mut out = Vec::new();
            unpack_verified(
                &path,
                &decoding,
                &stored.sha256,
                stored.stored_bytes,
                &mut out,
            )
            .unwrap();
            assert_eq!(out, data);
            let mut out = Vec::new();
            unpack(&path, &decoding, &mut out).unwrap();
            assert_eq!(out, data);
        }
    }

    #[test]
    fn a_wrong_identity_is_auth_and_a_missing_one_cannot_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.zst.age");
        let (key, _) = new_key();
        let (_, other) = new_key();
        let encoding = Encoding {
            level: Some(3),
            recipients: Some(Recipients::parse(&[key.to_public().to_string()]).unwrap()),
        };
        let stored = store(&b"secret rows"[..], &path, &encoding).unwrap();
        let wrong = Identities::parse(&other, "Secret k/identity").unwrap();
        let e = check_identity(&path, &wrong).unwrap_err();
        assert_eq!(e.class, ErrorClass::Auth, "{}", e.message);
        assert!(e.message.contains("Secret k/identity"), "{}", e.message);
        let decoding = Decoding {
            compressed: true,
            identities: Some(wrong),
        };
        let mut out = Vec::new();
        let e = unpack_verified(
            &path,
            &decoding,
            &stored.sha256,
            stored.stored_bytes,
            &mut out,
        )
        .unwrap_err();
        assert_eq!(e.class, ErrorClass::Auth, "{}", e.message);
        assert!(out.is_empty());
        // Read as if it were not encrypted: garbage, never plaintext.
        let e = unpack(&path, &zstd(), std::io::sink()).unwrap_err();
        assert_eq!(e.class, ErrorClass::Integrity);
    }

    #[test]
    fn a_flipped_ciphertext_byte_fails_the_checksum_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.age");
        let (key, secret) = new_key();
        let encoding = Encoding {
            level: None,
            recipients: Some(Recipients::parse(&[key.to_public().to_string()]).unwrap()),
        };
        let stored = store(&vec![7u8; 200_000][..], &path, &encoding).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let decoding = Decoding {
            compressed: false,
            identities: Some(Identities::parse(&secret, "test").unwrap()),
        };
        let e = unpack_verified(
            &path,
            &decoding,
            &stored.sha256,
            stored.stored_bytes,
            std::io::sink(),
        )
        .unwrap_err();
        assert_eq!(e.class, ErrorClass::Integrity);
        assert!(e.message.contains("corrupt"), "{}", e.message);
    }

    #[test]
    fn store_then_verify_then_unpack_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.zst");
        let data: Vec<u8> = (0..1_000_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let stored = store(&data[..], &path, &zstd3()).unwrap();
        assert_eq!(stored.raw_bytes, data.len() as u64);
        assert!(
            stored.stored_bytes < stored.raw_bytes / 10,
            "compressible data compresses"
        );
        verify(&path, &stored.sha256, stored.stored_bytes).unwrap();
        let mut out = Vec::new();
        unpack(&path, &zstd(), &mut out).unwrap();
        assert_eq!(out, data);
    }

    #[test]
    fn unpack_verified_checks_while_it_decompresses() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.zst");
        let data = b"the whole dump, the whole dump, the whole dump".repeat(1000);
        let stored = store(&data[..], &path, &zstd3()).unwrap();
        let mut out = Vec::new();
        unpack_verified(
            &path,
            &zstd(),
            &stored.sha256,
            stored.stored_bytes,
            &mut out,
        )
        .unwrap();
        assert_eq!(out, data);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x80;
        std::fs::write(&path, &bytes).unwrap();
        let e = unpack_verified(
            &path,
            &zstd(),
            &stored.sha256,
            stored.stored_bytes,
            std::io::sink(),
        )
        .unwrap_err();
        assert_eq!(e.class, ErrorClass::Integrity);
    }

    #[test]
    fn a_flipped_byte_or_a_truncation_is_an_integrity_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.zst");
        let stored = store(&b"hello world, hello backups"[..], &path, &zstd3()).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[5] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();
        let e = verify(&path, &stored.sha256, stored.stored_bytes).unwrap_err();
        assert_eq!(e.class, ErrorClass::Integrity);
        assert!(e.message.contains("corrupt"), "{}", e.message);
        bytes.truncate(bytes.len() - 3);
        std::fs::write(&path, &bytes).unwrap();
        let e = verify(&path, &stored.sha256, stored.stored_bytes).unwrap_err();
        assert!(e.message.contains("truncated"), "{}", e.message);
    }
}
