//! `kubectl lifeboat logs KIND/NAME`: the agent logs of what a resource ran. Its pods are found
//! in the resource's own namespace by the labels the operator puts on every Job it makes
//! (`lifeboat_api::names`), never by guessing names: a pod someone else labelled in another
//! namespace is never read, and a Job renamed by the operator is still found.

use std::str::FromStr;

use lifeboat_api::names::{
    LABEL_DRILL, LABEL_MANAGED_BY, LABEL_POLICY, LABEL_RESTORE, LABEL_ROLE, MANAGED_BY, label_value,
};

/// The resource whose runs are shown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub kind: Kind,
    pub name: String,
}

/// The kinds that run agent Jobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Its scheduled and on-demand backups.
    BackupPolicy,
    /// Its catalog, safety-backup, restore and validate Jobs.
    RestoreRequest,
    /// Its evidence and notify Jobs, and the Jobs of the RestoreRequests its drills made.
    DrillSchedule,
}

/// Why `KIND/NAME` was not understood.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("{0:?}: expected KIND/NAME, e.g. backuppolicy/shop")]
    Shape(String),
    #[error(
        "{0:?}: not a kind with runs (backuppolicy/bp, restorerequest/rr, drillschedule/drill)"
    )]
    Kind(String),
}

impl FromStr for Target {
    type Err = TargetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (kind, name) = s
            .split_once('/')
            .filter(|(k, n)| !k.is_empty() && !n.is_empty() && !n.contains('/'))
            .ok_or_else(|| TargetError::Shape(s.to_owned()))?;
        // kubectl's spellings: singular, plural, short name, and with the group.
        let bare = kind
            .strip_suffix(".lifeboat.dev")
            .unwrap_or(kind)
            .to_ascii_lowercase();
        let kind = match bare.as_str() {
            "backuppolicy" | "backuppolicies" | "bp" => Kind::BackupPolicy,
            "restorerequest" | "restorerequests" | "rr" => Kind::RestoreRequest,
            "drillschedule" | "drillschedules" | "drill" | "drills" => Kind::DrillSchedule,
            _ => return Err(TargetError::Kind(kind.to_owned())),
        };
        Ok(Target {
            kind,
            name: name.to_owned(),
        })
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            Kind::BackupPolicy => "backuppolicy",
            Kind::RestoreRequest => "restorerequest",
            Kind::DrillSchedule => "drillschedule",
        };
        write!(f, "{kind}/{}", self.name)
    }
}

/// The label selector of the agent pods `target` ran itself.
pub fn pod_selector(target: &Target) -> String {
    let value = label_value(&target.name);
    match target.kind {
        Kind::BackupPolicy => {
            format!("{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_ROLE}=backup,{LABEL_POLICY}={value}")
        }
        Kind::RestoreRequest => format!("{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_RESTORE}={value}"),
        Kind::DrillSchedule => format!("{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_DRILL}={value}"),
    }
}

/// The label selector of the RestoreRequests a DrillSchedule's drills made.
pub fn drill_requests(drill: &str) -> String {
    format!(
        "{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_DRILL}={}",
        label_value(drill)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_read_as_kubectl_spells_them_and_nothing_else() {
        let t: Target = "bp/shop".parse().unwrap();
        assert_eq!(t.kind, Kind::BackupPolicy);
        assert_eq!(t.to_string(), "backuppolicy/shop");
        let t: Target = "restorerequests.lifeboat.dev/r1".parse().unwrap();
        assert_eq!(t.kind, Kind::RestoreRequest);
        assert_eq!(
            "drill/q".parse::<Target>().unwrap().kind,
            Kind::DrillSchedule
        );
        assert!(matches!(
            "pod/x".parse::<Target>(),
            Err(TargetError::Kind(_))
        ));
        assert!(matches!(
            "shop".parse::<Target>(),
            Err(TargetError::Shape(_))
        ));
        assert!(matches!(
            "bp/a/b".parse::<Target>(),
            Err(TargetError::Shape(_))
        ));
    }

    #[test]
    fn a_long_name_is_selected_by_the_label_value_the_operator_sets() {
        let long = "p".repeat(100);
        let t = Target {
            kind: Kind::BackupPolicy,
            name: long.clone(),
        };
        let s = pod_selector(&t);
        assert!(
            s.ends_with(&format!("{LABEL_POLICY}={}", label_value(&long))),
            "{s}"
        );
        assert!(!s.contains(&long));
    }
}
