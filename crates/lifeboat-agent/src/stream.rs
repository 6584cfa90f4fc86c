//! The streaming path of every artifact: bytes from a tool are counted, compressed with zstd and
//! hashed with sha256 on their way to the destination file, in constant memory. Reading back
//! checks the checksum of the stored bytes before anything is decompressed for a restore.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

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

/// Copies `source` into a new file at `path` (compressed with zstd at `level`, or as is when
/// `level` is `None`), fsyncs it, and returns sizes and the sha256 of the stored bytes.
pub fn store(source: impl Read, path: &Path, level: Option<i32>) -> Result<Stored> {
    let file = File::create(path).map_err(|e| AgentError::storage(path.display(), e))?;
    let (stored, writer) = store_into(
        source,
        BufWriter::with_capacity(BUF, file),
        level,
        &path.display().to_string(),
    )?;
    let file = writer
        .into_inner()
        .map_err(|e| AgentError::storage(path.display(), e.into_error()))?;
    file.sync_all()
        .map_err(|e| AgentError::storage(path.display(), e))?;
    Ok(stored)
}

/// Copies `source` into `sink` (compressed when `level` is set), counting and hashing the bytes
/// that reach the sink. Returns the sink for the caller to finish (fsync, complete an upload).
pub fn store_into<W: Write>(
    mut source: impl Read,
    sink: W,
    level: Option<i32>,
    what: &str,
) -> Result<(Stored, W)> {
    let hashing = HashingWriter {
        inner: sink,
        hasher: Sha256::new(),
        bytes: 0,
    };
    let io_err = |e: io::Error| AgentError::storage(what, e);
    let (raw_bytes, hashing) = match level {
        Some(level) => {
            let mut encoder = zstd::stream::Encoder::new(hashing, level).map_err(io_err)?;
            let raw = io::copy(&mut source, &mut encoder).map_err(io_err)?;
            (raw, encoder.finish().map_err(io_err)?)
        }
        None => {
            let mut hashing = hashing;
            let raw = io::copy(&mut source, &mut hashing).map_err(io_err)?;
            (raw, hashing)
        }
    };
    let HashingWriter {
        mut inner,
        hasher,
        bytes,
    } = hashing;
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
    if bytes != size {
        return Err(AgentError::integrity(format!(
            "{}: {bytes} bytes stored, metadata says {size}: the artifact is truncated or was replaced",
            path.display()
        )));
    }
    if actual != sha256 {
        return Err(AgentError::integrity(format!(
            "{}: sha256 {actual} does not match the metadata's {sha256}: the artifact is corrupt",
            path.display()
        )));
    }
    Ok(())
}

/// Decompresses (or copies) the artifact at `path` into `out`.
pub fn unpack(path: &Path, compressed: bool, mut out: impl Write) -> Result<u64> {
    let file = File::open(path).map_err(|e| AgentError::storage(path.display(), e))?;
    let reader = BufReader::with_capacity(BUF, file);
    let n = if compressed {
        let mut decoder = zstd::stream::Decoder::with_buffer(reader)
            .map_err(|e| AgentError::integrity(format!("{}: {e}", path.display())))?;
        io::copy(&mut decoder, &mut out)
            .map_err(|e| AgentError::integrity(format!("{}: {e}", path.display())))?
    } else {
        let mut reader = reader;
        io::copy(&mut reader, &mut out).map_err(|e| AgentError::storage(path.display(), e))?
    };
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

/// Decompresses (or copies) the artifact at `path` into `out` while checking it against the
/// expected size and sha256, in one read of the stored bytes. The caller must discard `out` on
/// error: nothing reaches a restore target before this returns `Ok`.
pub fn unpack_verified(
    path: &Path,
    compressed: bool,
    sha256: &str,
    size: u64,
    mut out: impl Write,
) -> Result<u64> {
    let file = File::open(path).map_err(|e| AgentError::storage(path.display(), e))?;
    let mut reader = HashingReader {
        inner: BufReader::with_capacity(BUF, file),
        hasher: Sha256::new(),
        bytes: 0,
    };
    let corrupt = |e: io::Error| AgentError::integrity(format!("{}: {e}", path.display()));
    let written = if compressed {
        let mut decoder = zstd::stream::Decoder::new(&mut reader).map_err(corrupt)?;
        let n = io::copy(&mut decoder, &mut out).map_err(corrupt)?;
        // Hash whatever the decoder left unread, so the checksum covers the whole stored file.
        io::copy(&mut decoder.finish(), &mut io::sink()).map_err(corrupt)?;
        n
    } else {
        io::copy(&mut reader, &mut out).map_err(|e| AgentError::storage(path.display(), e))?
    };
    out.flush()
        .map_err(|e| AgentError::storage("restore output", e))?;
    let actual = hex(&reader.hasher.finalize());
    if reader.bytes != size {
        return Err(AgentError::integrity(format!(
            "{}: {} bytes stored, metadata says {size}: the artifact is truncated or was replaced",
            path.display(),
            reader.bytes
        )));
    }
    if actual != sha256 {
        return Err(AgentError::integrity(format!(
            "{}: sha256 {actual} does not match the metadata's {sha256}: the artifact is corrupt",
            path.display()
        )));
    }
    Ok(written)
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

    #[test]
    fn store_then_verify_then_unpack_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.zst");
        let data: Vec<u8> = (0..1_000_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let stored = store(&data[..], &path, Some(3)).unwrap();
        assert_eq!(stored.raw_bytes, data.len() as u64);
        assert!(
            stored.stored_bytes < stored.raw_bytes / 10,
            "compressible data compresses"
        );
        verify(&path, &stored.sha256, stored.stored_bytes).unwrap();
        let mut out = Vec::new();
        unpack(&path, true, &mut out).unwrap();
        assert_eq!(out, data);
    }

    #[test]
    fn unpack_verified_checks_while_it_decompresses() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.zst");
        let data = b"the whole dump, the whole dump, the whole dump".repeat(1000);
        let stored = store(&data[..], &path, Some(3)).unwrap();
        let mut out = Vec::new();
        unpack_verified(&path, true, &stored.sha256, stored.stored_bytes, &mut out).unwrap();
        assert_eq!(out, data);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x80;
        std::fs::write(&path, &bytes).unwrap();
        let e = unpack_verified(
            &path,
            true,
            &stored.sha256,
            stored.stored_bytes,
            std::io::sink(),
        )
        .unwrap_err();
        assert_eq!(e.class, lifeboat_api::agent_result::ErrorClass::Integrity);
    }

    #[test]
    fn a_flipped_byte_or_a_truncation_is_an_integrity_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.zst");
        let stored = store(&b"hello world, hello backups"[..], &path, Some(3)).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[5] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();
        let e = verify(&path, &stored.sha256, stored.stored_bytes).unwrap_err();
        assert_eq!(e.class, lifeboat_api::agent_result::ErrorClass::Integrity);
        assert!(e.message.contains("corrupt"), "{}", e.message);
        bytes.truncate(bytes.len() - 3);
        std::fs::write(&path, &bytes).unwrap();
        let e = verify(&path, &stored.sha256, stored.stored_bytes).unwrap_err();
        assert!(e.message.contains("truncated"), "{}", e.message);
    }
}
