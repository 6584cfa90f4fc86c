//! S3 Object Lock: a retention period set on every object of a backup, after it is stored and
//! before the backup counts, so the store itself refuses to delete that object version or to
//! shorten its lock, whoever asks, the writer's own keys included.
//!
//! object_store (0.14) has no call for an object's retention and cannot add the
//! `x-amz-object-lock-*` headers to its uploads (its attributes are a fixed set), so the one
//! request needed, `PutObjectRetention`, is built here by hand: it is signed by object_store's own
//! SigV4 signer with the store's own credentials and sent through an HTTP client made from the
//! store's own options (the same CA bundle, the same timeouts), to the URL object_store itself
//! computes for the object.

use jiff::Timestamp;
use lifeboat_api::common::{ObjectLock, ObjectLockMode};
use object_store::aws::{AmazonS3, AwsAuthorizer};
use object_store::client::{HttpClient, HttpConnector, HttpRequestBody, ReqwestConnector};
use object_store::path::Path as ObjectPath;
use object_store::signer::Signer;

use crate::error::{AgentError, Result};

/// What locks the objects of one store.
pub(crate) struct Locker {
    s3: AmazonS3,
    client: HttpClient,
    region: String,
    lock: ObjectLock,
}

impl std::fmt::Debug for Locker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Locker").field("lock", &self.lock).finish()
    }
}

/// The `<Retention>` document of `PutObjectRetention`: the mode and the instant, to the second.
pub(crate) fn retention_xml(mode: ObjectLockMode, until: Timestamp) -> String {
    format!(
        "<Retention xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Mode>{}</Mode><RetainUntilDate>{}</RetainUntilDate></Retention>",
        mode.as_s3(),
        until.strftime("%Y-%m-%dT%H:%M:%SZ")
    )
}

/// The instant an object stored at `now` stays locked until: `retain_for` later, rounded up to
/// the second (S3 keeps seconds; rounding down could end the lock a moment early).
pub(crate) fn retain_until(now: Timestamp, lock: &ObjectLock) -> Timestamp {
    let until = now + lock.retain_for.as_std();
    match until.subsec_nanosecond() {
        0 => until,
        n => until + jiff::SignedDuration::from_nanos(i64::from(1_000_000_000 - n)),
    }
}

impl Locker {
    pub(crate) fn new(
        s3: AmazonS3,
        options: &object_store::ClientOptions,
        region: &str,
        lock: ObjectLock,
    ) -> Result<Self> {
        let client = ReqwestConnector::default()
            .connect(options)
            .map_err(|e| AgentError::config(format!("S3 client for Object Lock: {e}")))?;
        Ok(Self {
            s3,
            client,
            region: region.to_owned(),
            lock,
        })
    }

    pub(crate) fn mode(&self) -> ObjectLockMode {
        self.lock.mode
    }

    /// The instant an object stored now stays locked until.
    pub(crate) fn until_from_now(&self) -> Timestamp {
        retain_until(Timestamp::now(), &self.lock)
    }

    /// Locks the current version of `key` until `until`. A store that answers anything but
    /// success fails the backup: a backup declared locked that is not would be a lie its
    /// metadata tells.
    pub(crate) async fn lock(
        &self,
        key: &ObjectPath,
        until: Timestamp,
    ) -> std::result::Result<(), String> {
        let body = retention_xml(self.lock.mode, until);
        // The object's URL as object_store addresses it (path or virtual-hosted style, the
        // key's encoding), stripped of the presigning query and given the `retention` one.
        let mut url = self
            .s3
            .signed_url(http::Method::PUT, key, std::time::Duration::from_secs(60))
            .await
            .map_err(|e| e.to_string())?;
        url.set_query(Some("retention"));
        let md5 = {
            use md5::Digest;
            base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                md5::Md5::digest(body.as_bytes()),
            )
        };
        let credential = self
            .s3
            .credentials()
            .get_credential()
            .await
            .map_err(|e| e.to_string())?;
        let mut request = http::Request::builder()
            .method(http::Method::PUT)
            .uri(url.as_str())
            .header("content-md5", md5)
            .header("content-type", "application/xml")
            .body(HttpRequestBody::from(bytes::Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        AwsAuthorizer::new(&credential, "s3", &self.region)
            .try_authorize(&mut request, None)
            .map_err(|e| e.to_string())?;
        let response = self
            .client
            .execute(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let text = response
            .into_body()
            .bytes()
            .await
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!(
                "PutObjectRetention of {key} answered {status}: {}",
                text.trim()
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lock(mode: ObjectLockMode, retain_for: &str) -> ObjectLock {
        ObjectLock {
            mode,
            retain_for: retain_for.parse().unwrap(),
        }
    }

    #[test]
    fn the_retention_document_names_the_mode_and_the_second() {
        let until: Timestamp = "2026-12-31T23:59:59Z".parse().unwrap();
        assert_eq!(
            retention_xml(ObjectLockMode::Compliance, until),
            "<Retention xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Mode>COMPLIANCE</Mode><RetainUntilDate>2026-12-31T23:59:59Z</RetainUntilDate></Retention>"
        );
        assert!(
            retention_xml(ObjectLockMode::Governance, until).contains("<Mode>GOVERNANCE</Mode>")
        );
    }

    #[test]
    fn a_lock_ends_retain_for_later_never_a_moment_early() {
        let l = lock(ObjectLockMode::Governance, "30d");
        let whole: Timestamp = "2026-12-01T10:00:00Z".parse().unwrap();
        assert_eq!(
            retain_until(whole, &l),
            "2026-12-31T10:00:00Z".parse::<Timestamp>().unwrap()
        );
        let later: Timestamp = "2026-12-01T10:00:00.001Z".parse().unwrap();
        assert_eq!(
            retain_until(later, &l),
            "2026-12-31T10:00:01Z".parse::<Timestamp>().unwrap()
        );
    }
}
