//! `kubectl lifeboat`: the plugin's pure parts (the status table and the recovery report),
//! unit-tested without a cluster; `main.rs` only reads and writes the API.

pub mod backups;
pub mod evidence_report;
pub mod logs;
pub mod output;
pub mod report;
pub mod status;
pub mod wait;

/// The annotation that asks a BackupPolicy for an on-demand backup (each value runs once).
pub const BACKUP_NOW: &str = "lifeboat.dev/backup-now";
/// The annotation that asks a DrillSchedule for a drill now (each value runs once).
pub const DRILL_NOW: &str = "lifeboat.dev/drill-now";
/// The field manager of everything the plugin writes.
pub const FIELD_MANAGER: &str = "kubectl-lifeboat";
