//! Deterministic names and labels of the objects the operator creates. Names derive only from
//! the parent's name and the asset, so a restarted operator finds (and never duplicates) what an
//! earlier one created; long names are shortened with a hash to fit Kubernetes' limits.

use std::collections::BTreeMap;

pub use lifeboat_api::names::{
    LABEL_ASSET, LABEL_DRILL, LABEL_MANAGED_BY, LABEL_NAME, LABEL_POLICY, LABEL_RESTORE,
    LABEL_ROLE, MANAGED_BY, NAME_MAX, bounded_name, label_value, short_hash,
};

/// CronJob names are limited to 52 characters (the controller appends an 11-character suffix).
pub const CRONJOB_NAME_MAX: usize = 52;

/// The full parent name, in an annotation (label values are capped at 63 characters).
pub const ANNOTATION_POLICY: &str = "lifeboat.dev/policy-name";
/// Asks for an on-demand backup; each distinct value runs once.
pub const ANNOTATION_BACKUP_NOW: &str = "lifeboat.dev/backup-now";

/// The CronJob that backs up `asset` of `policy`.
pub fn backup_cronjob(policy: &str, asset: &str) -> String {
    bounded_name(&[policy, asset], CRONJOB_NAME_MAX)
}

/// The on-demand Job for `token` (one per token: a repeated reconcile finds the same name).
pub fn backup_now_job(policy: &str, asset: &str, token: &str) -> String {
    bounded_name(&[policy, asset, "now", &short_hash(token, 3)], NAME_MAX)
}

/// Labels of a backup CronJob, its Jobs and their pods. No label is copied from the parent:
/// children that inherit GitOps tracking labels get pruned by Argo CD and Flux.
pub fn backup_labels(policy: &str, asset: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_NAME.to_owned(), "lifeboat-agent".to_owned()),
        (LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned()),
        (LABEL_POLICY.to_owned(), label_value(policy)),
        (LABEL_ASSET.to_owned(), asset.to_owned()),
        (LABEL_ROLE.to_owned(), "backup".to_owned()),
    ])
}

/// The label selector that finds every backup child of `policy`.
pub fn backup_selector(policy: &str) -> String {
    format!(
        "{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_ROLE}=backup,{LABEL_POLICY}={}",
        label_value(policy)
    )
}

/// The role label of WAL archivers (not `backup`: their pods report no backup outcome).
pub const ROLE_WAL_ARCHIVE: &str = "wal-archive";

/// The Deployment that archives the WAL of `asset` of `policy`.
pub fn wal_archiver(policy: &str, asset: &str) -> String {
    bounded_name(&[policy, asset, "wal"], NAME_MAX)
}

/// Labels of a WAL archiver Deployment and its pods (also its selector).
pub fn wal_archiver_labels(policy: &str, asset: &str) -> BTreeMap<String, String> {
    let mut labels = backup_labels(policy, asset);
    labels.insert(LABEL_ROLE.to_owned(), ROLE_WAL_ARCHIVE.to_owned());
    labels
}

/// The role label of the Jobs that drop a retired archiver's replication slot.
pub const ROLE_WAL_RELEASE: &str = "wal-release";

/// The Job that drops the slot of the retired archiver Deployment `archiver` (of uid `uid`).
pub fn wal_release(archiver: &str, uid: &str) -> String {
    bounded_name(&[archiver, "release", &short_hash(uid, 5)], NAME_MAX)
}

/// The label selector that finds every WAL archiver of `policy`.
pub fn wal_archiver_selector(policy: &str) -> String {
    format!(
        "{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_ROLE}={ROLE_WAL_ARCHIVE},{LABEL_POLICY}={}",
        label_value(policy)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_are_kept_and_long_ones_bounded_deterministically() {
        assert_eq!(backup_cronjob("shop", "orders-db"), "shop-orders-db");
        let long = "a-very-long-policy-name-that-goes-on-and-on-and-on";
        let a = backup_cronjob(long, "orders-database");
        assert_eq!(a.len(), CRONJOB_NAME_MAX);
        assert_eq!(a, backup_cronjob(long, "orders-database"), "deterministic");
        assert_ne!(
            a,
            backup_cronjob(long, "orders-database-2"),
            "distinct inputs, distinct names"
        );
        assert!(!a.contains("--"));
        let v = label_value(&"x".repeat(253));
        assert!(v.len() <= NAME_MAX);
    }

    #[test]
    fn on_demand_jobs_are_one_per_token() {
        let a = backup_now_job("shop", "orders-db", "2026-11-24T10:00");
        assert_eq!(a, backup_now_job("shop", "orders-db", "2026-11-24T10:00"));
        assert_ne!(a, backup_now_job("shop", "orders-db", "2026-11-24T11:00"));
        assert!(a.len() <= NAME_MAX && a.starts_with("shop-orders-db-now-"));
    }

    #[test]
    fn selector_matches_the_labels() {
        let labels = backup_labels("shop", "db");
        for part in backup_selector("shop").split(',') {
            let (k, v) = part.split_once('=').unwrap();
            assert_eq!(labels.get(k).map(String::as_str), Some(v));
        }
    }
}
