//! The isolated, self-cleaning staging namespace a drill may ask for: the objects (pure
//! builders), whose namespace it is, and when it goes. A Namespace is cluster-scoped, so it cannot
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
use kube::Api;
use kube::ResourceExt;
use kube::api::{DeleteParams, Preconditions};
use lifeboat_api::DrillSchedule;
use lifeboat_api::drill_schedule::{StagingNamespace, StagingNamespaceStatus};

use crate::names;

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
