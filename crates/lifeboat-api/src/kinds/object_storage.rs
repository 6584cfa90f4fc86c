//! A bucket: every object copied, restored into the same or another bucket.

use crate::backup_policy::{AssetSource, ObjectStorageAsset};
use crate::common::{S3Location, SecretKeyRef, Target};
use crate::drill_schedule::StagingScope;
use crate::ident::{IdentError, Identifiers};

use super::{SourceKind, TargetKind};

/// The Secret keys a bucket's client reads: its access keys (none when the pod's own identity
/// is used) and its CA bundle.
pub fn s3_secrets(loc: &S3Location) -> Vec<SecretKeyRef> {
    let mut out = Vec::new();
    if let Some(c) = &loc.credentials_secret {
        for key in [&c.access_key_id_key, &c.secret_access_key_key] {
            out.push(SecretKeyRef {
                name: c.name.clone(),
                key: key.clone(),
            });
        }
    }
    out.extend(loc.ca_bundle_secret.clone());
    out
}

/// The host of an endpoint URL (`https://s3.example.com:9000/x` → `s3.example.com`).
pub fn endpoint_host(endpoint: &str) -> &str {
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => authority.split(':').next().unwrap_or(authority),
    }
}

fn describe(loc: &S3Location) -> String {
    format!("s3://{}/{} at {}", loc.bucket, loc.prefix, loc.endpoint)
}

impl Identifiers for ObjectStorageAsset {
    fn check_identifiers(&self) -> Result<(), IdentError> {
        self.source.check_identifiers()
    }
}

impl SourceKind for ObjectStorageAsset {
    fn secrets(&self) -> Vec<SecretKeyRef> {
        s3_secrets(&self.source)
    }

    fn describe(&self) -> String {
        describe(&self.source)
    }

    fn safety(&self) -> Option<AssetSource> {
        Some(AssetSource::ObjectStorage(Box::new(ObjectStorageAsset {
            allow_empty: true,
            ..self.clone()
        })))
    }

    fn is_same_place(&self, target: &Target) -> Option<bool> {
        let Target::ObjectStorage(dst) = target else {
            return None;
        };
        Some(
            self.source.endpoint == dst.endpoint
                && self.source.bucket == dst.bucket
                && self.source.prefix == dst.prefix,
        )
    }
}

/// A bucket as a restore target (`Identifiers` is the destination's, in `ident`).
impl TargetKind for S3Location {
    fn as_source(&self, _: Option<&AssetSource>, allow_empty: bool) -> Option<AssetSource> {
        Some(AssetSource::ObjectStorage(Box::new(ObjectStorageAsset {
            source: self.clone(),
            allow_empty,
        })))
    }

    fn secrets(&self) -> Vec<SecretKeyRef> {
        s3_secrets(self)
    }

    fn describe(&self, _: &AssetSource) -> String {
        describe(self)
    }

    fn outside(&self, scope: &StagingScope) -> Option<String> {
        if !scope.allows_host(endpoint_host(&self.endpoint)) {
            return Some(format!("endpoint {}", self.endpoint));
        }
        (!scope.buckets.contains(&self.bucket)).then(|| format!("bucket {}", self.bucket))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_hosts() {
        assert_eq!(
            endpoint_host("https://s3.example.com:9000/x"),
            "s3.example.com"
        );
        assert_eq!(endpoint_host("http://[::1]:9000"), "::1");
        assert_eq!(endpoint_host("s3.example.com"), "s3.example.com");
        assert_eq!(endpoint_host("http://key@s3.example.com"), "s3.example.com");
    }
}
