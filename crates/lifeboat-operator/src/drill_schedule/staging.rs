//! The isolated, self-cleaning staging namespace a drill may ask for: the objects (pure
//! builders), whose namespace it is, and when it goes. A Namespace is cluster-scoped, so it cannot
//! be owned by a DrillSchedule for garbage collection: it is labelled and annotated with the drill
//! instead, and the controller deletes it `ttl` after each drill, and only a namespace it made.

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
use kube::ResourceExt;
use lifeboat_api::DrillSchedule;
use lifeboat_api::drill_schedule::StagingNamespace;

use crate::names;

/// Label of a staging namespace: which DrillSchedule made it (`<namespace>.<name>`, shortened).
pub const LABEL_STAGING_FOR: &str = "lifeboat.dev/staging-for";
/// The same in full (`<namespace>/<name>`): what ownership is decided on.
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

/// Whether `existing` is the staging namespace of `ds` (made by it), by its annotation.
pub fn made_by(existing: &Namespace, ds: &DrillSchedule) -> bool {
    existing.annotations().get(ANNOTATION_STAGING_FOR) == Some(&owner(ds))
}

/// What to do with the staging namespace now that no drill runs: delete it, or look again in
/// `Some(seconds)` when its time comes.
pub fn cleanup(last_finished: Option<Timestamp>, sn: &StagingNamespace, now: Timestamp) -> Cleanup {
    let Some(finished) = last_finished else {
        return Cleanup::Delete;
    };
    let due = finished.as_second() + i64::try_from(sn.ttl.as_secs()).unwrap_or(i64::MAX);
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
    fn only_the_namespace_this_drill_made_is_its_own() {
        let ds = drill(json!({"name": "shop-drill"}));
        let ns = namespace(&ds, &staging(&ds));
        assert!(made_by(&ns, &ds));
        assert_eq!(
            ns.labels()["pod-security.kubernetes.io/enforce"],
            "restricted"
        );
        let mut other = drill(json!({"name": "shop-drill"}));
        other.metadata.namespace = Some("elsewhere".into());
        assert!(
            !made_by(&ns, &other),
            "same name, another namespace's drill"
        );
        let theirs = Namespace {
            metadata: ObjectMeta {
                name: Some("shop-drill".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        assert!(!made_by(&theirs, &ds));
    }

    #[test]
    fn the_namespace_goes_ttl_after_the_drill() {
        let ds = drill(json!({"name": "shop-drill", "ttl": "1h"}));
        let sn = staging(&ds);
        let finished: Timestamp = "2026-11-24T10:00:00Z".parse().unwrap();
        let at = |s: &str| s.parse::<Timestamp>().unwrap();
        assert_eq!(
            cleanup(Some(finished), &sn, at("2026-11-24T10:20:00Z")),
            Cleanup::Wait(40 * 60)
        );
        assert_eq!(
            cleanup(Some(finished), &sn, at("2026-11-24T11:00:00Z")),
            Cleanup::Delete
        );
    }
}
