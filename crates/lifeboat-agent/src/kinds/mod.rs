//! What the agent does with an asset of each kind: one [`Driver`] per kind, in that kind's
//! module here (over its client in `postgres`, `redis`, `bucket`, `kubestate`). `jobs` backs
//! up and restores through [`driver`] without naming a kind; the kind's identifiers, Secrets
//! and targets are its module in `lifeboat_api::kinds`.

mod kubernetes_state;
mod object_storage;
mod postgres;
mod redis;

use std::time::Duration;

use jiff::Timestamp;
use lifeboat_api::agent_job::KubernetesStateScope;
use lifeboat_api::agent_result::{ArtifactInfo, CanaryMarker, ToolInfo};
use lifeboat_api::backup_policy::{Asset, AssetSource};
use lifeboat_api::common::Target;
use lifeboat_api::restore_request::RestoreOptions;

use crate::error::{AgentError, Result};
use crate::jobs::Env;
use crate::layout::{Listed, Local, Slot};
use crate::stream::{Decoding, Encoding};

pub(crate) use kubernetes_state::apply as apply_kubernetes_state;

/// One backup of one asset: where its artifacts go and how they are encoded.
#[derive(Clone, Copy)]
pub(crate) struct Capture<'a> {
    pub env: &'a Env,
    pub slot: &'a Slot,
    pub asset: &'a Asset,
    pub encoding: &'a Encoding,
    /// The artifacts' file name suffix ([`crate::jobs::suffix`]).
    pub suffix: &'a str,
    pub scope: Option<&'a KubernetesStateScope>,
}

/// What a capture stored: the artifacts, the instant the source was read at, the tool that
/// read it, and the source described for people.
pub(crate) type Captured = (Vec<ArtifactInfo>, Timestamp, ToolInfo, String);

/// One restore of one verified backup.
#[derive(Clone, Copy)]
pub(crate) struct Restore<'a> {
    pub env: &'a Env,
    pub listed: &'a Listed,
    pub local: &'a Local,
    pub decoding: &'a Decoding,
    pub asset: &'a Asset,
    /// The target, when not the asset's own source.
    pub to: Option<&'a Target>,
    pub options: &'a RestoreOptions,
    pub scope: Option<&'a KubernetesStateScope>,
}

/// An asset kind's work in the agent.
pub(crate) trait Driver {
    /// Writes the canary marker of backup `id` into the source, just before it is captured.
    fn canary(&self, env: &Env, id: &str, now: Timestamp) -> Result<CanaryMarker>;
    /// Reads the source into artifacts; every file name goes into `created` before it is
    /// written, so a failure can remove what was half-written.
    fn capture(&self, cx: &Capture, created: &mut Vec<String>) -> Result<Captured>;
    /// The newest canary marker in the restored target (`to`, else the source itself): for a
    /// source of several parts, the oldest part's newest. `Ok(None)`: there is none.
    fn newest_canary(
        &self,
        env: &Env,
        to: Option<&Target>,
        backup_id: &str,
        bound: Duration,
    ) -> Result<Option<CanaryMarker>>;
    /// Restores the backup; returns where it went, for people. Checksums are checked before
    /// the target is touched.
    fn restore(&self, cx: &Restore) -> Result<String>;
}

/// The driver of `source`'s kind.
pub(crate) fn driver(source: &AssetSource) -> &dyn Driver {
    lifeboat_api::each_source!(source, s => &**s)
}

/// A restore target of another kind than its asset (admission does not compare the two).
fn not_its_kind(asset: &Asset, kind: &str) -> AgentError {
    AgentError::config(format!(
        "the restore target of {} is not {kind}, the asset's kind",
        asset.name
    ))
}
