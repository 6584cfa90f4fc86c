//! Names and label values shared by the operator, which sets them, and the kubectl plugin, which
//! selects by them: one definition, so a selector always matches what the operator labelled.

use std::fmt::Write as _;

use sha2::{Digest, Sha256};

/// The manager value of `app.kubernetes.io/managed-by` on everything Lifeboat creates.
pub const MANAGED_BY: &str = "lifeboat-operator";
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const LABEL_NAME: &str = "app.kubernetes.io/name";
/// On a backup Job and its pod: the policy (its label value).
pub const LABEL_POLICY: &str = "lifeboat.dev/policy";
pub const LABEL_ASSET: &str = "lifeboat.dev/asset";
/// What the Job does: `backup`, `restore`, `validate`, `catalog`, `evidence`, `notify`, ...
pub const LABEL_ROLE: &str = "lifeboat.dev/role";
/// On a RestoreRequest's Jobs and pods: the request.
pub const LABEL_RESTORE: &str = "lifeboat.dev/restore";
/// On a drill's own Jobs (evidence, notify) and its RestoreRequest: the DrillSchedule.
pub const LABEL_DRILL: &str = "lifeboat.dev/drill";

/// Names of Jobs and most other objects, and label values.
pub const NAME_MAX: usize = 63;

/// Lowercase hex of the first `n` bytes of sha256(`s`).
pub fn short_hash(s: &str, n: usize) -> String {
    let digest = Sha256::digest(s.as_bytes());
    let mut out = String::with_capacity(2 * n);
    for b in digest.iter().take(n) {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// `parts` joined with `-`, shortened to `max` characters with a hash of the whole when longer.
/// The result is a valid DNS label when the parts are.
pub fn bounded_name(parts: &[&str], max: usize) -> String {
    let full = parts.join("-");
    if full.len() <= max {
        return full;
    }
    let hash = short_hash(&full, 4); // 8 hex characters
    let keep = max.saturating_sub(hash.len() + 1);
    let prefix = full[..keep].trim_end_matches('-');
    format!("{prefix}-{hash}")
}

/// A label value for an arbitrary name: the name itself when it fits, else shortened.
pub fn label_value(name: &str) -> String {
    bounded_name(&[name], NAME_MAX)
}
