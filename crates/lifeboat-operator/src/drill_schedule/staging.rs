//! The isolated, self-cleaning staging namespace a drill may ask for: the objects (pure
//! builders), whose namespace it is, when it goes, and the calls that make, isolate and delete
//! it. A Namespace is cluster-scoped, so it cannot
//! be owned by a DrillSchedule for garbage collection. Labels and annotations name the drill for
//! people, but anyone who creates the namespace first can write them, so ownership is the uid the
//! create returned, recorded in the DrillSchedule's status: the controller deletes `ttl` after
//! each drill only the namespace with that uid, with the uid as the delete's precondition.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Namespace, ResourceQuota, ResourceQuotaSpec};
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Api, ResourceExt};
use lifeboat_api::DrillSchedule;
use lifeboat_api::drill_schedule::{DrillScheduleStatus, StagingNamespace, StagingNamespaceStatus};

use super::decide::StagingSeen;
use crate::config::FIELD_MANAGER;
use crate::context::Context;
use crate::controller::requeue;
use crate::error::{Error, Problem, Result};
use crate::names;

/// The finalizer of a DrillSchedule that made a staging namespace: the namespace (cluster-scoped,
/// so no owner reference can take it along) is deleted before the DrillSchedule goes.
pub const FINALIZER: &str = "lifeboat.dev/staging-namespace";

/// Label of a staging namespace: which DrillSchedule made it (`<namespace>.<name>`, shortened).
pub const LABEL_STAGING_FOR: &str = "lifeboat.dev/staging-for";
/// The same in full (`<namespace>/<name>`), for people: ownership is never decided on it.
pub const ANNOTATION_STAGING_FOR: &str = "lifeboat.dev/staging-for";
/// Name of the NetworkPolicy and the ResourceQuota inside it.
pub const STAGING_OBJECTS: &str = "lifeboat-staging";

fn owner(ds: &DrillSchedule) -> String {
    format!("{}/{}", ds.namespace().unwrap_or_default(), ds.name_any())
}

/// The namespace: Pod Security "restricted" enforced, labelled and annotated with its drill.
pub fn namespace(ds: &DrillSchedule, sn: &StagingNamespace) -> Namespace {
    let labels = BTreeMap::from([
        (
            names::LABEL_MANAGED_BY.to_owned(),
            names::MANAGED_BY.to_owned(),
        ),
        (
            LABEL_STAGING_FOR.to_owned(),
            names::label_value(&format!(
                "{}.{}",
                ds.namespace().unwrap_or_default(),
                ds.name_any()
            )),
        ),
        (
            "pod-security.kubernetes.io/enforce".to_owned(),
            "restricted".to_owned(),
        ),
    ]);
    Namespace {
        metadata: ObjectMeta {
            name: Some(sn.name.clone()),
            labels: Some(labels),
            annotations: Some(BTreeMap::from([(
                ANNOTATION_STAGING_FOR.to_owned(),
                owner(ds),
            )])),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Every pod's egress denied except DNS (to kube-system) and the declared allowances.
pub fn network_policy(sn: &StagingNamespace) -> NetworkPolicy {
    let port = |p: i32, protocol: &str| NetworkPolicyPort {
        port: Some(IntOrString::Int(p)),
        protocol: Some(protocol.to_owned()),
        ..Default::default()
    };
    let mut egress = vec![NetworkPolicyEgressRule {
        to: Some(vec![NetworkPolicyPeer {
            namespace_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(
                    "kubernetes.io/metadata.name".to_owned(),
                    "kube-system".to_owned(),
                )])),
                ..Default::default()
            }),
            ..Default::default()
        }]),
        ports: Some(vec![port(53, "UDP"), port(53, "TCP")]),
    }];
    egress.extend(sn.allow_egress.iter().map(|a| {
        NetworkPolicyEgressRule {
            to: Some(vec![NetworkPolicyPeer {
                ip_block: Some(IPBlock {
                    cidr: a.cidr.clone(),
                    except: None,
                }),
                ..Default::default()
            }]),
            ports: (!a.ports.is_empty())
                .then(|| a.ports.iter().map(|p| port(i32::from(*p), "TCP")).collect()),
        }
    }));
    NetworkPolicy {
        metadata: ObjectMeta {
            name: Some(STAGING_OBJECTS.to_owned()),
            namespace: Some(sn.name.clone()),
            ..Default::default()
        },
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector::default()),
            policy_types: Some(vec!["Egress".to_owned()]),
            egress: Some(egress),
            ..Default::default()
        }),
    }
}

/// The ResourceQuota of the declared hard limits.
pub fn resource_quota(sn: &StagingNamespace) -> ResourceQuota {
    ResourceQuota {
        metadata: ObjectMeta {
            name: Some(STAGING_OBJECTS.to_owned()),
            namespace: Some(sn.name.clone()),
            ..Default::default()
        },
        spec: Some(ResourceQuotaSpec {
            hard: Some(
                sn.quota
                    .iter()
                    .map(|(k, v)| (k.clone(), Quantity(v.clone())))
                    .collect(),
            ),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Whether `existing` is the namespace the operator created for the drill that recorded
/// `recorded`: same name and same uid. Labels and annotations do not count.
pub fn owned(existing: &Namespace, recorded: Option<&StagingNamespaceStatus>) -> bool {
    recorded.is_some_and(|r| {
        existing.metadata.name.as_ref() == Some(&r.name)
            && existing.metadata.uid.as_ref() == Some(&r.uid)
    })
}

/// What a delete of a recorded staging namespace did.
#[derive(Debug, PartialEq, Eq)]
pub enum Deleted {
    /// Deleted (or already being deleted).
    Deleted,
    /// No namespace of that name is left.
    Gone,
    /// The namespace of that name has another uid: someone else's, left alone.
    NotOurs,
}

/// Deletes the namespace `recorded` names only if it still has the recorded uid: the uid is the
/// delete's precondition, so a namespace deleted and recreated by someone else between a read
/// and this call is refused by the API server (409), not deleted.
pub async fn delete_owned(
    namespaces: &Api<Namespace>,
    recorded: &StagingNamespaceStatus,
) -> Result<Deleted, kube::Error> {
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(recorded.uid.clone()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match namespaces.delete(&recorded.name, &params).await {
        Ok(_) => Ok(Deleted::Deleted),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(Deleted::Gone),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(Deleted::NotOurs),
        Err(e) => Err(e),
    }
}

/// What to do with the staging namespace now that no drill runs: delete it `ttl` after the last
/// drill finished, or look again in `Wait(seconds)` when its time comes.
pub fn cleanup(
    last_finished: Option<Timestamp>,
    ttl: std::time::Duration,
    now: Timestamp,
) -> Cleanup {
    let Some(finished) = last_finished else {
        return Cleanup::Delete;
    };
    let due = finished
        .as_second()
        .saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX));
    if now.as_second() >= due {
        Cleanup::Delete
    } else {
        Cleanup::Wait(u64::try_from(due - now.as_second()).unwrap_or(1))
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Cleanup {
    Delete,
    Wait(u64),
}

/// Whether the staging namespace the spec asks for is there, and this drill's. One that exists
/// otherwise (made first by someone else, or deleted and made again), whatever its labels and
/// annotations say, is [`Problem::StagingNamespaceConflict`]: never adopted, nor, later, deleted.
pub async fn observe(ds: &DrillSchedule, ctx: &Context) -> Result<StagingSeen> {
    let Some(sn) = &ds.spec.staging.namespace else {
        return Ok(StagingSeen::NotAsked);
    };
    let namespaces = Api::<Namespace>::all(ctx.client.clone());
    let existing = match namespaces.get_opt(&sn.name).await {
        Ok(existing) => existing,
        Err(kube::Error::Api(e)) if e.code == 403 => {
            return Err(Problem::StagingNamespaceForbidden.into());
        }
        Err(e) => return Err(Error::get::<Namespace>(&sn.name)(e)),
    };
    let recorded = ds
        .status
        .as_ref()
        .and_then(|s| s.staging_namespace.as_ref());
    match existing {
        Some(existing) if !owned(&existing, recorded) => {
            // The cached object may predate the status write that recorded the uid: a conflict
            // is decided on a fresh read, and never written over a newer status.
            let name = ds.name_any();
            let fresh = Api::<DrillSchedule>::namespaced(
                ctx.client.clone(),
                &ds.namespace().unwrap_or_default(),
            )
            .get_opt(&name)
            .await
            .map_err(Error::get::<DrillSchedule>(&name))?
            .and_then(|d| d.status);
            if fresh.as_ref() != ds.status.as_ref() {
                return Err(Error::CacheNotReady("DrillSchedule"));
            }
            Err(Problem::StagingNamespaceConflict(sn.name.clone()).into())
        }
        Some(existing) if existing.metadata.deletion_timestamp.is_some() => {
            Ok(StagingSeen::Terminating)
        }
        Some(_) => Ok(StagingSeen::Ours),
        None => {
            // Reading Namespaces is allowed (their labels scope Kubernetes-state Jobs), so
            // whether the operator may make one is asked of the API server by a dry-run create,
            // before any drill is due.
            let dry = PostParams {
                dry_run: true,
                field_manager: Some(FIELD_MANAGER.into()),
            };
            match namespaces.create(&dry, &namespace(ds, sn)).await {
                Ok(_) => Ok(StagingSeen::Absent),
                Err(kube::Error::Api(e)) if e.code == 403 => {
                    Err(Problem::StagingNamespaceForbidden.into())
                }
                Err(e) => Err(Error::create::<Namespace>(&sn.name)(e)),
            }
        }
    }
}

/// Makes the staging namespace of a running drill: created unless recorded (a create, never an
/// apply, so an existing namespace is never taken over) and its uid recorded in status at once,
/// so the window in which the operator made a namespace it has not recorded is one API call
/// wide (a crash inside it leaves a namespace the drill refuses as not its own); then its
/// NetworkPolicy and ResourceQuota applied. The finalizer that deletes it with the
/// DrillSchedule is added first.
pub async fn ensure(
    ds: &DrillSchedule,
    ctx: &Context,
    sn: &StagingNamespace,
    status: &mut DrillScheduleStatus,
) -> Result<()> {
    if status.staging_namespace.is_none() {
        set_finalizer(ctx, ds, true).await?;
        let created = match Api::<Namespace>::all(ctx.client.clone())
            .create(&PostParams::default(), &namespace(ds, sn))
            .await
        {
            Ok(ns) => ns,
            Err(kube::Error::Api(e)) if e.code == 409 => {
                return Err(Problem::StagingNamespaceConflict(sn.name.clone()).into());
            }
            Err(kube::Error::Api(e)) if e.code == 403 => {
                return Err(Problem::StagingNamespaceForbidden.into());
            }
            Err(e) => return Err(Error::create::<Namespace>(&sn.name)(e)),
        };
        status.staging_namespace = Some(StagingNamespaceStatus {
            name: sn.name.clone(),
            uid: created.metadata.uid.ok_or(Error::MissingObjectKey("uid"))?,
        });
        ctx.apply_status(ds, status).await?;
    }
    let apply = PatchParams::apply(FIELD_MANAGER).force();
    let isolated = async {
        Api::<NetworkPolicy>::namespaced(ctx.client.clone(), &sn.name)
            .patch(STAGING_OBJECTS, &apply, &Patch::Apply(&network_policy(sn)))
            .await?;
        Api::<ResourceQuota>::namespaced(ctx.client.clone(), &sn.name)
            .patch(STAGING_OBJECTS, &apply, &Patch::Apply(&resource_quota(sn)))
            .await
    };
    match isolated.await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 403 => Err(Problem::StagingNamespaceForbidden.into()),
        Err(e) => Err(Error::apply::<NetworkPolicy>(STAGING_OBJECTS)(e)),
    }
}

/// Deletes the recorded staging namespace if it is still the one the operator created.
/// Returns when to look again while it terminates, or `None` once it is no longer this drill's
/// to delete (gone, or someone else's under the same name: forgotten, never deleted).
pub async fn remove(
    ctx: &Context,
    recorded: &StagingNamespaceStatus,
) -> Result<Option<std::time::Duration>> {
    let namespaces = Api::<Namespace>::all(ctx.client.clone());
    let current = namespaces
        .get_opt(&recorded.name)
        .await
        .map_err(Error::get::<Namespace>(&recorded.name))?;
    match current {
        Some(ns) if owned(&ns, Some(recorded)) => {
            if ns.metadata.deletion_timestamp.is_some() {
                return Ok(Some(requeue::TERMINATING));
            }
            match delete_owned(&namespaces, recorded)
                .await
                .map_err(Error::delete::<Namespace>(&recorded.name))?
            {
                Deleted::Deleted => Ok(Some(requeue::TERMINATING)),
                Deleted::Gone | Deleted::NotOurs => Ok(None),
            }
        }
        _ => Ok(None),
    }
}

/// Adds or removes [`FINALIZER`] on the DrillSchedule ([`crate::controller::set_finalizer`]).
pub async fn set_finalizer(ctx: &Context, ds: &DrillSchedule, present: bool) -> Result<()> {
    crate::controller::set_finalizer(ctx, ds, FINALIZER, present).await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;

    fn drill(ns: serde_json::Value) -> DrillSchedule {
        serde_json::from_value(json!({
            "apiVersion": "lifeboat.dev/v1alpha1", "kind": "DrillSchedule",
            "metadata": {"name": "quarterly", "namespace": "shop"},
            "spec": {"schedule": "0 6 1 * *", "policy": "orders", "assets": ["db"],
                     "staging": {"targets": [{"asset": "db", "postgres": {"host": "s", "user": "u"}}],
                                 "namespace": ns},
                     "objectives": {"rto": "30m", "rpo": "15m"}}
        }))
        .unwrap()
    }

    fn staging(ds: &DrillSchedule) -> StagingNamespace {
        ds.spec.staging.namespace.clone().unwrap()
    }

    #[test]
    fn egress_is_denied_but_dns_and_what_is_declared() {
        let ds = drill(json!({"name": "shop-drill",
            "allowEgress": [{"cidr": "10.0.12.7/32", "ports": [5432]}, {"cidr": "10.1.0.0/16"}]}));
        let sn = staging(&ds);
        let np = network_policy(&sn);
        let spec = np.spec.unwrap();
        assert_eq!(spec.policy_types.unwrap(), ["Egress"]);
        assert_eq!(
            spec.pod_selector,
            Some(LabelSelector::default()),
            "every pod"
        );
        let egress = spec.egress.unwrap();
        assert_eq!(egress.len(), 3);
        let dns_ports: Vec<_> = egress[0]
            .ports
            .as_ref()
            .unwrap()
            .iter()
            .map(|p| (p.port.clone(), p.protocol.clone()))
            .collect();
        assert_eq!(
            dns_ports,
            [
                (Some(IntOrString::Int(53)), Some("UDP".into())),
                (Some(IntOrString::Int(53)), Some("TCP".into()))
            ]
        );
        let db = &egress[1];
        assert_eq!(
            db.to.as_ref().unwrap()[0].ip_block.as_ref().unwrap().cidr,
            "10.0.12.7/32"
        );
        assert_eq!(
            db.ports.as_ref().unwrap()[0].port,
            Some(IntOrString::Int(5432))
        );
        assert!(egress[2].ports.is_none(), "no ports listed: all of them");
        // The quota defaults to a pod cap.
        let q = resource_quota(&sn).spec.unwrap().hard.unwrap();
        assert_eq!(q["pods"], Quantity("20".into()));
    }

    #[test]
    fn only_the_namespace_with_the_recorded_uid_is_its_own() {
        let ds = drill(json!({"name": "shop-drill"}));
        let mut ns = namespace(&ds, &staging(&ds));
        assert_eq!(
            ns.labels()["pod-security.kubernetes.io/enforce"],
            "restricted"
        );
        assert_eq!(ns.annotations()[ANNOTATION_STAGING_FOR], "shop/quarterly");
        ns.metadata.uid = Some("uid-1".into());
        let recorded = |name: &str, uid: &str| StagingNamespaceStatus {
            name: name.into(),
            uid: uid.into(),
        };
        assert!(owned(&ns, Some(&recorded("shop-drill", "uid-1"))));
        // The right labels and annotation are not enough: nothing recorded, or another uid.
        assert!(!owned(&ns, None), "created by someone else first");
        assert!(
            !owned(&ns, Some(&recorded("shop-drill", "uid-0"))),
            "deleted and recreated under the same name"
        );
        assert!(!owned(&ns, Some(&recorded("other", "uid-1"))));
    }

    #[test]
    fn the_namespace_goes_ttl_after_the_drill() {
        let ds = drill(json!({"name": "shop-drill", "ttl": "1h"}));
        let ttl = staging(&ds).ttl.as_std();
        let finished: Timestamp = "2026-11-24T10:00:00Z".parse().unwrap();
        let at = |s: &str| s.parse::<Timestamp>().unwrap();
        assert_eq!(
            cleanup(Some(finished), ttl, at("2026-11-24T10:20:00Z")),
            Cleanup::Wait(40 * 60)
        );
        assert_eq!(
            cleanup(Some(finished), ttl, at("2026-11-24T11:00:00Z")),
            Cleanup::Delete
        );
    }
}
