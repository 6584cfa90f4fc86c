//! `kubectl lifeboat backups --location FILE`: what a location holds, for a person on a rebuilt
//! cluster. The plugin does not read the store from the person's machine: verifying a backup
//! needs the namespace's signing key, which only the cluster derives (from the master key), and
//! the store's keys are already a Secret in the namespace. So it creates a RestoreRequest that
//! only plans (`execute: false`) with that location, reads the catalog its catalog Job's agent
//! reported (the same verification a restore does), and deletes the request again.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use lifeboat_api::agent_result::{Catalog, TerminationMessage};
use serde_json::{Value, json};

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
