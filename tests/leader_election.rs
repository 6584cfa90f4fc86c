//! Two operators never both act: Lease-based election on the real API server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use lifeboat_operator::leader::{LeaderElector, LeaseConfig};

fn fast() -> LeaseConfig {
    LeaseConfig {
        duration: Duration::from_secs(2),
        renew_every: Duration::from_millis(500),
        retry_every: Duration::from_millis(200),
    }
}

#[tokio::test]
async fn one_leader_at_a_time_and_a_takeover_after_expiry() {
    let env = lifeboat_testenv::shared().unwrap();
    let client = env.client().await.unwrap();
    let ns = env.namespace(&client, "lease").await.unwrap();
    let api: Api<Lease> = Api::namespaced(client, &ns);

    // Five candidates race for a Lease that does not exist yet: exactly one wins.
    let candidates: Vec<LeaderElector> = (0..5)
        .map(|i| LeaderElector::new(api.clone(), "race", &format!("replica-{i}"), fast()))
        .collect();
    let results =
        futures::future::join_all(candidates.iter().map(|c| c.try_acquire_or_renew())).await;
    let winners = results.iter().filter(|r| matches!(r, Ok(true))).count();
    assert_eq!(winners, 1, "{results:?}");

    let a = LeaderElector::new(api.clone(), "lifeboat-operator", "replica-a", fast());
    let b = LeaderElector::new(api.clone(), "lifeboat-operator", "replica-b", fast());
    assert!(a.try_acquire_or_renew().await.unwrap());
    assert!(
        !b.try_acquire_or_renew().await.unwrap(),
        "held and fresh: not taken"
    );
    assert!(a.try_acquire_or_renew().await.unwrap(), "the holder renews");

    // A stops renewing (its process died): B takes over once the Lease expired, and not before.
    let t0 = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(10), b.acquire())
        .await
        .unwrap();
    assert!(
        t0.elapsed() >= Duration::from_secs(1),
        "taken over only after expiry: {:?}",
        t0.elapsed()
    );
    let lease = api.get("lifeboat-operator").await.unwrap().spec.unwrap();
    assert_eq!(lease.holder_identity.as_deref(), Some("replica-b"));
    assert_eq!(lease.lease_transitions, Some(1));
    // A, back, finds the Lease held: its hold() ends at once, so it stops acting.
    assert!(!a.try_acquire_or_renew().await.unwrap());
    tokio::time::timeout(Duration::from_secs(5), a.hold())
        .await
        .unwrap();
}
