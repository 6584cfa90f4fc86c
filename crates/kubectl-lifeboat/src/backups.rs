//! `kubectl lifeboat backups --location FILE`: what a location holds, for a person on a rebuilt
//! cluster. The plugin does not read the store from the person's machine: verifying a backup
//! needs the namespace's signing key, which only the cluster derives (from the master key), and
//! the store's keys are already a Secret in the namespace. So it creates a RestoreRequest that
//! only plans (`execute: false`) with that location, reads the catalog its catalog Job's agent
//! reported (the same verification a restore does), and deletes the request again.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use lifeboat_api::BackupPolicy;
use lifeboat_api::agent_result::{Catalog, TerminationMessage};
use lifeboat_api::backup_policy::{BackupFailure, BackupRecord, VerifiedBackup};
use serde::Serialize;
use serde_json::{Value, json};

/// One asset's backups as its policy's status records them: `kubectl lifeboat backups [POLICY]`
/// on a running cluster, where no catalog Job is needed.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AssetBackups {
    pub namespace: String,
    pub policy: String,
    pub asset: String,
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_success: Option<BackupRecord>,
    /// The newest backup a drill restored and validated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_verified: Option<VerifiedBackup>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<BackupFailure>,
}

/// Every asset of `policies`, in spec order, with what their status records.
pub fn from_status(policies: &[BackupPolicy]) -> Vec<AssetBackups> {
    let mut out = Vec::new();
    for p in policies {
        let status = p.status.clone().unwrap_or_default();
        for asset in &p.spec.assets {
            let s = status.assets.iter().find(|a| a.name == asset.name);
            out.push(AssetBackups {
                namespace: p.namespace().unwrap_or_default(),
                policy: p.name_any(),
                asset: asset.name.clone(),
                kind: asset.kind().as_str(),
                last_success: s.and_then(|s| s.last_success.clone()),
                last_verified: s.and_then(|s| s.last_verified.clone()),
                last_failure: s.and_then(|s| s.last_failure.clone()),
            });
        }
    }
    out
}

/// The table of [`from_status`]: the newest good backup of each asset, its age, and whether a
/// drill proved it.
pub fn status_table(rows: &[AssetBackups], now: Timestamp) -> String {
    let mut out = format!(
        "{:<20} {:<20} {:<20} {:<15} {:<32} {:<22} {:>12}  {}\n",
        "NAMESPACE", "POLICY", "ASSET", "KIND", "BACKUP", "SNAPSHOT", "BYTES", "VERIFIED"
    );
    for r in rows {
        let (id, snapshot, bytes) = match &r.last_success {
            Some(b) => {
                let age = now.duration_since(b.snapshot_time.0).as_secs().max(0);
                (
                    b.id.as_str(),
                    format!(
                        "{} ({}h ago)",
                        b.snapshot_time.0.strftime("%Y-%m-%dT%H:%MZ"),
                        age / 3600
                    ),
                    b.stored_bytes.to_string(),
                )
            }
            None => ("-", "no good backup".to_owned(), "-".to_owned()),
        };
        let verified = match &r.last_verified {
            Some(v) if Some(v.id.as_str()) == r.last_success.as_ref().map(|b| b.id.as_str()) => {
                format!("yes (drill {})", v.drill)
            }
            Some(v) => format!("older: {} (drill {})", v.id, v.drill),
            None => "never".to_owned(),
        };
        out += &format!(
            "{:<20} {:<20} {:<20} {:<15} {:<32} {:<22} {:>12}  {verified}\n",
            r.namespace, r.policy, r.asset, r.kind, id, snapshot, bytes
        );
    }
    out
}

/// The label selector of the catalog Job's pods of request `name`.
pub fn catalog_pods(name: &str) -> String {
    format!("lifeboat.dev/restore={name},lifeboat.dev/role=catalog")
}

/// The plan-only RestoreRequest whose catalog Job reads `location`.
pub fn request(name: &str, policy: &str, from: &str, location: &Value, assets: &[String]) -> Value {
    json!({
        "apiVersion": "lifeboat.dev/v1alpha1", "kind": "RestoreRequest",
        "metadata": {"name": name},
        "spec": {"source": {"policy": policy, "backupId": from, "location": location},
                 "assets": assets, "execute": false}
    })
}

/// What the agent of the newest catalog pod reported, once its container ended.
pub fn report(pods: &[Pod]) -> Option<TerminationMessage> {
    let newest = pods
        .iter()
        .max_by_key(|p| p.creation_timestamp().map(|t| t.0))?;
    newest
        .status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == "agent")?
        .state
        .as_ref()?
        .terminated
        .as_ref()?
        .message
        .as_deref()
        .and_then(TerminationMessage::parse)
}

/// One line per asset: its backup, kind, snapshot time (and age), size, and verification state.
pub fn table(catalog: &Catalog, now: Timestamp) -> String {
    let mut out = format!(
        "{:<20} {:<15} {:<32} {:<22} {:>12}  {}\n",
        "ASSET", "KIND", "BACKUP", "SNAPSHOT", "BYTES", "STATE"
    );
    for e in &catalog.entries {
        let age = now.duration_since(e.snapshot_time).as_secs().max(0);
        let state = match (e.verified, e.encrypted) {
            (true, true) => "signature ok, restore-verified, encrypted",
            (true, false) => "signature ok, restore-verified",
            (false, true) => "signature ok, encrypted",
            (false, false) => "signature ok",
        };
        out += &format!(
            "{:<20} {:<15} {:<32} {:<22} {:>12}  {state}\n",
            e.asset,
            e.kind.as_str(),
            e.backup_id,
            format!(
                "{} ({}h ago)",
                e.snapshot_time.strftime("%Y-%m-%dT%H:%MZ"),
                age / 3600
            ),
            e.stored_bytes,
        );
    }
    if catalog.omitted > 0 {
        out += &format!(
            "... and {} more assets (name them with --asset)\n",
            catalog.omitted
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use lifeboat_api::agent_result::CatalogEntry;
    use lifeboat_api::backup_policy::AssetKind;

    use super::*;

    #[test]
    fn the_table_shows_each_asset_its_backup_and_state_and_what_was_left_out() {
        let t: Timestamp = "2026-11-24T10:00:00Z".parse().unwrap();
        let catalog = Catalog {
            entries: vec![CatalogEntry {
                asset: "orders-db".into(),
                kind: AssetKind::Postgres,
                backup_id: "20261124T100000Z-123-0a1b2c3d".into(),
                snapshot_time: t,
                stored_bytes: 2048,
                encrypted: true,
                verified: false,
            }],
            omitted: 2,
        };
        let text = table(&catalog, "2026-11-24T13:00:00Z".parse().unwrap());
        assert!(text.contains("orders-db"), "{text}");
        assert!(text.contains("20261124T100000Z-123-0a1b2c3d"), "{text}");
        assert!(text.contains("(3h ago)"), "{text}");
        assert!(text.contains("signature ok, encrypted"), "{text}");
        assert!(text.contains("2 more assets"), "{text}");
    }
}
