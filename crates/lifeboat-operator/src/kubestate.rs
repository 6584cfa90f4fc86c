//! Who a Kubernetes-state Job runs as, and what it may reach. Such a Job talks to the API server,
//! so the account it runs as is the boundary: never one the user names (it could reach whatever
//! its bindings reach), but Lifeboat's own `lifeboat-kubestate-backup` (reads) or
//! `lifeboat-kubestate-restore` (writes) in the resource's namespace, bound to the chart's
//! ClusterRoles in exactly the namespaces its scope names.
//!
//! The scope comes from labels on Namespaces, which only whoever may `patch namespaces` can set:
//! the platform team, never a namespace user. A namespace's own Kubernetes state is always in its
//! scope. Another namespace is in it when that namespace carries `restores-from.lifeboat.dev/<ns>:
//! "true"` (for restores requested in `<ns>`) or `backups-by.lifeboat.dev/<ns>: "true"` (for
//! backups of policies in `<ns>`): one key per trusted namespace, so a namespace can trust several
//! and the check is an exact key, never a parsed list. Cluster-scoped kinds (and so every
//! namespace) need `lifeboat.dev/allow-cluster-restore` or `lifeboat.dev/allow-cluster-backup`
//! `"true"` on the resource's own namespace, and the chart's `kubernetesState.clusterScope`.
//!
//! [`decide`] is pure; [`scope`] reads the labels and [`grant`] applies the account and bindings.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleBinding};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use lifeboat_api::agent_job::KubernetesStateScope;
use lifeboat_api::backup_policy::KubernetesStateAsset;
use lifeboat_api::common::KubernetesStateTarget;
use serde_json::json;

use crate::config::FIELD_MANAGER;
use crate::error::{Error, Problem, Result};
use crate::names;

/// On a target namespace, key `restores-from.lifeboat.dev/<ns>`: restores requested in `<ns>`
/// may write here.
pub const RESTORES_FROM: &str = "restores-from.lifeboat.dev";
/// On a namespace, key `backups-by.lifeboat.dev/<ns>`: backups of policies in `<ns>` may read it.
pub const BACKUPS_BY: &str = "backups-by.lifeboat.dev";
/// On the request's namespace: its restores may write cluster-scoped objects and every namespace.
pub const ALLOW_CLUSTER_RESTORE: &str = "lifeboat.dev/allow-cluster-restore";
/// On the policy's namespace: its backups may read cluster-scoped objects and every namespace.
pub const ALLOW_CLUSTER_BACKUP: &str = "lifeboat.dev/allow-cluster-backup";
/// On the ServiceAccount, key `bound.lifeboat.dev/<ns>`: a binding was made in `<ns>`, to be
/// emptied once `<ns>` withdraws its label.
const BOUND: &str = "bound.lifeboat.dev";
/// On every binding: the namespace whose account it binds.
const LABEL_FOR: &str = "lifeboat.dev/kubestate-for";

/// Whether a Job reads (backup) or writes (restore) Kubernetes state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Backup,
    Restore,
}

impl Access {
    fn word(self) -> &'static str {
        match self {
            Access::Backup => "backup",
            Access::Restore => "restore",
        }
    }

    /// The account the Job runs as, in the resource's namespace.
    pub fn service_account(self) -> &'static str {
        match self {
            Access::Backup => "lifeboat-kubestate-backup",
            Access::Restore => "lifeboat-kubestate-restore",
        }
    }

    fn grant_label(self, from: &str) -> String {
        match self {
            Access::Backup => format!("{BACKUPS_BY}/{from}"),
            Access::Restore => format!("{RESTORES_FROM}/{from}"),
        }
    }

    fn cluster_label(self) -> &'static str {
        match self {
            Access::Backup => ALLOW_CLUSTER_BACKUP,
            Access::Restore => ALLOW_CLUSTER_RESTORE,
        }
    }

    /// The chart's ClusterRole for this access: `<prefix>-backup`, `<prefix>-restore-cluster`.
    fn role(self, prefix: &str, cluster: bool) -> String {
        let suffix = if cluster { "-cluster" } else { "" };
        format!("{prefix}-{}{suffix}", self.word())
    }

    /// The name of this access's bindings of `from`'s account (one per namespace it reaches).
    fn binding(self, from: &str) -> String {
        format!("{}-{from}", self.service_account())
    }
}

/// Says that `podTemplate.serviceAccountName` is not used: shown in a condition message.
pub fn ignored_account_note(access: Access) -> String {
    format!(
        "podTemplate.serviceAccountName is not used for Kubernetes-state assets: they run as {}",
        access.service_account()
    )
}

/// What a Kubernetes-state asset asks to reach, from the spec alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reach {
    /// The namespaces its objects come from (backup) or land in after the mapping (restore).
    pub namespaces: BTreeSet<String>,
    /// Why it needs cluster scope, when it does.
    pub cluster: Option<&'static str>,
}

/// What a backup of `asset` reads.
pub fn backup_reach(asset: &KubernetesStateAsset) -> Reach {
    Reach {
        namespaces: asset.namespaces.iter().cloned().collect(),
        cluster: cluster_need(asset),
    }
}

/// Where a restore of `asset` writes: each backed-up namespace renamed by the mapping, or under
/// its own name when the mapping leaves it out.
pub fn restore_reach(
    asset: &KubernetesStateAsset,
    target: Option<&KubernetesStateTarget>,
) -> Reach {
    let mapped = |ns: &String| {
        target
            .and_then(|t| t.namespace_mapping.get(ns))
            .unwrap_or(ns)
            .clone()
    };
    Reach {
        namespaces: asset.namespaces.iter().map(mapped).collect(),
        cluster: cluster_need(asset),
    }
}

fn cluster_need(asset: &KubernetesStateAsset) -> Option<&'static str> {
    if asset.include_cluster_resources {
        Some("includeClusterResources")
    } else if asset.namespaces.is_empty() {
        Some("every namespace (no namespaces listed)")
    } else {
        None
    }
}

/// Why a Kubernetes-state Job may not run. Reported as the resource's condition before any Job.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    /// A namespace reached is not the resource's own and has not allowed it.
    #[error(
        "namespace {namespace} does not allow Kubernetes-state {access}s from {from}: the platform team labels it {label}=true"
    )]
    NamespaceNotAllowed {
        namespace: String,
        from: String,
        access: &'static str,
        label: String,
    },
    /// A namespace reached does not exist: only a cluster-scoped restore creates namespaces.
    #[error(
        "namespace {0} does not exist; only a restore with the cluster opt-in creates namespaces"
    )]
    NamespaceMissing(String),
    /// Cluster scope asked for, without the label on the resource's namespace.
    #[error("{why} needs cluster scope: the platform team labels namespace {from} {label}=true")]
    ClusterScopeNotAllowed {
        why: &'static str,
        from: String,
        label: &'static str,
    },
    /// The namespace has the label, but the chart did not give the operator cluster bindings.
    #[error(
        "namespace {0} allows cluster scope, but this installation does not: install the chart with kubernetesState.clusterScope=true"
    )]
    ClusterScopeNotInstalled(String),
}

impl ScopeError {
    pub fn reason(&self) -> &'static str {
        match self {
            ScopeError::NamespaceNotAllowed { .. } | ScopeError::NamespaceMissing(_) => {
                "NamespaceNotAllowed"
            }
            ScopeError::ClusterScopeNotAllowed { .. } | ScopeError::ClusterScopeNotInstalled(_) => {
                "ClusterScopeNotAllowed"
            }
        }
    }
}

/// The labels of a namespace, or `None` when it does not exist.
pub type Labels = Option<BTreeMap<String, String>>;

fn is_true(labels: &Labels, key: &str) -> bool {
    labels
        .as_ref()
        .and_then(|l| l.get(key))
        .is_some_and(|v| v == "true")
}

/// The scope of a Job of `from` that asks for `reach`, given the labels of `from` and of every
/// namespace reached (`labels`, by name): cluster scope with the cluster label, else `from` and
/// the reached namespaces, each of which must exist and allow `from`.
pub fn decide(
    access: Access,
    from: &str,
    reach: &Reach,
    labels: &BTreeMap<String, Labels>,
) -> Result<KubernetesStateScope, ScopeError> {
    if is_true(&labels.get(from).cloned().flatten(), access.cluster_label()) {
        return Ok(KubernetesStateScope::Cluster);
    }
    if let Some(why) = reach.cluster {
        return Err(ScopeError::ClusterScopeNotAllowed {
            why,
            from: from.to_owned(),
            label: access.cluster_label(),
        });
    }
    let mut allowed = BTreeSet::from([from.to_owned()]);
    for ns in reach.namespaces.iter().filter(|n| *n != from) {
        let l = labels.get(ns).cloned().flatten();
        if l.is_none() {
            return Err(ScopeError::NamespaceMissing(ns.clone()));
        }
        if !is_true(&l, &access.grant_label(from)) {
            return Err(ScopeError::NamespaceNotAllowed {
                namespace: ns.clone(),
                from: from.to_owned(),
                access: access.word(),
                label: access.grant_label(from),
            });
        }
        allowed.insert(ns.clone());
    }
    Ok(KubernetesStateScope::Namespaces(allowed))
}

async fn labels_of(client: &Client, namespace: &str) -> Result<Labels> {
    Ok(Api::<Namespace>::all(client.clone())
        .get_metadata_opt(namespace)
        .await
        .map_err(Error::get::<Namespace>(namespace))?
        .map(|m| m.metadata.labels.unwrap_or_default()))
}

/// Reads the labels [`decide`] needs (metadata only) and decides.
pub async fn scope(
    client: &Client,
    access: Access,
    from: &str,
    reach: &Reach,
) -> Result<KubernetesStateScope> {
    let mut labels = BTreeMap::new();
    for ns in reach
        .namespaces
        .iter()
        .chain(std::iter::once(&from.to_owned()))
    {
        labels.insert(ns.clone(), labels_of(client, ns).await?);
    }
    Ok(decide(access, from, reach, &labels).map_err(Problem::Scope)?)
}

/// Applies `from`'s account for `access` and binds it to the chart's ClusterRole (`prefix`) in
/// each namespace of `scope`, or cluster-wide for [`KubernetesStateScope::Cluster`]; then
/// withdraws what the labels no longer allow (see [`revoke_withdrawn`]).
pub async fn grant(
    client: &Client,
    prefix: &str,
    access: Access,
    from: &str,
    scope: &KubernetesStateScope,
) -> Result<()> {
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    let sa_name = access.service_account();
    let accounts = Api::<ServiceAccount>::namespaced(client.clone(), from);
    let sa = accounts
        .patch(
            sa_name,
            &pp,
            &Patch::Apply(json!({
                "apiVersion": "v1", "kind": "ServiceAccount",
                "metadata": {"name": sa_name, "namespace": from, "labels": managed()},
            })),
        )
        .await
        .map_err(Error::apply::<ServiceAccount>(sa_name))?;
    let subjects = json!([{"kind": "ServiceAccount", "name": sa_name, "namespace": from}]);
    let before = sa.metadata.annotations.unwrap_or_default();
    match scope {
        KubernetesStateScope::Cluster => {
            let binding = json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                "metadata": {"name": access.binding(from), "labels": labels_for(from)},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                            "name": access.role(prefix, true)},
                "subjects": subjects,
            });
            match Api::<ClusterRoleBinding>::all(client.clone())
                .patch(&access.binding(from), &pp, &Patch::Apply(binding))
                .await
            {
                Err(kube::Error::Api(e)) if e.code == 403 => {
                    return Err(Problem::Scope(ScopeError::ClusterScopeNotInstalled(
                        from.to_owned(),
                    ))
                    .into());
                }
                r => r
                    .map(|_| ())
                    .map_err(Error::apply::<ClusterRoleBinding>(&access.binding(from)))?,
            }
        }
        KubernetesStateScope::Namespaces(namespaces) => {
            empty_cluster_binding(client, access, from).await?;
            let mut bound = BTreeMap::new();
            for ns in namespaces {
                let binding = json!({
                    "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                    "metadata": {"name": access.binding(from), "namespace": ns,
                                 "labels": labels_for(from)},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                "name": access.role(prefix, false)},
                    "subjects": subjects,
                });
                Api::<RoleBinding>::namespaced(client.clone(), ns)
                    .patch(&access.binding(from), &pp, &Patch::Apply(binding))
                    .await
                    .map_err(Error::apply::<RoleBinding>(&access.binding(from)))?;
                let key = format!("{BOUND}/{ns}");
                if ns != from && !before.contains_key(&key) {
                    bound.insert(key, "true");
                }
            }
            // A merge patch per new key: concurrent reconciles of one namespace never drop
            // each other's records (an apply by one field manager would).
            if !bound.is_empty() {
                accounts
                    .patch(
                        sa_name,
                        &PatchParams::default(),
                        &Patch::Merge(json!({"metadata": {"annotations": bound}})),
                    )
                    .await
                    .map_err(Error::apply::<ServiceAccount>(sa_name))?;
            }
        }
    }
    revoke(client, access, from, Some(scope), &before).await
}

/// Withdraws what `from`'s account was given and the labels no longer allow: the bindings in
/// namespaces that removed their label lose their subjects, and so does the cluster binding once
/// `from` lost its cluster label. Called for refused Jobs as well as granted ones, so a removed
/// label takes effect at the next reconcile of a Kubernetes-state resource of `from`.
pub async fn revoke_withdrawn(client: &Client, access: Access, from: &str) -> Result<()> {
    // The account's records, by a patch that changes nothing: the operator may patch accounts,
    // not read them.
    let accounts = Api::<ServiceAccount>::namespaced(client.clone(), from);
    let sa = match accounts
        .patch(
            access.service_account(),
            &PatchParams::default(),
            &Patch::Merge(json!({})),
        )
        .await
    {
        Ok(sa) => sa,
        Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
        Err(e) => return Err(Error::apply::<ServiceAccount>(access.service_account())(e)),
    };
    if !is_true(&labels_of(client, from).await?, access.cluster_label()) {
        empty_cluster_binding(client, access, from).await?;
    }
    let records = sa.metadata.annotations.unwrap_or_default();
    revoke(client, access, from, None, &records).await
}

/// Empties the bindings recorded in `records` whose namespace neither `keep` nor its labels
/// allow any more, and drops their records.
async fn revoke(
    client: &Client,
    access: Access,
    from: &str,
    keep: Option<&KubernetesStateScope>,
    records: &BTreeMap<String, String>,
) -> Result<()> {
    let mut withdrawn: BTreeMap<&str, Option<&str>> = BTreeMap::new();
    for key in records.keys() {
        let Some(ns) = key.strip_prefix(&format!("{BOUND}/")) else {
            continue;
        };
        if keep.is_some_and(|s| s.allows_namespace(ns))
            || is_true(&labels_of(client, ns).await?, &access.grant_label(from))
        {
            continue;
        }
        let emptied = Api::<RoleBinding>::namespaced(client.clone(), ns)
            .patch(
                &access.binding(from),
                &PatchParams::default(),
                &Patch::Merge(json!({"subjects": null})),
            )
            .await;
        match emptied {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(Error::delete::<RoleBinding>(&access.binding(from))(e)),
        }
        withdrawn.insert(key, None);
    }
    if !withdrawn.is_empty() {
        Api::<ServiceAccount>::namespaced(client.clone(), from)
            .patch(
                access.service_account(),
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": withdrawn}})),
            )
            .await
            .map_err(Error::apply::<ServiceAccount>(access.service_account()))?;
    }
    Ok(())
}

/// A cluster binding the namespace no longer allows loses its subjects. Without the chart's
/// cluster opt-in the operator may not touch cluster bindings, and none was made.
async fn empty_cluster_binding(client: &Client, access: Access, from: &str) -> Result<()> {
    let emptied = Api::<ClusterRoleBinding>::all(client.clone())
        .patch(
            &access.binding(from),
            &PatchParams::default(),
            &Patch::Merge(json!({"subjects": null})),
        )
        .await;
    match emptied {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 403 => Ok(()),
        Err(e) => Err(Error::delete::<ClusterRoleBinding>(&access.binding(from))(
            e,
        )),
    }
}

fn managed() -> serde_json::Value {
    json!({(names::LABEL_MANAGED_BY): names::MANAGED_BY})
}

fn labels_for(from: &str) -> serde_json::Value {
    json!({(names::LABEL_MANAGED_BY): names::MANAGED_BY, LABEL_FOR: from})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &[(&str, &str)])]) -> BTreeMap<String, Labels> {
        pairs
            .iter()
            .map(|(ns, l)| {
                let l = l.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
                ((*ns).to_owned(), Some(l))
            })
            .collect()
    }

    fn state(json: serde_json::Value) -> KubernetesStateAsset {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn by_default_only_the_own_namespace() {
        let reach = restore_reach(&state(json!({"namespaces": ["shop"]})), None);
        let scope = decide(Access::Restore, "shop", &reach, &labels(&[("shop", &[])])).unwrap();
        assert_eq!(scope, KubernetesStateScope::own("shop"));
    }

    #[test]
    fn a_mapping_into_a_namespace_that_allows_it_and_one_that_does_not() {
        let target: KubernetesStateTarget =
            serde_json::from_value(json!({"namespaceMapping": {"shop": "shop-drill"}})).unwrap();
        let reach = restore_reach(&state(json!({"namespaces": ["shop"]})), Some(&target));
        let refused = decide(
            Access::Restore,
            "shop",
            &reach,
            &labels(&[("shop", &[]), ("shop-drill", &[])]),
        )
        .unwrap_err();
        assert_eq!(refused.reason(), "NamespaceNotAllowed");
        assert!(
            refused
                .to_string()
                .contains("restores-from.lifeboat.dev/shop=true"),
            "{refused}"
        );
        // A label for another namespace, or for backups, allows nothing.
        let other = labels(&[
            ("shop", &[]),
            (
                "shop-drill",
                &[
                    ("restores-from.lifeboat.dev/billing", "true"),
                    ("backups-by.lifeboat.dev/shop", "true"),
                ],
            ),
        ]);
        assert!(decide(Access::Restore, "shop", &reach, &other).is_err());
        let allowed = labels(&[
            ("shop", &[]),
            ("shop-drill", &[("restores-from.lifeboat.dev/shop", "true")]),
        ]);
        assert_eq!(
            decide(Access::Restore, "shop", &reach, &allowed).unwrap(),
            KubernetesStateScope::Namespaces(BTreeSet::from([
                "shop".to_owned(),
                "shop-drill".to_owned()
            ]))
        );
    }

    #[test]
    fn a_namespace_left_out_of_the_mapping_keeps_its_name_and_is_checked() {
        let target: KubernetesStateTarget =
            serde_json::from_value(json!({"namespaceMapping": {"shop": "shop"}})).unwrap();
        let reach = restore_reach(
            &state(json!({"namespaces": ["shop", "billing"]})),
            Some(&target),
        );
        assert!(reach.namespaces.contains("billing"));
        let e = decide(
            Access::Restore,
            "shop",
            &reach,
            &labels(&[("shop", &[]), ("billing", &[])]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("namespace billing"), "{e}");
        let mut missing = labels(&[("shop", &[])]);
        missing.insert("billing".into(), None);
        assert_eq!(
            decide(Access::Restore, "shop", &reach, &missing).unwrap_err(),
            ScopeError::NamespaceMissing("billing".into())
        );
    }

    #[test]
    fn cluster_scope_only_with_the_label_on_the_own_namespace() {
        for asset in [
            json!({"namespaces": ["shop"], "includeClusterResources": true}),
            json!({}),
        ] {
            let reach = backup_reach(&state(asset));
            let e = decide(Access::Backup, "shop", &reach, &labels(&[("shop", &[])])).unwrap_err();
            assert_eq!(e.reason(), "ClusterScopeNotAllowed");
            // The restore label does not open backups, nor the other way round.
            let restore_only = labels(&[("shop", &[(ALLOW_CLUSTER_RESTORE, "true")])]);
            assert!(decide(Access::Backup, "shop", &reach, &restore_only).is_err());
            let with = labels(&[("shop", &[(ALLOW_CLUSTER_BACKUP, "true")])]);
            assert_eq!(
                decide(Access::Backup, "shop", &reach, &with).unwrap(),
                KubernetesStateScope::Cluster
            );
        }
    }

    #[test]
    fn each_access_has_its_account_role_and_binding() {
        assert_eq!(
            Access::Restore.role("lifeboat-kubestate", true),
            "lifeboat-kubestate-restore-cluster"
        );
        assert_eq!(
            Access::Backup.role("lifeboat-kubestate", false),
            "lifeboat-kubestate-backup"
        );
        assert_eq!(
            Access::Backup.binding("shop"),
            "lifeboat-kubestate-backup-shop"
        );
    }
}
