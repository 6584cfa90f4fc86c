//! Kubernetes state's driver: the scope's objects read through API discovery, re-applied
//! with server-side apply (or a server-side dry run).

use std::time::Duration;

use jiff::Timestamp;
use lifeboat_api::agent_job::KubernetesStateScope;
use lifeboat_api::agent_result::{ArtifactInfo, CanaryMarker, ToolInfo};
use lifeboat_api::backup_policy::KubernetesStateAsset;
use lifeboat_api::common::Target;

use super::{Capture, Captured, Driver, Restore};
use crate::error::{AgentError, Result};
use crate::jobs::{Env, needs_scope};
use crate::layout::{Listed, Local};
use crate::stream::{self, Decoding};

impl Driver for KubernetesStateAsset {
    fn canary(&self, _: &Env, _: &str, _: Timestamp) -> Result<CanaryMarker> {
        Err(AgentError::config(
            "canary markers are written into PostgreSQL, Redis and bucket sources only",
        ))
    }

    fn capture(&self, cx: &Capture, created: &mut Vec<String>) -> Result<Captured> {
        let (state, source) = crate::kubestate::backup(self, needs_scope(cx.scope)?)?;
        // One document: a namespace's objects are megabytes, not gigabytes, so it is built
        // in memory and streamed through the same encode path as every artifact.
        let json = serde_json::to_vec(&state)
            .map_err(|e| AgentError::config(format!("encoding the cluster state: {e}")))?;
        let name = format!("{}.cluster_state.json{}", cx.asset.name, cx.suffix);
        created.push(name.clone());
        let stored = cx
            .env
            .store
            .put(cx.slot, &name, &mut json.as_slice(), cx.encoding)?;
        Ok((
            vec![ArtifactInfo {
                name,
                raw_bytes: stored.raw_bytes,
                stored_bytes: stored.stored_bytes,
                sha256: stored.sha256,
            }],
            state.captured_at,
            ToolInfo {
                name: "lifeboat-agent".into(),
                version: format!(
                    "{} (API discovery; kube-apiserver {})",
                    env!("CARGO_PKG_VERSION"),
                    state.server_version
                ),
            },
            source,
        ))
    }

    fn newest_canary(
        &self,
        _: &Env,
        _: Option<&Target>,
        _: &str,
        _: Duration,
    ) -> Result<Option<CanaryMarker>> {
        Err(AgentError::config(
            "canary markers are PostgreSQL, Redis and bucket only",
        ))
    }

    fn restore(&self, cx: &Restore) -> Result<String> {
        apply(
            cx.listed,
            cx.local,
            cx.decoding,
            cx.to,
            needs_scope(cx.scope)?,
            true,
        )
    }
}

/// Applies a Kubernetes-state backup (a server-side dry run unless `execute`), after its checksum
/// is verified in the one read that decodes it.
pub(crate) fn apply(
    listed: &Listed,
    local: &Local,
    decoding: &Decoding,
    to: Option<&Target>,
    scope: &KubernetesStateScope,
    execute: bool,
) -> Result<String> {
    let artifact = listed
        .metadata
        .artifacts
        .first()
        .ok_or_else(|| AgentError::integrity("backup has no artifact"))?;
    let mut plain = Vec::new();
    stream::unpack_verified(
        &local.dir.join(&artifact.name),
        decoding,
        &artifact.sha256,
        artifact.stored_bytes,
        &mut plain,
    )?;
    let state: crate::kubestate::ClusterState = serde_json::from_slice(&plain).map_err(|e| {
        AgentError::integrity(format!("{}: not a cluster state: {e}", artifact.name))
    })?;
    let mapping = to.and_then(|t| match t {
        Target::KubernetesState(k) => Some(k),
        _ => None,
    });
    let done = crate::kubestate::restore(&state, mapping, scope, execute)?;
    let mut pending = if done.pending > 0 {
        format!(
            ", {} more wait for a CRD or a namespace this restore creates (not dry-run)",
            done.pending
        )
    } else {
        String::new()
    };
    if done.left_to_platform > 0 {
        pending.push_str(&format!(
            ", {} left to the platform team (Namespaces, quotas, limit ranges)",
            done.left_to_platform
        ));
    }
    Ok(format!(
        "kubernetes: {} objects of {} kinds {}{pending}",
        done.objects,
        done.kinds,
        if execute {
            "applied (server-side apply)"
        } else {
            "accepted by a server-side dry run"
        }
    ))
}
