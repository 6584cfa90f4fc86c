//! Prometheus metrics. Every gauge is derived from resource status in reconcile, so a restarted
//! operator rebuilds them from what the API server holds (Velero's metrics vanished on restart).

use prometheus::{GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

/// The operator's metrics, registered in their own registry.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub reconciles: IntCounterVec,
    pub reconcile_errors: IntCounterVec,
    pub reconcile_duration: HistogramVec,
    pub backup_last_success: GaugeVec,
    pub backup_snapshot: GaugeVec,
    pub backup_bytes: GaugeVec,
    pub backup_duration: GaugeVec,
    pub backup_consecutive_failures: GaugeVec,
    pub rpo_objective: GaugeVec,
    pub rpo: GaugeVec,
    pub rpo_objective_met: GaugeVec,
    pub drill_rto: GaugeVec,
    pub drill_rpo: GaugeVec,
    pub drill_objective_met: GaugeVec,
    pub drill_last_run: GaugeVec,
    pub drill_rto_at_risk: GaugeVec,
    pub backup_last_verified: GaugeVec,
    pub retention_refused: GaugeVec,
    pub backup_verified_snapshot: GaugeVec,
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
            backup_last_success: GaugeVec::new(
                Opts::new(
                    "lifeboat_backup_last_success_timestamp_seconds",
                    "When the newest good backup of an asset finished (Unix seconds)",
                ),
                asset,
            )?,
            backup_snapshot: GaugeVec::new(
                Opts::new(
                    "lifeboat_backup_snapshot_timestamp_seconds",
                    "Snapshot time of the newest good backup of an asset (Unix seconds); RPO = time() - this",
                ),
                asset,
            )?,
            backup_bytes: GaugeVec::new(
                Opts::new(
                    "lifeboat_backup_bytes",
                    "Stored bytes of the newest good backup of an asset",
                ),
                asset,
            )?,
            backup_duration: GaugeVec::new(
                Opts::new(
                    "lifeboat_backup_duration_seconds",
                    "Duration of the newest good backup of an asset",
                ),
                asset,
            )?,
            backup_consecutive_failures: GaugeVec::new(
                Opts::new(
                    "lifeboat_backup_consecutive_failures",
                    "Failed backups of an asset since its last success",
                ),
                asset,
            )?,
            rpo_objective: GaugeVec::new(
                Opts::new(
                    "lifeboat_rpo_objective_seconds",
                    "The RPO objective of a policy",
                ),
                &["namespace", "policy"],
            )?,
            rpo: GaugeVec::new(
                Opts::new(
                    "lifeboat_rpo_seconds",
                    "Age of the newest good backup's snapshot of an asset, as of the policy's last reconcile (live: time() - lifeboat_backup_snapshot_timestamp_seconds)",
                ),
                asset,
            )?,
            rpo_objective_met: GaugeVec::new(
                Opts::new(
                    "lifeboat_rpo_objective_met",
                    "1 while every asset of the policy is within its RPO objective (the RPOMet condition), else 0",
                ),
                &["namespace", "policy"],
            )?,
            drill_rto: GaugeVec::new(
                Opts::new(
                    "lifeboat_drill_rto_seconds",
                    "Achieved RTO of the last drill that restored",
                ),
                &["namespace", "drill"],
            )?,
            drill_rpo: GaugeVec::new(
                Opts::new(
                    "lifeboat_drill_rpo_seconds",
                    "Achieved RPO of the last drill that restored",
                ),
                &["namespace", "drill"],
            )?,
            drill_objective_met: GaugeVec::new(
                Opts::new(
                    "lifeboat_drill_objective_met",
                    "1 when the last drill met the objective (rto or rpo), else 0",
                ),
                &["namespace", "drill", "objective"],
            )?,
            drill_last_run: GaugeVec::new(
                Opts::new(
                    "lifeboat_drill_last_run_timestamp_seconds",
                    "When the last drill finished, with its verdict",
                ),
                &["namespace", "drill", "verdict"],
            )?,
            backup_last_verified: GaugeVec::new(
                Opts::new(
                    "lifeboat_backup_last_verified_timestamp_seconds",
                    "When a drill last restored and validated a backup of the asset (proven restorable)",
                ),
                &["namespace", "policy", "asset"],
            )?,
            backup_verified_snapshot: GaugeVec::new(
                Opts::new(
                    "lifeboat_backup_verified_snapshot_timestamp_seconds",
                    "Snapshot time of the asset's newest backup a drill restored and validated; verified RPO = time() - this",
                ),
                &["namespace", "policy", "asset"],
            )?,
            retention_refused: GaugeVec::new(
                Opts::new(
                    "lifeboat_retention_refused",
                    "1 while the mass-deletion guard refused the asset's last retention pass (nothing was deleted), else 0",
                ),
                &["namespace", "policy", "asset"],
            )?,
            drill_rto_at_risk: GaugeVec::new(
                Opts::new(
                    "lifeboat_drill_rto_at_risk",
                    "1 while the last 3 drills all took over 80% of the RTO objective (the RTOAtRisk condition), else 0",
                ),
                &["namespace", "drill"],
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
            Box::new(self.backup_verified_snapshot.clone()),
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
