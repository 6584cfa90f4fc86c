//! Which identity an S3 location without `credentialsSecret` may act as: the platform team's
//! choice, not the namespace user's. Without it, object_store's default chain ends at the node's
//! instance metadata service, so a user who left the Secret out would borrow the node's cloud
//! role (and every bucket it reaches, other teams' backups among them).

use std::fmt;
use std::str::FromStr;

use crate::backup_policy::BackupPolicySpec;
use crate::common::{RestoreTarget, S3CredentialsRef, S3Location};
use crate::drill_schedule::DrillScheduleSpec;
use crate::restore_request::RestoreRequestSpec;

/// The environment variable the operator sets on every agent pod with the platform's
/// [`AmbientIdentity`]; an agent without it acts as [`AmbientIdentity::None`].
pub const AMBIENT_IDENTITY_ENV: &str = "LIFEBOAT_S3_AMBIENT_IDENTITY";

/// What a location without `credentialsSecret` may use (`agent.s3AmbientIdentity`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AmbientIdentity {
    /// Nothing: such a location is refused (the default).
    #[default]
    None,
    /// Only a web identity token (`AWS_WEB_IDENTITY_TOKEN_FILE` and `AWS_ROLE_ARN`, as the IRSA
    /// webhook injects them) exchanged at STS; never instance metadata, container credential
    /// endpoints or `AWS_*` keys in the environment.
    WebIdentity,
}

impl AmbientIdentity {
    pub fn as_str(self) -> &'static str {
        match self {
            AmbientIdentity::None => "none",
            AmbientIdentity::WebIdentity => "webIdentity",
        }
    }
}

impl fmt::Display for AmbientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A mode name that is neither `none` nor `webIdentity`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("S3 ambient identity {0:?}: expected none or webIdentity")]
pub struct UnknownAmbientIdentity(pub String);

impl FromStr for AmbientIdentity {
    type Err = UnknownAmbientIdentity;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(AmbientIdentity::None),
            "webIdentity" => Ok(AmbientIdentity::WebIdentity),
            other => Err(UnknownAmbientIdentity(other.to_owned())),
        }
    }
}

/// How the agent authenticates to one location.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum S3Identity<'a> {
    /// The access keys of the location's `credentialsSecret`.
    Keys(&'a S3CredentialsRef),
    /// The pod's web identity token.
    WebIdentity,
}

/// A location without `credentialsSecret` while the platform allows no ambient identity.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0} has no credentialsSecret and this installation allows no ambient S3 identity (agent.s3AmbientIdentity: none): name a Secret with the bucket's keys"
)]
pub struct AmbientIdentityDisabled(pub String);

/// The identity a location is used with under `mode`; `what` names the location in the refusal.
pub fn decide<'a>(
    location: &'a S3Location,
    mode: AmbientIdentity,
    what: &str,
) -> Result<S3Identity<'a>, AmbientIdentityDisabled> {
    match (&location.credentials_secret, mode) {
        (Some(keys), _) => Ok(S3Identity::Keys(keys)),
        (None, AmbientIdentity::WebIdentity) => Ok(S3Identity::WebIdentity),
        (None, AmbientIdentity::None) => Err(AmbientIdentityDisabled(what.to_owned())),
    }
}

/// The first of `locations` refused under `mode`.
pub fn check<'a>(
    locations: impl IntoIterator<Item = (String, &'a S3Location)>,
    mode: AmbientIdentity,
) -> Result<(), AmbientIdentityDisabled> {
    locations
        .into_iter()
        .try_for_each(|(what, loc)| decide(loc, mode, &what).map(|_| ()))
}

/// Every S3 location of a BackupPolicy: its destination, its off-site copies and its bucket
/// assets.
pub fn policy_locations(spec: &BackupPolicySpec) -> Vec<(String, &S3Location)> {
    let mut all: Vec<(String, &S3Location)> = Vec::new();
    if let Some(s3) = &spec.destination.s3 {
        all.push(("destination.s3".into(), s3));
    }
    for copy in &spec.copies {
        all.push((format!("copy {:?}", copy.name), &copy.s3));
    }
    for asset in &spec.assets {
        if let Some(bucket) = asset.object_storage() {
            all.push((format!("asset {:?}", asset.name), &bucket.source));
        }
    }
    all
}

fn target_locations(targets: &[RestoreTarget]) -> impl Iterator<Item = (String, &S3Location)> {
    targets.iter().filter_map(|t| {
        t.object_storage()
            .map(|s3| (format!("the target of asset {:?}", t.asset), s3))
    })
}

/// Every S3 location a RestoreRequest names itself: `source.location` and its bucket targets.
pub fn restore_locations(spec: &RestoreRequestSpec) -> Vec<(String, &S3Location)> {
    let mut all: Vec<(String, &S3Location)> = Vec::new();
    if let Some(s3) = spec.source.location.as_ref().and_then(|l| l.s3.as_ref()) {
        all.push(("source.location.s3".into(), s3));
    }
    all.extend(target_locations(&spec.targets));
    all
}

/// Every S3 location a DrillSchedule names itself: its bucket staging targets.
pub fn drill_locations(spec: &DrillScheduleSpec) -> Vec<(String, &S3Location)> {
    target_locations(&spec.staging.targets).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn location(secret: bool) -> S3Location {
        serde_json::from_value(serde_json::json!({
            "endpoint": "https://s3.example.com",
            "bucket": "backups",
            "credentialsSecret": secret.then(|| serde_json::json!({"name": "keys"})),
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn keys_are_used_whatever_the_mode() {
        let with_keys = location(true);
        for mode in [AmbientIdentity::None, AmbientIdentity::WebIdentity] {
            assert!(matches!(
                decide(&with_keys, mode, "x"),
                Ok(S3Identity::Keys(k)) if k.name == "keys"
            ));
        }
    }

    #[test]
    fn without_keys_only_web_identity_and_only_when_the_platform_allows_it() {
        let without = location(false);
        assert_eq!(
            decide(&without, AmbientIdentity::WebIdentity, "x"),
            Ok(S3Identity::WebIdentity)
        );
        let refused = decide(&without, AmbientIdentity::None, "destination.s3");
        assert_eq!(
            refused,
            Err(AmbientIdentityDisabled("destination.s3".into()))
        );
        assert!(refused.unwrap_err().to_string().contains("destination.s3"));
    }

    #[test]
    fn the_default_mode_is_none_and_names_round_trip() {
        assert_eq!(AmbientIdentity::default(), AmbientIdentity::None);
        for mode in [AmbientIdentity::None, AmbientIdentity::WebIdentity] {
            assert_eq!(mode.as_str().parse(), Ok(mode));
        }
        assert!("imds".parse::<AmbientIdentity>().is_err());
        assert!("".parse::<AmbientIdentity>().is_err());
    }

    #[test]
    fn every_location_of_a_policy_and_a_restore_is_checked() {
        let policy: BackupPolicySpec = serde_json::from_value(serde_json::json!({
            "schedule": "0 * * * *",
            "retention": {"keepLast": 24},
            "destination": {"s3": {"endpoint": "https://s3", "bucket": "bak",
                                   "credentialsSecret": {"name": "keys"}}},
            "copies": [
                {"name": "offsite", "s3": {"endpoint": "https://s3.other", "bucket": "far"}}
            ],
            "assets": [
                {"name": "files", "objectStorage": {"endpoint": "https://s3", "bucket": "files",
                                                     "credentialsSecret": {"name": "keys"}}}
            ]
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let all = policy_locations(&policy);
        assert_eq!(all.len(), 3);
        // The keyless copy is refused even though the destination and the asset have keys.
        assert_eq!(
            check(all, AmbientIdentity::None),
            Err(AmbientIdentityDisabled("copy \"offsite\"".into()))
        );
        assert_eq!(
            check(policy_locations(&policy), AmbientIdentity::WebIdentity),
            Ok(())
        );

        let restore: RestoreRequestSpec = serde_json::from_value(serde_json::json!({
            "source": {"policy": "p", "location": {"s3": {"endpoint": "https://s3", "bucket": "bak"}}},
            "targets": [{"asset": "files", "objectStorage":
                {"endpoint": "https://s3", "bucket": "copy", "credentialsSecret": {"name": "k"}}}]
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(restore_locations(&restore).len(), 2);
        assert_eq!(
            check(restore_locations(&restore), AmbientIdentity::None),
            Err(AmbientIdentityDisabled("source.location.s3".into()))
        );
    }
}
