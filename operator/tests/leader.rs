//! Leader election's Lease handling against a scripted API server: every request is asserted in
//! order (method, path, query where it matters, the body that carries the behaviour), and answered
//! with a canned response.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)]
mod support;

use std::time::Duration;

use http::{Method, StatusCode};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::{Api, Client};
use swarm_operator::leader::LeaseLock;

use support::{mock_client, run, stored};

const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/ops/leases";

fn lease_lock(client: Client) -> LeaseLock {
    LeaseLock::new(
        Api::namespaced(client, "ops"),
        "rl-swarm-operator",
        "pod-a",
        Duration::from_secs(15),
    )
}

fn lease(holder: &str, renewed_ago: i64, transitions: i32) -> Lease {
    let renewed = Timestamp::now() - SignedDuration::from_secs(renewed_ago);
    let mut lease = Lease {
        spec: Some(LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            acquire_time: Some(MicroTime(Timestamp::from_second(1_700_000_000).unwrap())),
            renew_time: Some(MicroTime(renewed)),
            lease_transitions: Some(transitions),
            ..Default::default()
        }),
        ..Default::default()
    };
    lease.metadata.name = Some("rl-swarm-operator".into());
    lease.metadata.namespace = Some("ops".into());
    lease.metadata.resource_version = Some("42".into());
    lease
}

#[tokio::test]
async fn absent_lease_is_created() {
    let (client, server) = mock_client();
    let lock = lease_lock(client);
    let held = run(
        server,
        |mut server| async move {
            server
                .get(&format!("{LEASES}/rl-swarm-operator"))
                .await
                .not_found();
            let create = server.expect(Method::POST, LEASES).await;
            assert_eq!(create.query("fieldManager"), Some("rl-swarm-operator"));
            let spec = &create.body["spec"];
            assert_eq!(spec["holderIdentity"], "pod-a");
            assert_eq!(spec["leaseDurationSeconds"], 15);
            assert_eq!(spec["leaseTransitions"], 0);
            create.created();
            server
        },
        lock.try_acquire_or_renew(),
    )
    .await;
    assert!(held.unwrap());
}

#[tokio::test]
async fn lease_held_by_another_replica_is_left_alone() {
    let (client, server) = mock_client();
    let lock = lease_lock(client);
    let held = run(
        server,
        |mut server| async move {
            server
                .get(&format!("{LEASES}/rl-swarm-operator"))
                .await
                .ok_with(&lease("pod-b", 2, 3));
            server
        },
        lock.try_acquire_or_renew(),
    )
    .await;
    assert!(!held.unwrap());
}

#[tokio::test]
async fn expired_lease_is_taken_over_with_one_more_transition() {
    let (client, server) = mock_client();
    let lock = lease_lock(client);
    let theirs = lease("pod-b", 60, 3);
    let their_acquire_time = serde_json::to_value(&theirs).unwrap()["spec"]["acquireTime"].clone();
    let held = run(
        server,
        |mut server| async move {
            server
                .get(&format!("{LEASES}/rl-swarm-operator"))
                .await
                .ok_with(&theirs);
            let replace = server
                .expect(Method::PUT, &format!("{LEASES}/rl-swarm-operator"))
                .await;
            let body = &replace.body;
            assert_eq!(
                body["metadata"]["resourceVersion"], "42",
                "the takeover is conditional"
            );
            assert_eq!(body["spec"]["holderIdentity"], "pod-a");
            assert_eq!(body["spec"]["leaseTransitions"], 4);
            assert_ne!(
                body["spec"]["acquireTime"], their_acquire_time,
                "a new holder has a new acquire time"
            );
            let answer = stored(body.clone());
            replace.ok(&answer);
            server
        },
        lock.try_acquire_or_renew(),
    )
    .await;
    assert!(held.unwrap());
}

#[tokio::test]
async fn own_lease_is_renewed_keeping_acquire_time_and_transitions() {
    let (client, server) = mock_client();
    let lock = lease_lock(client);
    let mine = lease("pod-a", 5, 2);
    let acquired = serde_json::to_value(&mine).unwrap()["spec"]["acquireTime"].clone();
    let held = run(
        server,
        |mut server| async move {
            server
                .get(&format!("{LEASES}/rl-swarm-operator"))
                .await
                .ok_with(&mine);
            let replace = server
                .expect(Method::PUT, &format!("{LEASES}/rl-swarm-operator"))
                .await;
            let spec = &replace.body["spec"];
            assert_eq!(spec["holderIdentity"], "pod-a");
            assert_eq!(spec["leaseTransitions"], 2);
            assert_eq!(spec["acquireTime"], acquired);
            let answer = stored(replace.body.clone());
            replace.ok(&answer);
            server
        },
        lock.try_acquire_or_renew(),
    )
    .await;
    assert!(held.unwrap());
}

#[tokio::test]
async fn lost_takeover_race_is_an_answer_not_an_error() {
    let (client, server) = mock_client();
    let lock = lease_lock(client);
    let held = run(
        server,
        |mut server| async move {
            server
                .get(&format!("{LEASES}/rl-swarm-operator"))
                .await
                .ok_with(&lease("pod-b", 60, 3));
            server
                .expect(Method::PUT, &format!("{LEASES}/rl-swarm-operator"))
                .await
                .conflict();
            server
        },
        lock.try_acquire_or_renew(),
    )
    .await;
    assert!(!held.unwrap());
}

#[tokio::test]
async fn server_errors_are_errors() {
    let (client, server) = mock_client();
    let lock = lease_lock(client);
    let held = run(
        server,
        |mut server| async move {
            server
                .get(&format!("{LEASES}/rl-swarm-operator"))
                .await
                .failure(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalError",
                    "etcd timeout",
                );
            server
        },
        lock.try_acquire_or_renew(),
    )
    .await;
    assert!(held.is_err());
}
