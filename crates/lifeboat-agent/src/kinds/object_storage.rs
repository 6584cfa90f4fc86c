//! A bucket's driver: every object copied into artifacts, restored object by object.

use std::time::Duration;

use jiff::Timestamp;
use lifeboat_api::agent_result::{CanaryMarker, ToolInfo};
use lifeboat_api::backup_policy::ObjectStorageAsset;
use lifeboat_api::common::Target;

use super::{Capture, Captured, Driver, Restore, not_its_kind};
use crate::bucket;
use crate::error::Result;
use crate::jobs::Env;

impl Driver for ObjectStorageAsset {
    fn canary(&self, env: &Env, id: &str, now: Timestamp) -> Result<CanaryMarker> {
        crate::canary::write_bucket(env, &self.source, id, now)
    }

    fn capture(&self, cx: &Capture, created: &mut Vec<String>) -> Result<Captured> {
        let (artifacts, at) = bucket::backup(
            cx.env,
            cx.slot,
            &cx.asset.name,
            self,
            cx.encoding,
            cx.suffix,
            created,
        )?;
        Ok((
            artifacts,
            at,
            ToolInfo {
                name: "lifeboat-agent".into(),
                version: format!("{} (object_store)", env!("CARGO_PKG_VERSION")),
            },
            bucket::describe(&self.source),
        ))
    }

    fn newest_canary(
        &self,
        env: &Env,
        to: Option<&Target>,
        _: &str,
        _: Duration,
    ) -> Result<Option<CanaryMarker>> {
        let location = match to {
            Some(Target::ObjectStorage(s3)) => s3,
            _ => &self.source,
        };
        crate::canary::newest_bucket(env, location)
    }

    fn restore(&self, cx: &Restore) -> Result<String> {
        let into = match cx.to {
            None => &self.source,
            Some(Target::ObjectStorage(s3)) => s3,
            Some(_) => return Err(not_its_kind(cx.asset, "a bucket (objectStorage)")),
        };
        bucket::restore(cx.env, cx.listed, cx.local, cx.decoding, into)
    }
}
