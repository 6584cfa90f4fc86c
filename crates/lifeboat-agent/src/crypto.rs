//! Client-side encryption with age (the `age` crate, rage's library): artifacts are encrypted to
//! public recipients after compression, so a backup pod holds no secret at all and the stored
//! bytes (what `verify` checksums) are ciphertext. Only a restore reads an identity, from a
//! mounted Secret file. Nothing here ever puts key material into a message.

use std::io::{self, Read, Write};

use lifeboat_api::agent_result::{EncryptionInfo, ErrorClass};

use crate::error::{AgentError, Result};

/// The age public keys a backup is encrypted to.
#[derive(Clone, Debug)]
pub struct Recipients {
    keys: Vec<age::x25519::Recipient>,
}

impl Recipients {
    /// Parses `age1...` public keys. Only X25519 recipients: plugin and tag recipients need age
    /// plugins (external binaries) the agent image does not ship, and their backups could not be
    /// restored by the agent.
    pub fn parse(list: &[String]) -> Result<Self> {
        if list.is_empty() {
            return Err(AgentError::config(
                "encryption needs at least one age recipient",
            ));
        }
        let keys = list
            .iter()
            .map(|r| {
                r.trim().parse::<age::x25519::Recipient>().map_err(|e| {
                    AgentError::config(format!(
                        "age recipient {r:?}: {e} (only X25519 keys from age-keygen, age1..., are supported)"
                    ))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { keys })
    }

    /// What metadata records: the algorithm and the public keys.
    pub fn info(&self) -> EncryptionInfo {
        EncryptionInfo {
            algorithm: "age".into(),
            recipients: self.keys.iter().map(ToString::to_string).collect(),
        }
    }

    /// An age stream writer over `out`; its `finish` writes the last chunk and returns `out`.
    pub fn seal<W: Write>(&self, out: W) -> io::Result<age::stream::StreamWriter<W>> {
        let encryptor =
            age::Encryptor::with_recipients(self.keys.iter().map(|k| k as &dyn age::Recipient))
                .map_err(io::Error::other)?;
        encryptor.wrap_output(out)
    }
}

/// The age identities (private keys) that decrypt a backup, read from a Secret file.
pub struct Identities {
    keys: Vec<Box<dyn age::Identity + Send + Sync>>,
    /// Where they came from, for messages (`Secret name/key`).
    what: String,
}

impl Identities {
    /// Parses an age identity file (what `age-keygen` writes: comments and `AGE-SECRET-KEY-1...`
    /// lines). The parser reports line numbers only, never the content.
    pub fn parse(text: &str, what: &str) -> Result<Self> {
        let bad = |e: &dyn std::fmt::Display| {
            AgentError::config(format!("{what}: not an age identity file: {e}"))
        };
        let keys = age::IdentityFile::from_buffer(text.as_bytes())
            .map_err(|e| bad(&e))?
            .into_identities()
            .map_err(|e| bad(&e))?;
        if keys.is_empty() {
            return Err(AgentError::config(format!(
                "{what}: holds no age identity (AGE-SECRET-KEY-1...)"
            )));
        }
        Ok(Self {
            keys,
            what: what.to_owned(),
        })
    }

    /// Reads the age header of `input` and unwraps its file key: the plaintext stream. A key
    /// that matches none of the recipients is an Auth error (the credential was refused); a
    /// malformed header is an Integrity error.
    pub fn open<R: Read>(&self, input: R, artifact: &str) -> Result<age::stream::StreamReader<R>> {
        let decryptor = age::Decryptor::new(input).map_err(|e| self.error(e, artifact))?;
        decryptor
            .decrypt(self.keys.iter().map(|k| k.as_ref() as &dyn age::Identity))
            .map_err(|e| self.error(e, artifact))
    }

    fn error(&self, e: age::DecryptError, artifact: &str) -> AgentError {
        match e {
            age::DecryptError::NoMatchingKeys => AgentError::new(
                ErrorClass::Auth,
                format!(
                    "{artifact}: the age identity in {} is not one the backup was encrypted to",
                    self.what
                ),
            ),
            age::DecryptError::Io(e) => AgentError::storage(artifact, e),
            e => AgentError::integrity(format!("{artifact}: age: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipients_must_be_x25519_public_keys() {
        let key = age::x25519::Identity::generate();
        let ok = Recipients::parse(&[key.to_public().to_string()]).unwrap();
        assert_eq!(ok.info().algorithm, "age");
        assert_eq!(ok.info().recipients, [key.to_public().to_string()]);
        for bad in ["age1notakey", "ssh-ed25519 AAAA", ""] {
            let e = Recipients::parse(&[bad.to_owned()]).unwrap_err();
            assert_eq!(e.class, ErrorClass::Config, "{bad}");
        }
        assert!(Recipients::parse(&[]).is_err());
    }

    #[test]
    fn identity_files_are_parsed_without_echoing_them() {
        let key = age::x25519::Identity::generate();
        use age::secrecy::ExposeSecret;
        let secret = key.to_string().expose_secret().to_owned();
        let file = format!(
            "# created: now\n# public key: {}\n{secret}\n",
            key.to_public()
        );
        assert!(Identities::parse(&file, "Secret k/identity").is_ok());
        let broken = format!("{}X\n", &secret[..secret.len() - 1]);
        let e = Identities::parse(&broken, "Secret k/identity")
            .err()
            .unwrap();
        assert_eq!(e.class, ErrorClass::Config);
        assert!(!e.message.contains(&secret[20..]), "{}", e.message);
        assert!(Identities::parse("# only a comment\n", "s").is_err());
    }
}
