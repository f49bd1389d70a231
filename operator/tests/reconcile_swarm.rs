//! The Swarm controller's reconciles against a scripted API server: every request is asserted in
//! order (method, path, query where it matters, the body that carries the behaviour), and answered
//! with a canned response. Events are part of the behaviour, so they are part of the sequence.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)]
mod support;

use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};
use kube::runtime::controller::Action;
use serde_json::json;
use swarm_identity::MemberKey;
use swarm_operator::api::{MemberPhase, Swarm, SwarmMember, SwarmMemberStatus};
use swarm_operator::controller::cache::Caches;
use swarm_operator::controller::{guarded, swarm};
use swarm_operator::status::Readiness;

use support::fixtures::*;
use support::{Captured, mock_client, run, stored};

#[tokio::test]
async fn swarm_create_applies_every_member_and_identity_then_a_complete_config_and_status() {
    let swarm = swarm_object(3);
    let (client, server) = mock_client();
    let ctx = context(client);
    let expected = swarm.clone();
    let action = run(
        server,
        |mut server| async move {
            server.get(PVC).await.ok(&model_claim());
            let list = server.get(MEMBERS).await;
            assert_eq!(list.query("labelSelector"), Some("rlswarm.dev/swarm=demo"));
            list.ok(&member_list(&[]));
            let mut peers = Vec::new();
            for ordinal in 0..3 {
                let key = expect_new_member(&mut server, ordinal).await;
                peers.push(multiaddr(&format!("demo-{ordinal}"), &key.peer_id_string()));
            }
            expect_service_apply(&mut server).await;
            let config = expect_config_apply(&mut server).await;
            assert_eq!(
                config.p2p.bootstrap_peers, peers,
                "the first pass that sees every identity lists every peer"
            );
            assert_eq!(config.model.path.as_deref(), Some("/models/qwen2.5-0.5b"));

            let status = expect_swarm_status(&mut server, &expected).await;
            assert_eq!(status["replicas"], 3);
            assert_eq!(status["readyReplicas"], 0);
            assert_eq!(status["selector"], "rlswarm.dev/swarm=demo");
            assert_eq!(status["phase"], "Pending");
            assert_eq!(status["observedGeneration"], 1);
            assert_eq!(
                condition(&status, "Available"),
                ("False", "MembersNotReady", "0 of 3 members ready")
            );
            assert_eq!(
                condition(&status, "Progressing"),
                ("True", "MembersStarting", "0 of 3 members ready")
            );
            assert_eq!(condition(&status, "Degraded").0, "False");

            let event = server.event(NS, "Normal", "MembersCreated").await;
            assert_eq!(event["note"], "created demo-0, demo-1, demo-2");
            assert_eq!(event["regarding"]["kind"], "Swarm");
            assert_eq!(event["regarding"]["name"], "demo");
            assert_eq!(event["regarding"]["uid"], SWARM_UID);
            server
        },
        swarm::reconcile(ctx.clone(), swarm),
    )
    .await;
    assert_eq!(action.unwrap(), Action::requeue(Duration::from_secs(300)));
}

#[tokio::test]
async fn scale_up_applies_and_gives_identities_to_the_new_members_only() {
    let swarm = swarm_object(4);
    let existing: Vec<SwarmMember> = (0..2)
        .map(|o| {
            member_object(
                &swarm,
                o,
                Some(member_status(MemberPhase::Running, Some(peer_id(o)), None)),
            )
        })
        .collect();
    let (client, server) = mock_client();
    let ctx = context(client);
    let expected = swarm.clone();
    let action = run(
        server,
        |mut server| async move {
            server.get(PVC).await.ok(&model_claim());
            let list = server.get(MEMBERS).await;
            assert_eq!(list.query("labelSelector"), Some("rlswarm.dev/swarm=demo"));
            list.ok(&member_list(&existing));
            // The known members' PeerIds come from their status; only the new ones' Secrets.
            let third = expect_new_member(&mut server, 2).await;
            let fourth = expect_new_member(&mut server, 3).await;
            expect_service_apply(&mut server).await;
            let peers = vec![
                multiaddr("demo-0", &peer_id(0)),
                multiaddr("demo-1", &peer_id(1)),
                multiaddr("demo-2", &third.peer_id_string()),
                multiaddr("demo-3", &fourth.peer_id_string()),
            ];
            let config = expect_config_apply(&mut server).await;
            assert_eq!(config.p2p.bootstrap_peers, peers);

            let status = expect_swarm_status(&mut server, &expected).await;
            assert_eq!(status["replicas"], 4);
            assert_eq!(status["readyReplicas"], 2);
            assert_eq!(status["phase"], "Progressing");
            assert_eq!(status["bootstrapPeers"], json!(peers));
            assert_eq!(
                condition(&status, "Progressing"),
                ("True", "MembersStarting", "2 of 4 members ready")
            );
            let event = server.event(NS, "Normal", "MembersCreated").await;
            assert_eq!(event["note"], "created demo-2, demo-3");
            server
        },
        swarm::reconcile(ctx.clone(), swarm),
    )
    .await;
    assert_eq!(action.unwrap(), Action::requeue(Duration::from_secs(300)));
}

#[tokio::test]
async fn scale_down_deletes_the_highest_ordinals_first_and_nothing_else() {
    let swarm = swarm_object(2);
    // Listed out of order: the reconciler, not the API server, decides which members go.
    let existing: Vec<SwarmMember> = [2, 0, 3, 1]
        .into_iter()
        .map(|o| {
            member_object(
                &swarm,
                o,
                Some(member_status(MemberPhase::Running, Some(peer_id(o)), None)),
            )
        })
        .collect();
    let (client, server) = mock_client();
    let ctx = context(client);
    let expected = swarm.clone();
    let action = run(
        server,
        |mut server| async move {
            server.get(PVC).await.ok(&model_claim());
            server.get(MEMBERS).await.ok(&member_list(&existing));
            for ordinal in [3, 2] {
                let delete = server
                    .expect(Method::DELETE, &format!("{MEMBERS}/demo-{ordinal}"))
                    .await;
                assert_eq!(delete.body["propagationPolicy"], "Background");
                let mut gone = serde_json::to_value(
                    existing.iter().find(|m| m.spec.ordinal == ordinal).unwrap(),
                )
                .unwrap();
                gone["metadata"]["deletionTimestamp"] = json!("2025-01-01T00:00:00Z");
                delete.ok(&gone);
            }
            expect_service_apply(&mut server).await;
            let peers = vec![
                multiaddr("demo-0", &peer_id(0)),
                multiaddr("demo-1", &peer_id(1)),
            ];
            let config = expect_config_apply(&mut server).await;
            assert_eq!(
                config.p2p.bootstrap_peers, peers,
                "removed members are no bootstrap peers"
            );

            let status = expect_swarm_status(&mut server, &expected).await;
            assert_eq!(status["replicas"], 2);
            assert_eq!(status["readyReplicas"], 2);
            assert_eq!(status["phase"], "Running");
            assert_eq!(status["bootstrapPeers"], json!(peers));
            let event = server.event(NS, "Normal", "MembersRemoved").await;
            assert_eq!(event["note"], "removed demo-3, demo-2");
            server
        },
        swarm::reconcile(ctx.clone(), swarm),
    )
    .await;
    assert_eq!(action.unwrap(), Action::requeue(Duration::from_secs(300)));
}

#[tokio::test]
async fn member_deleted_by_hand_is_replaced_under_its_own_name_and_identity() {
    let swarm = swarm_object(3);
    let kept = MemberKey::from_hex(KEY).unwrap();
    let returning = identity_secret("demo-1", &kept);
    let existing: Vec<SwarmMember> = [0, 2]
        .into_iter()
        .map(|o| {
            member_object(
                &swarm,
                o,
                Some(member_status(MemberPhase::Running, Some(peer_id(o)), None)),
            )
        })
        .collect();
    let (client, server) = mock_client();
    let ctx = context(client);
    let expected = swarm.clone();
    let action = run(
        server,
        |mut server| async move {
            server.get(PVC).await.ok(&model_claim());
            server.get(MEMBERS).await.ok(&member_list(&existing));
            // Its identity outlived it (the Swarm owns the Secret): read, never replaced.
            server
                .get(&format!("{SECRETS}/demo-1-identity"))
                .await
                .ok_with(&returning);
            expect_member_apply(&mut server, 1).await;
            expect_service_apply(&mut server).await;
            let config = expect_config_apply(&mut server).await;
            assert_eq!(
                config.p2p.bootstrap_peers,
                [
                    multiaddr("demo-0", &peer_id(0)),
                    multiaddr("demo-1", &kept.peer_id_string()),
                    multiaddr("demo-2", &peer_id(2))
                ]
            );
            let status = expect_swarm_status(&mut server, &expected).await;
            assert_eq!(status["replicas"], 3);
            assert_eq!(status["readyReplicas"], 2);
            let event = server.event(NS, "Normal", "MembersCreated").await;
            assert_eq!(event["note"], "created demo-1");
            server
        },
        swarm::reconcile(ctx.clone(), swarm),
    )
    .await;
    assert_eq!(action.unwrap(), Action::requeue(Duration::from_secs(300)));
}

#[tokio::test]
async fn missing_model_claim_starts_no_member_and_degrades_the_swarm_once() {
    let swarm = swarm_object(2);
    let (client, server) = mock_client();
    let ctx = context(client);
    let expected = swarm.clone();
    let written = Captured::default();
    let keep = written.clone();
    let action = run(
        server,
        |mut server| async move {
            server.get(PVC).await.not_found();
            server.get(MEMBERS).await.ok(&member_list(&[]));
            expect_service_apply(&mut server).await;
            expect_config_apply(&mut server).await;
            let status = expect_swarm_status(&mut server, &expected).await;
            assert_eq!(status["phase"], "Degraded");
            assert_eq!(status["replicas"], 0);
            let (degraded, reason, message) = condition(&status, "Degraded");
            assert_eq!((degraded, reason), ("True", "ModelSourceNotFound"));
            assert!(message.contains("research/models"), "{message}");
            let event = server.event(NS, "Warning", "ModelSourceNotFound").await;
            assert!(event["note"].as_str().unwrap().contains("research/models"));
            keep.set(status);
            server
        },
        swarm::reconcile(ctx.clone(), swarm.clone()),
    )
    .await;
    assert_eq!(action.unwrap(), Action::requeue(Duration::from_secs(30)));

    // The next look finds the claim still missing: the status already says so, so neither the
    // status nor the Warning is written again.
    let mut seen = swarm;
    seen.status = Some(serde_json::from_value(written.get()).unwrap());
    let (client, server) = mock_client();
    let ctx = context(client);
    let action = run(
        server,
        |mut server| async move {
            server.get(PVC).await.not_found();
            server.get(MEMBERS).await.ok(&member_list(&[]));
            expect_service_apply(&mut server).await;
            expect_config_apply(&mut server).await;
            server
        },
        swarm::reconcile(ctx.clone(), seen),
    )
    .await;
    assert_eq!(action.unwrap(), Action::requeue(Duration::from_secs(30)));
}

#[tokio::test]
async fn status_counts_only_running_members_and_names_the_unschedulable_one() {
    let swarm = swarm_object(3);
    let unschedulable = "unschedulable: 0/4 nodes are available: 4 Insufficient nvidia.com/gpu.";
    let existing = vec![
        member_object(
            &swarm,
            0,
            Some(member_status(MemberPhase::Running, Some(peer_id(0)), None)),
        ),
        member_object(
            &swarm,
            1,
            Some(member_status(
                MemberPhase::Starting,
                Some(peer_id(1)),
                Some("ContainerCreating"),
            )),
        ),
        member_object(
            &swarm,
            2,
            Some(SwarmMemberStatus {
                // The member controller's typed reason; the message alone degrades nothing.
                conditions: vec![condition_of(Readiness::Unschedulable)],
                ..member_status(MemberPhase::Pending, Some(peer_id(2)), Some(unschedulable))
            }),
        ),
    ];
    let (client, server) = mock_client();
    let ctx = context(client);
    let expected = swarm.clone();
    let action = run(
        server,
        |mut server| async move {
            server.get(PVC).await.ok(&model_claim());
            server.get(MEMBERS).await.ok(&member_list(&existing));
            expect_service_apply(&mut server).await;
            let config = expect_config_apply(&mut server).await;
            assert_eq!(
                config.p2p.bootstrap_peers.len(),
                3,
                "every known identity bootstraps"
            );
            let status = expect_swarm_status(&mut server, &expected).await;
            assert_eq!(status["replicas"], 3);
            assert_eq!(status["readyReplicas"], 1);
            assert_eq!(status["phase"], "Degraded");
            assert_eq!(
                condition(&status, "Available"),
                ("False", "MembersNotReady", "1 of 3 members ready")
            );
            let (degraded, reason, message) = condition(&status, "Degraded");
            assert_eq!((degraded, reason), ("True", "MembersNotRunning"));
            assert_eq!(message, format!("demo-2: {unschedulable}"));
            server
        },
        swarm::reconcile(ctx.clone(), swarm),
    )
    .await;
    assert_eq!(action.unwrap(), Action::requeue(Duration::from_secs(300)));
}

#[tokio::test]
async fn identity_race_lost_to_another_writer_uses_the_winners_key() {
    let swarm = swarm_object(1);
    let winner = MemberKey::from_hex(KEY).unwrap();
    let secret = identity_secret("demo-0", &winner);
    let expected_peer = multiaddr("demo-0", &winner.peer_id_string());
    let (client, server) = mock_client();
    let ctx = context(client);
    let expected = swarm.clone();
    let action = run(
        server,
        |mut server| async move {
            server.get(PVC).await.ok(&model_claim());
            server.get(MEMBERS).await.ok(&member_list(&[]));
            server
                .get(&format!("{SECRETS}/demo-0-identity"))
                .await
                .not_found();
            server.expect(Method::POST, SECRETS).await.failure(
                StatusCode::CONFLICT,
                "AlreadyExists",
                "secrets \"demo-0-identity\" already exists",
            );
            server
                .get(&format!("{SECRETS}/demo-0-identity"))
                .await
                .ok_with(&secret);
            expect_member_apply(&mut server, 0).await;
            // No IdentityCreated: this operator did not create the identity.
            expect_service_apply(&mut server).await;
            let config = expect_config_apply(&mut server).await;
            assert_eq!(config.p2p.bootstrap_peers, [expected_peer]);
            expect_swarm_status(&mut server, &expected).await;
            server.event(NS, "Normal", "MembersCreated").await;
            server
        },
        swarm::reconcile(ctx.clone(), swarm),
    )
    .await;
    assert_eq!(action.unwrap(), Action::requeue(Duration::from_secs(300)));
}

#[tokio::test]
async fn malformed_swarm_is_reported_and_skipped() {
    // What a watch delivers for a Swarm stored under an older, incompatible schema.
    let malformed: kube::core::DeserializeGuard<Swarm> = serde_json::from_value(json!({
        "apiVersion": "rlswarm.dev/v1alpha1",
        "kind": "Swarm",
        "metadata": {"name": "demo", "namespace": NS, "uid": SWARM_UID},
        "spec": {"replicas": "many"}
    }))
    .unwrap();
    assert!(malformed.0.is_err());
    let (client, server) = mock_client();
    let ctx = context(client);
    let action = run(
        server,
        |mut server| async move {
            let event = server.event(NS, "Warning", "MalformedObject").await;
            assert_eq!(event["regarding"]["name"], "demo");
            let note = event["note"].as_str().unwrap();
            assert!(note.starts_with("cannot read this object"), "{note}");
            server
        },
        guarded(Arc::new(malformed), ctx.clone(), "swarm", swarm::reconcile),
    )
    .await;
    assert_eq!(action.unwrap(), Action::await_change());
}

/// With the watch caches filled, a reconcile lists nothing and reads no Secret: the members and
/// their PeerIds come from the caches; and once the Service and ConfigMap in the cache are as
/// desired and the status is unchanged, a pass writes nothing at all.
#[tokio::test]
async fn with_watch_caches_a_settled_swarm_costs_one_request() {
    let swarm = swarm_object(2);
    let members: Vec<SwarmMember> = (0..2)
        .map(|o| {
            member_object(
                &swarm,
                o,
                Some(member_status(MemberPhase::Running, Some(peer_id(o)), None)),
            )
        })
        .collect();

    // 1. Service and ConfigMap not in the cache yet: applied; the status written.
    let (client, server) = mock_client();
    let ctx = context(client);
    ctx.use_caches(caches(vec![swarm.clone()], members.clone(), vec![], vec![]));
    let (expected, written) = (swarm.clone(), Captured::default());
    let keep = written.clone();
    run(
        server,
        |mut server| async move {
            server.get(PVC).await.ok(&model_claim());
            let service = server.apply(SERVICE).await;
            let service_stored = stored(service.body.clone());
            service.applied();
            let config_map = server.apply(CONFIG_MAP).await;
            let config_map_stored = stored(config_map.body.clone());
            config_map.applied();
            let applied = json!([service_stored, config_map_stored]);
            let status = expect_swarm_status(&mut server, &expected).await;
            assert_eq!(status["readyReplicas"], 2);
            keep.set(json!({"children": applied, "status": status}));
            server
        },
        swarm::reconcile(ctx.clone(), swarm.clone()),
    )
    .await
    .unwrap();

    // 2. The cache holds what was applied, the Swarm its status: only the model claim is read.
    let written = written.get();
    let mut settled = swarm.clone();
    settled.status = Some(serde_json::from_value(written["status"].clone()).unwrap());
    let (client, server) = mock_client();
    let ctx = context(client);
    ctx.use_caches(Caches {
        services: listed(vec![
            serde_json::from_value(written["children"][0].clone()).unwrap(),
        ]),
        config_maps: listed(vec![
            serde_json::from_value(written["children"][1].clone()).unwrap(),
        ]),
        ..caches(vec![settled.clone()], members, vec![], vec![])
    });
    run(
        server,
        |mut server| async move {
            server.get(PVC).await.ok(&model_claim());
            server
        },
        swarm::reconcile(ctx.clone(), settled),
    )
    .await
    .unwrap();
}
