//! Prometheus metrics. Every gauge is derived from resource status in reconcile, so a restarted
//! operator rebuilds them from what the API server holds (Velero's metrics vanished on restart).

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

use crate::gauges::Gauges;

/// The operator's metrics, registered in their own registry.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub reconciles: IntCounterVec,
    pub reconcile_errors: IntCounterVec,
    pub reconcile_duration: HistogramVec,
    pub backup_last_success: Gauges,
    pub backup_snapshot: Gauges,
    pub backup_bytes: Gauges,
    pub backup_duration: Gauges,
    pub backup_consecutive_failures: Gauges,
    pub rpo_objective: Gauges,
    pub rpo: Gauges,
    pub rpo_objective_met: Gauges,
    pub drill_rto: Gauges,
    pub drill_rpo: Gauges,
    pub drill_objective_met: Gauges,
    pub drill_last_run: Gauges,
    pub drill_rto_at_risk: Gauges,
    pub backup_last_verified: Gauges,
    pub retention_refused: Gauges,
    pub backup_verified_snapshot: Gauges,
    pub rpo_measured_snapshot: Gauges,
    pub rpo_worst_case: Gauges,
    pub drill_next_run: Gauges,
    pub wal_archive_lag: Gauges,
    pub copy_snapshot: Gauges,
}

/// A gauge family of `labels`: what most of the operator's metrics are.
fn gauge(name: &str, help: &str, labels: &[&str]) -> Result<Gauges, prometheus::Error> {
    Gauges::new(name, help, labels)
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let asset = &["namespace", "policy", "asset"];
        let m = Self {
            reconciles: IntCounterVec::new(
                Opts::new("lifeboat_reconciles_total", "Reconciles, per kind"),
                &["kind"],
            )?,
            reconcile_errors: IntCounterVec::new(
                Opts::new(
                    "lifeboat_reconcile_errors_total",
                    "Failed reconciles, per kind and reason",
                ),
                &["kind", "reason"],
            )?,
            reconcile_duration: HistogramVec::new(
                HistogramOpts::new(
                    "lifeboat_reconcile_duration_seconds",
                    "Reconcile duration, per kind",
                )
                .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0]),
                &["kind"],
            )?,
            backup_last_success: gauge(
                "lifeboat_backup_last_success_timestamp_seconds",
                "When the newest good backup of an asset finished (Unix seconds)",
                asset,
            )?,
            backup_snapshot: gauge(
                "lifeboat_backup_snapshot_timestamp_seconds",
                "Snapshot time of the newest good backup of an asset (Unix seconds); RPO = time() - this",
                asset,
            )?,
            backup_bytes: gauge(
                "lifeboat_backup_bytes",
                "Stored bytes of the newest good backup of an asset",
                asset,
            )?,
            backup_duration: gauge(
                "lifeboat_backup_duration_seconds",
                "Duration of the newest good backup of an asset",
                asset,
            )?,
            backup_consecutive_failures: gauge(
                "lifeboat_backup_consecutive_failures",
                "Failed backups of an asset since its last success",
                asset,
            )?,
            rpo_objective: gauge(
                "lifeboat_rpo_objective_seconds",
                "The RPO objective of a policy",
                &["namespace", "policy"],
            )?,
            rpo: gauge(
                "lifeboat_rpo_seconds",
                "Age of the newest good backup's snapshot of an asset, as of the policy's last reconcile (live: time() - lifeboat_backup_snapshot_timestamp_seconds)",
                asset,
            )?,
            rpo_objective_met: gauge(
                "lifeboat_rpo_objective_met",
                "1 while every asset of the policy is within its RPO objective (the RPOMet condition), else 0",
                &["namespace", "policy"],
            )?,
            drill_rto: gauge(
                "lifeboat_drill_rto_seconds",
                "Achieved RTO of the last drill that restored",
                &["namespace", "drill"],
            )?,
            drill_rpo: gauge(
                "lifeboat_drill_rpo_seconds",
                "Achieved RPO of the last drill that restored",
                &["namespace", "drill"],
            )?,
            drill_objective_met: gauge(
                "lifeboat_drill_objective_met",
                "1 when the last drill met the objective (rto or rpo), else 0",
                &["namespace", "drill", "objective"],
            )?,
            drill_last_run: gauge(
                "lifeboat_drill_last_run_timestamp_seconds",
                "When the last drill finished, with its verdict",
                &["namespace", "drill", "verdict"],
            )?,
            backup_last_verified: gauge(
                "lifeboat_backup_last_verified_timestamp_seconds",
                "When a drill last restored and validated a backup of the asset (proven restorable)",
                &["namespace", "policy", "asset"],
            )?,
            backup_verified_snapshot: gauge(
                "lifeboat_backup_verified_snapshot_timestamp_seconds",
                "Snapshot time of the asset's newest backup a drill restored and validated; verified RPO = time() - this",
                &["namespace", "policy", "asset"],
            )?,
            copy_snapshot: gauge(
                "lifeboat_copy_snapshot_timestamp_seconds",
                "Snapshot time of the asset's newest backup an off-site copy holds (read back there); how far it trails = lifeboat_backup_snapshot_timestamp_seconds - this",
                &["namespace", "policy", "asset", "copy"],
            )?,
            retention_refused: gauge(
                "lifeboat_retention_refused",
                "1 while the mass-deletion guard refused the asset's last retention pass (nothing was deleted), else 0",
                &["namespace", "policy", "asset"],
            )?,
            drill_rto_at_risk: gauge(
                "lifeboat_drill_rto_at_risk",
                "1 while the last 3 drills all took over 80% of the RTO objective (the RTOAtRisk condition), else 0",
                &["namespace", "drill"],
            )?,
            rpo_measured_snapshot: gauge(
                "lifeboat_rpo_measured_snapshot_timestamp_seconds",
                "Snapshot time RPOMet measures the asset from (its newest verified backup when the basis is Verified, else its newest good one); the RPOMet age = time() - this",
                asset,
            )?,
            rpo_worst_case: gauge(
                "lifeboat_rpo_worst_case_seconds",
                "Worst-case RPO the policy's schedule allows: its longest gap between due times plus the longest measured backup (status.worstCaseRpo)",
                &["namespace", "policy"],
            )?,
            drill_next_run: gauge(
                "lifeboat_drill_next_run_timestamp_seconds",
                "When the DrillSchedule's next drill is due (status.nextRunTime); in the past while a due drill has not run",
                &["namespace", "drill"],
            )?,
            wal_archive_lag: gauge(
                "lifeboat_wal_archive_lag_seconds",
                "Upper bound of a pointInTime asset's WAL archive lag: what its archiver's readiness allows while Available, plus the time since it stopped being (status.assets[].walArchiveLagSeconds)",
                asset,
            )?,
            registry,
        };
        for c in m.collectors() {
            m.registry.register(c)?;
        }
        Ok(m)
    }

    /// Every metric family, registered once by `new`.
    fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![
            Box::new(self.reconciles.clone()),
            Box::new(self.reconcile_errors.clone()),
            Box::new(self.reconcile_duration.clone()),
            Box::new(self.backup_last_success.clone()),
            Box::new(self.backup_snapshot.clone()),
            Box::new(self.backup_bytes.clone()),
            Box::new(self.backup_duration.clone()),
            Box::new(self.backup_consecutive_failures.clone()),
            Box::new(self.rpo_objective.clone()),
            Box::new(self.rpo.clone()),
            Box::new(self.rpo_objective_met.clone()),
            Box::new(self.drill_rto.clone()),
            Box::new(self.drill_rpo.clone()),
            Box::new(self.drill_objective_met.clone()),
            Box::new(self.drill_last_run.clone()),
            Box::new(self.drill_rto_at_risk.clone()),
            Box::new(self.backup_last_verified.clone()),
            Box::new(self.retention_refused.clone()),
            Box::new(self.copy_snapshot.clone()),
            Box::new(self.backup_verified_snapshot.clone()),
            Box::new(self.rpo_measured_snapshot.clone()),
            Box::new(self.rpo_worst_case.clone()),
            Box::new(self.drill_next_run.clone()),
            Box::new(self.wal_archive_lag.clone()),
        ]
    }

    /// The names of every metric family the operator exports (histograms as their base name),
    /// with their label names: what dashboards and alert rules may refer to.
    pub fn families(&self) -> Vec<(String, Vec<String>)> {
        self.collectors()
            .iter()
            .flat_map(|c| {
                c.desc()
                    .into_iter()
                    .map(|d| (d.fq_name.clone(), d.variable_labels.clone()))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// The per-object families of `owner`'s kind, by the label naming the object.
    fn families_of(&self, owner: Owner) -> Vec<(&Gauges, &'static str)> {
        match owner {
            Owner::Policy => [
                &self.backup_last_success,
                &self.backup_snapshot,
                &self.backup_bytes,
                &self.backup_duration,
                &self.backup_consecutive_failures,
                &self.rpo_objective,
                &self.rpo,
                &self.rpo_objective_met,
                &self.backup_last_verified,
                &self.retention_refused,
                &self.backup_verified_snapshot,
                &self.rpo_measured_snapshot,
                &self.rpo_worst_case,
                &self.wal_archive_lag,
                &self.copy_snapshot,
            ]
            .into_iter()
            .map(|g| (g, "policy"))
            .collect(),
            Owner::Drill => [
                &self.drill_rto,
                &self.drill_rpo,
                &self.drill_objective_met,
                &self.drill_last_run,
                &self.drill_rto_at_risk,
                &self.drill_next_run,
            ]
            .into_iter()
            .map(|g| (g, "drill"))
            .collect(),
        }
    }

    /// Removes every series of an object of `owner`'s kind that `live` does not know (by
    /// namespace and name), and of an asset its object no longer has: an alert on a deleted
    /// policy stops firing. Returns how many series went.
    pub fn forget(&self, owner: Owner, live: &Live) -> usize {
        self.families_of(owner)
            .into_iter()
            .map(|(family, object_label)| {
                family.retain(|labels| {
                    let key = (
                        labels.get("namespace").unwrap_or_default().to_owned(),
                        labels.get(object_label).unwrap_or_default().to_owned(),
                    );
                    live.get(&key).is_some_and(|assets| {
                        labels.get("asset").is_none_or(|a| assets.contains(a))
                    })
                })
            })
            .sum()
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) =
            prometheus::TextEncoder::new().encode_utf8(&self.registry.gather(), &mut out)
        {
            tracing::warn!(error = %e, "encoding metrics");
        }
        out
    }
}

/// The kinds whose objects own metric series.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    Policy,
    Drill,
}

/// The objects that exist, by namespace and name, with their assets (a drill's are its drilled
/// assets; its series carry none).
pub type Live = std::collections::HashMap<(String, String), std::collections::BTreeSet<String>>;

/// Every [`crate::controller::requeue::METRICS_SWEEP`], removes the series of objects `store`
/// (the controller's own cache of its root objects) no longer holds.
pub async fn sweep<K>(store: kube::runtime::reflector::Store<K>, metrics: Metrics, owner: Owner)
where
    K: kube::Resource<DynamicType = ()> + Clone + AssetsOf + 'static,
{
    use kube::ResourceExt;
    if store.wait_until_ready().await.is_err() {
        return;
    }
    loop {
        tokio::time::sleep(crate::controller::requeue::METRICS_SWEEP).await;
        let live: Live = store
            .state()
            .iter()
            .map(|o| {
                let assets = o.assets();
                ((o.namespace().unwrap_or_default(), o.name_any()), assets)
            })
            .collect();
        let removed = metrics.forget(owner, &live);
        if removed > 0 {
            tracing::debug!(
                removed,
                ?owner,
                "removed the metric series of deleted objects"
            );
        }
    }
}

/// The assets an object's series may name.
pub trait AssetsOf {
    fn assets(&self) -> std::collections::BTreeSet<String>;
}

impl AssetsOf for crate::backup_policy::cached::CachedPolicy {
    fn assets(&self) -> std::collections::BTreeSet<String> {
        self.asset_names()
    }
}

/// A drill that no longer deserializes names no asset: its series go.
impl AssetsOf for kube::core::DeserializeGuard<lifeboat_api::DrillSchedule> {
    fn assets(&self) -> std::collections::BTreeSet<String> {
        self.0
            .as_ref()
            .map(|d| d.spec.assets.iter().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_series_of_a_deleted_object_or_a_removed_asset_go() {
        let m = Metrics::new().unwrap();
        for (ns, policy, asset) in [
            ("a", "shop", "db"),
            ("a", "shop", "cache"),
            ("a", "gone", "db"),
        ] {
            m.backup_bytes
                .with_label_values(&[ns, policy, asset])
                .set(1.0);
        }
        m.rpo_objective.with_label_values(&["a", "gone"]).set(1.0);
        m.drill_rto.with_label_values(&["a", "q"]).set(1.0);
        let live: Live = [(
            ("a".to_owned(), "shop".to_owned()),
            ["db".to_owned()].into(),
        )]
        .into();
        assert_eq!(m.forget(Owner::Policy, &live), 3);
        let text = m.render();
        assert!(
            text.contains(r#"lifeboat_backup_bytes{asset="db",namespace="a",policy="shop"}"#),
            "{text}"
        );
        assert!(!text.contains("cache") && !text.contains("gone"), "{text}");
        assert!(
            text.contains("lifeboat_drill_rto_seconds"),
            "drills are another owner"
        );
        assert_eq!(m.forget(Owner::Drill, &Live::new()), 1);
    }
}
