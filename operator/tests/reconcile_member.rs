//! The member controller's reconciles against a scripted API server: every request is asserted in
//! order (method, path, query where it matters, the body that carries the behaviour), and answered
//! with a canned response. Events are part of the behaviour, so they are part of the sequence.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)]
mod support;

use std::time::Duration;

use http::Method;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::controller::Action;
use serde_json::json;
use swarm_identity::MemberKey;
use swarm_operator::api::{MemberPhase, Swarm, SwarmMember, SwarmMemberStatus};
use swarm_operator::build::{PodSettings, build_member_pod};
use swarm_operator::controller::cache::Caches;
use swarm_operator::controller::member;

use support::fixtures::*;
use support::{Captured, mock_client, run, stored};

#[tokio::test]
async fn first_member_reconcile_reads_its_identity_then_creates_claim_pod_and_status() {
    let created_pod = Captured::default();
    let keep = created_pod.clone();
    let applied_claim = Captured::default();
    let keep_claim = applied_claim.clone();
    let mut swarm = swarm_object(1);
    swarm.spec.member.resources.gpus = Some(1);
    swarm.spec.checkpoints =
        Some(serde_json::from_value(json!({"storageClassName": "fast", "size": "20Gi"})).unwrap());
    let key = MemberKey::from_hex(KEY).unwrap();
    let member = member_object(&swarm, 0, None);
    let (client, server) = mock_client();
    let ctx = context(client);
    let (swarm_answer, member_expected, secret) = (
        swarm.clone(),
        member.clone(),
        identity_secret("demo-0", &key),
    );
    let action = run(
        server,
        |mut server| async move {
            server.get(SWARM).await.ok_with(&swarm_answer);
            // The Swarm controller created the Secret; the member controller only reads it.
            server
                .get(&format!("{SECRETS}/demo-0-identity"))
                .await
                .ok_with(&secret);
            let claim = server
                .apply("/api/v1/namespaces/research/persistentvolumeclaims/demo-0-checkpoints")
                .await;
            assert_eq!(
                claim.body["spec"]["resources"]["requests"]["storage"],
                "20Gi"
            );
            assert_eq!(claim.body["spec"]["storageClassName"], "fast");
            keep_claim.set(stored(claim.body.clone()));
            claim.applied();

            server.get(&format!("{PODS}/demo-0")).await.not_found();
            let pod = expect_pod_apply(&mut server, &member_expected).await;
            let volumes = pod.spec.as_ref().unwrap().volumes.clone().unwrap();
            let state = volumes.iter().find(|v| v.name == "state").unwrap();
            assert_eq!(
                state.persistent_volume_claim.as_ref().unwrap().claim_name,
                "demo-0-checkpoints"
            );
            let container = &pod.spec.as_ref().unwrap().containers[0];
            assert_eq!(container.image.as_deref(), Some(DEFAULT_IMAGE));
            let limits = container
                .resources
                .as_ref()
                .unwrap()
                .limits
                .clone()
                .unwrap();
            assert_eq!(limits["nvidia.com/gpu"].0, "1");

            server.event(NS, "Normal", "PodCreated").await;
            // No status yet: the new pod's watch event brings the member back to write it.
            keep.set(stored(serde_json::to_value(&pod).unwrap()));
            server
        },
        member::reconcile(ctx.clone(), member.clone()),
    )
    .await;
    assert_eq!(action.unwrap(), Action::requeue(Duration::from_secs(5)));

    // 2. The pod's event: the status shows the identity, the pod and its state.
    let created = created_pod.get();
    let (client, server) = mock_client();
    let ctx = context(client);
    let (swarm_answer, member_expected, secret) = (
        swarm.clone(),
        member.clone(),
        identity_secret("demo-0", &key),
    );
    let action = run(
        server,
        |mut server| async move {
            server.get(SWARM).await.ok_with(&swarm_answer);
            server
                .get(&format!("{SECRETS}/demo-0-identity"))
                .await
                .ok_with(&secret);
            server
                .apply("/api/v1/namespaces/research/persistentvolumeclaims/demo-0-checkpoints")
                .await
                .applied();
            server.get(&format!("{PODS}/demo-0")).await.ok(&created);
            let status = expect_member_status(&mut server, &member_expected).await;
            assert_eq!(status["peerId"], key.peer_id_string());
            assert_eq!(status["address"], key.address());
            assert_eq!(status["pod"], "demo-0");
            assert_eq!(status["phase"], "Pending");
            assert_eq!(status["message"], "waiting for the scheduler");
            assert_eq!(status["restarts"], 0);
            assert_eq!(status["observedGeneration"], 1);
            assert_eq!(condition(&status, "Ready").0, "False");
            server
        },
        member::reconcile(ctx.clone(), member.clone()),
    )
    .await;
    assert_eq!(action.unwrap(), Action::requeue(Duration::from_secs(300)));

    // 3. With the watch caches holding the claim as applied, the claim is not applied again:
    //    the status is the only request.
    let (client, server) = mock_client();
    let ctx = context(client);
    ctx.use_caches(Caches {
        claims: listed(vec![serde_json::from_value(applied_claim.get()).unwrap()]),
        ..caches(
            vec![swarm.clone()],
            vec![member.clone()],
            vec![serde_json::from_value(created_pod.get()).unwrap()],
            vec![identity_secret(
                "demo-0",
                &MemberKey::from_hex(KEY).unwrap(),
            )],
        )
    });
    let member_expected = member.clone();
    let action = run(
        server,
        |mut server| async move {
            expect_member_status(&mut server, &member_expected).await;
            server
        },
        member::reconcile(ctx.clone(), member),
    )
    .await;
    assert_eq!(action.unwrap(), Action::requeue(Duration::from_secs(300)));
}

#[tokio::test]
async fn failed_pod_is_replaced_after_the_backoff_with_the_same_identity() {
    let swarm = swarm_object(2);
    let key = MemberKey::from_hex(KEY).unwrap();
    let member = member_object(
        &swarm,
        1,
        Some(SwarmMemberStatus {
            phase: Some(MemberPhase::Running),
            peer_id: Some(key.peer_id_string()),
            address: Some(key.address()),
            pod: Some("demo-1".into()),
            node: Some("gpu-0".into()),
            observed_generation: Some(1),
            ..Default::default()
        }),
    );

    // 1. The pod failed: it is deleted, the failure counted, and the replacement waits.
    let (client, server) = mock_client();
    let ctx = context(client);
    let (swarm_answer, member_expected, secret) = (
        swarm.clone(),
        member.clone(),
        identity_secret("demo-1", &key),
    );
    let expected_peer = key.peer_id_string();
    let written = Captured::default();
    let keep = written.clone();
    let action = run(
        server,
        |mut server| async move {
            server.get(SWARM).await.ok_with(&swarm_answer);
            server
                .get(&format!("{SECRETS}/demo-1-identity"))
                .await
                .ok_with(&secret);
            let mut failed = pod_object("demo-1", &member_uid(1), "Failed", false);
            failed["status"]["reason"] = json!("Evicted");
            failed["status"]["message"] = json!("The node was low on resource: memory.");
            server.get(&format!("{PODS}/demo-1")).await.ok(&failed);
            server
                .expect(Method::DELETE, &format!("{PODS}/demo-1"))
                .await
                .ok(&failed);
            let event = server.event(NS, "Warning", "PodFailed").await;
            assert_eq!(
                event["note"],
                "pod failed: Evicted: The node was low on resource: memory.; replacing it in 10s"
            );
            let status = expect_member_status(&mut server, &member_expected).await;
            assert_eq!(status["restarts"], 1);
            assert_eq!(status["failureStreak"], 1);
            assert_eq!(status["phase"], "Failed");
            assert_eq!(status["peerId"], expected_peer);
            assert!(
                status.get("pod").is_none(),
                "the failed pod is gone: {status:#}"
            );
            assert!(status["lastFailureTime"].is_string());
            assert_eq!(condition(&status, "Ready").1, "PodFailed");
            keep.set(status);
            server
        },
        member::reconcile(ctx.clone(), member.clone()),
    )
    .await;
    assert_eq!(action.unwrap(), Action::requeue(Duration::from_secs(10)));
    let mut after_failure = member;
    after_failure.status = Some(serde_json::from_value(written.get()).unwrap());

    // 2. Within the backoff the pod is not recreated.
    let (client, server) = mock_client();
    let ctx = context(client);
    let (swarm_answer, member_expected, secret) = (
        swarm.clone(),
        after_failure.clone(),
        identity_secret("demo-1", &key),
    );
    let action = run(
        server,
        |mut server| async move {
            server.get(SWARM).await.ok_with(&swarm_answer);
            server
                .get(&format!("{SECRETS}/demo-1-identity"))
                .await
                .ok_with(&secret);
            server.get(&format!("{PODS}/demo-1")).await.not_found();
            let status = expect_member_status(&mut server, &member_expected).await;
            assert_eq!(status["phase"], "Failed");
            assert_eq!(
                status["restarts"], 1,
                "no second failure is counted for the same pod"
            );
            let message = status["message"].as_str().unwrap();
            assert!(message.contains("replacing it in"), "{message}");
            server
        },
        member::reconcile(ctx.clone(), after_failure.clone()),
    )
    .await;
    let wait = requeue_after(&action.unwrap()).unwrap();
    assert!(
        wait > Duration::ZERO && wait <= Duration::from_secs(10),
        "{wait:?}"
    );

    // 3. With the backoff elapsed the pod comes back, mounting the same Secret; no new identity.
    let mut due = after_failure;
    let status = due.status.as_mut().unwrap();
    status.last_failure_time = Some(Time(Timestamp::now() - SignedDuration::from_secs(60)));
    let (client, server) = mock_client();
    let ctx = context(client);
    let (swarm_answer, member_expected, secret) =
        (swarm, due.clone(), identity_secret("demo-1", &key));
    let action = run(
        server,
        |mut server| async move {
            server.get(SWARM).await.ok_with(&swarm_answer);
            server
                .get(&format!("{SECRETS}/demo-1-identity"))
                .await
                .ok_with(&secret);
            server.get(&format!("{PODS}/demo-1")).await.not_found();
            expect_pod_apply(&mut server, &member_expected).await;
            server.event(NS, "Normal", "PodCreated").await;
            // The failure is on record already; the new pod's watch event writes the status.
            server
        },
        member::reconcile(ctx.clone(), due),
    )
    .await;
    assert_eq!(action.unwrap(), Action::requeue(Duration::from_secs(5)));
}

#[tokio::test]
async fn pod_of_a_previous_incarnation_is_waited_for_not_adopted() {
    let swarm = swarm_object(1);
    let key = MemberKey::from_hex(KEY).unwrap();
    let member = member_object(&swarm, 0, None);
    let (client, server) = mock_client();
    let ctx = context(client);
    let (swarm_answer, member_expected, secret) = (
        swarm.clone(),
        member.clone(),
        identity_secret("demo-0", &key),
    );
    let action = run(
        server,
        |mut server| async move {
            server.get(SWARM).await.ok_with(&swarm_answer);
            server
                .get(&format!("{SECRETS}/demo-0-identity"))
                .await
                .ok_with(&secret);
            // Still running and ready, but owned by the member that was deleted.
            let old = pod_object(
                "demo-0",
                "11111111-0000-4000-8000-000000000000",
                "Running",
                true,
            );
            server.get(&format!("{PODS}/demo-0")).await.ok(&old);
            let status = expect_member_status(&mut server, &member_expected).await;
            assert_eq!(
                status["message"],
                "waiting for the previous pod to be removed"
            );
            assert!(status.get("pod").is_none(), "{status:#}");
            assert_eq!(
                status["phase"], "Pending",
                "another member's pod says nothing about this one"
            );
            assert_eq!(condition(&status, "Ready").0, "False");
            server
        },
        member::reconcile(ctx.clone(), member),
    )
    .await;
    assert_eq!(action.unwrap(), Action::requeue(Duration::from_secs(5)));
}

#[tokio::test]
async fn own_pod_deleted_by_hand_counts_as_a_restart_once_gone() {
    let swarm = swarm_object(1);
    let key = MemberKey::from_hex(KEY).unwrap();
    let running = member_status(MemberPhase::Running, Some(key.peer_id_string()), None);
    let member = member_object(
        &swarm,
        0,
        Some(SwarmMemberStatus {
            pod: Some("demo-0".into()),
            ..running
        }),
    );
    let secret = identity_secret("demo-0", &key);
    let (client, server) = mock_client();
    let ctx = context(client);
    let (swarm_answer, member_expected, secret_answer) =
        (swarm.clone(), member.clone(), secret.clone());
    let written = Captured::default();
    let seen = written.clone();
    run(
        server,
        |mut server| async move {
            server.get(SWARM).await.ok_with(&swarm_answer);
            server
                .get(&format!("{SECRETS}/demo-0-identity"))
                .await
                .ok_with(&secret_answer);
            // Someone deleted our pod; it is still terminating.
            let mut terminating = pod_object("demo-0", &member_uid(0), "Running", true);
            terminating["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
            server.get(&format!("{PODS}/demo-0")).await.ok(&terminating);
            let status = expect_member_status(&mut server, &member_expected).await;
            assert_eq!(status["pod"], "demo-0", "the pod is still ours: {status:#}");
            assert_eq!(status["restarts"], 0);
            seen.set(status);
            server
        },
        member::reconcile(ctx.clone(), member.clone()),
    )
    .await
    .unwrap();

    // Once it is gone, its disappearance is a failure: counted, and the replacement backs off.
    let member = member_object(
        &swarm,
        0,
        Some(serde_json::from_value(written.get()).unwrap()),
    );
    let member_expected = member.clone();
    let (client, server) = mock_client();
    let ctx = context(client);
    let action = run(
        server,
        |mut server| async move {
            server.get(SWARM).await.ok_with(&swarm);
            server
                .get(&format!("{SECRETS}/demo-0-identity"))
                .await
                .ok_with(&secret);
            server.get(&format!("{PODS}/demo-0")).await.not_found();
            let status = expect_member_status(&mut server, &member_expected).await;
            assert_eq!(status["restarts"], 1);
            assert_eq!(status["failureStreak"], 1);
            assert_eq!(status["phase"], "Failed");
            server
        },
        member::reconcile(ctx.clone(), member),
    )
    .await;
    assert_eq!(action.unwrap(), Action::requeue(Duration::from_secs(10)));
}

/// The member's pod from the current template, on node `gpu-3`, with this status, as stored.
fn current_pod(
    swarm: &Swarm,
    member: &SwarmMember,
    status: serde_json::Value,
) -> serde_json::Value {
    let mut pod = serde_json::to_value(build_member_pod(
        swarm,
        member,
        &PodSettings {
            default_image: DEFAULT_IMAGE.into(),
        },
    ))
    .unwrap();
    pod["spec"]["nodeName"] = json!("gpu-3");
    pod["status"] = status;
    stored(pod)
}

#[tokio::test]
async fn running_member_settles_and_then_writes_nothing() {
    let swarm = swarm_object(1);
    let key = MemberKey::from_hex(KEY).unwrap();
    let member = member_object(&swarm, 0, None);
    let running = current_pod(
        &swarm,
        &member,
        json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}),
    );

    let (client, server) = mock_client();
    let ctx = context(client);
    let (swarm_answer, member_expected, secret, pod) = (
        swarm.clone(),
        member.clone(),
        identity_secret("demo-0", &key),
        running.clone(),
    );
    let written = Captured::default();
    let keep = written.clone();
    let action = run(
        server,
        |mut server| async move {
            server.get(SWARM).await.ok_with(&swarm_answer);
            server
                .get(&format!("{SECRETS}/demo-0-identity"))
                .await
                .ok_with(&secret);
            server.get(&format!("{PODS}/demo-0")).await.ok(&pod);
            let status = expect_member_status(&mut server, &member_expected).await;
            assert_eq!(status["phase"], "Running");
            assert_eq!(status["node"], "gpu-3");
            assert_eq!(status["pod"], "demo-0");
            assert_eq!(
                condition(&status, "Ready"),
                ("True", "NodeReady", "node is ready")
            );
            keep.set(status);
            server
        },
        member::reconcile(ctx.clone(), member.clone()),
    )
    .await;
    assert_eq!(action.unwrap(), Action::requeue(Duration::from_secs(300)));

    // The status just written round-trips through the API server; the next reconcile finds
    // nothing to change and writes nothing, so it cannot feed its own watch.
    let mut settled = member;
    settled.status = Some(serde_json::from_value(written.get()).unwrap());
    let (client, server) = mock_client();
    let ctx = context(client);
    let (secret, pod) = (identity_secret("demo-0", &key), running);
    let action = run(
        server,
        |mut server| async move {
            server.get(SWARM).await.ok_with(&swarm);
            server
                .get(&format!("{SECRETS}/demo-0-identity"))
                .await
                .ok_with(&secret);
            server.get(&format!("{PODS}/demo-0")).await.ok(&pod);
            server
        },
        member::reconcile(ctx.clone(), settled),
    )
    .await;
    assert_eq!(action.unwrap(), Action::requeue(Duration::from_secs(300)));
}

/// While the pod's model download runs, its progress is read from the last lines of the
/// `fetch-model` container's log into the member's message, and read again 10 s later; a log
/// that cannot be read only leaves the percentage out.
#[tokio::test]
async fn a_running_model_download_shows_its_percentage() {
    let swarm = swarm_object(1);
    let key = MemberKey::from_hex(KEY).unwrap();
    let member = member_object(&swarm, 0, None);
    let pod = current_pod(
        &swarm,
        &member,
        json!({
            "phase": "Pending",
            "initContainerStatuses": [{
                "name": "fetch-model", "image": DEFAULT_IMAGE, "imageID": "", "ready": false,
                "restartCount": 0, "state": {"running": {"startedAt": "2026-12-07T07:00:00Z"}},
            }],
        }),
    );
    let log = "2026-12-07T07:00:00Z INFO downloading the model\n\
               downloading 10/100 config.json\n\
               downloading 125829120/283115520 model.safetensors\n";
    for readable in [true, false] {
        let (client, server) = mock_client();
        let ctx = context(client);
        let (swarm_answer, member_expected, secret, pod) = (
            swarm.clone(),
            member.clone(),
            identity_secret("demo-0", &key),
            pod.clone(),
        );
        let action = run(
            server,
            |mut server| async move {
                server.get(SWARM).await.ok_with(&swarm_answer);
                server
                    .get(&format!("{SECRETS}/demo-0-identity"))
                    .await
                    .ok_with(&secret);
                server.get(&format!("{PODS}/demo-0")).await.ok(&pod);
                let read = server.get(&format!("{PODS}/demo-0/log")).await;
                assert_eq!(read.query("container"), Some("fetch-model"));
                assert_eq!(read.query("tailLines"), Some("20"));
                if readable {
                    read.ok_text(log);
                } else {
                    read.failure(
                        http::StatusCode::BAD_GATEWAY,
                        "InternalError",
                        "the kubelet cannot be reached",
                    );
                }
                let status = expect_member_status(&mut server, &member_expected).await;
                assert_eq!(status["phase"], "Starting");
                let message = status["message"].as_str().unwrap();
                if readable {
                    assert_eq!(
                        message,
                        "downloading the model: model.safetensors 44 % (120.0 of 270.0 MiB)"
                    );
                } else {
                    assert!(
                        message.contains("kubectl logs demo-0 -c fetch-model"),
                        "{message}"
                    );
                }
                server
            },
            member::reconcile(ctx.clone(), member.clone()),
        )
        .await;
        assert_eq!(action.unwrap(), Action::requeue(Duration::from_secs(10)));
    }
}

#[tokio::test]
async fn pod_from_an_older_template_is_replaced() {
    let swarm = swarm_object(1);
    let key = MemberKey::from_hex(KEY).unwrap();
    let member = member_object(&swarm, 0, None);
    let mut outdated = pod_object("demo-0", &member_uid(0), "Running", true);
    outdated["metadata"]["annotations"] = json!({"rlswarm.dev/template-hash": "0000000000000000"});
    let (client, server) = mock_client();
    let ctx = context(client);
    let (swarm_answer, member_expected, secret) = (
        swarm.clone(),
        member.clone(),
        identity_secret("demo-0", &key),
    );
    let action = run(
        server,
        |mut server| async move {
            server.get(SWARM).await.ok_with(&swarm_answer);
            server
                .get(&format!("{SECRETS}/demo-0-identity"))
                .await
                .ok_with(&secret);
            server.get(&format!("{PODS}/demo-0")).await.ok(&outdated);
            server
                .expect(Method::DELETE, &format!("{PODS}/demo-0"))
                .await
                .ok(&outdated);
            server.event(NS, "Normal", "PodOutdated").await;
            let status = expect_member_status(&mut server, &member_expected).await;
            assert!(status.get("pod").is_none(), "{status:#}");
            assert_eq!(status["restarts"], 0, "a template change is no failure");
            server
        },
        member::reconcile(ctx.clone(), member),
    )
    .await;
    assert_eq!(action.unwrap(), Action::requeue(Duration::from_secs(5)));
}

#[tokio::test]
async fn member_without_its_identity_secret_waits_for_it_and_starts_nothing() {
    let swarm = swarm_object(1);
    // A Secret deleted by hand: the member drops the PeerId it showed, so that the Swarm
    // controller, seeing none, creates a new identity.
    let member = member_object(
        &swarm,
        0,
        Some(member_status(MemberPhase::Running, Some(peer_id(0)), None)),
    );
    let member_expected = member.clone();
    let (client, server) = mock_client();
    let ctx = context(client);
    let action = run(
        server,
        |mut server| async move {
            server.get(SWARM).await.ok_with(&swarm);
            server
                .get(&format!("{SECRETS}/demo-0-identity"))
                .await
                .not_found();
            let status = expect_member_status(&mut server, &member_expected).await;
            assert_eq!(status["phase"], "Pending");
            assert!(status.get("peerId").is_none(), "{status}");
            let message = status["message"].as_str().unwrap();
            assert!(message.contains("demo-0-identity"), "{message}");
            server
        },
        member::reconcile(ctx.clone(), member),
    )
    .await;
    assert_eq!(action.unwrap(), Action::requeue(Duration::from_secs(5)));
}

#[tokio::test]
async fn secret_of_someone_else_is_never_used_as_an_identity() {
    let swarm = swarm_object(1);
    let member = member_object(&swarm, 0, None);
    let mut foreign = identity_secret("demo-9", &MemberKey::from_hex(KEY).unwrap());
    foreign.metadata.name = Some("demo-0-identity".into());
    let member_expected = member.clone();
    let (client, server) = mock_client();
    let ctx = context(client);
    let result = run(
        server,
        |mut server| async move {
            server.get(SWARM).await.ok_with(&swarm);
            server
                .get(&format!("{SECRETS}/demo-0-identity"))
                .await
                .ok_with(&foreign);
            // No pod runs with a key that is not this member's; the status says why.
            let status = expect_member_status(&mut server, &member_expected).await;
            assert_eq!(status["phase"], "Failed");
            let message = status["message"].as_str().unwrap();
            assert!(message.contains("demo-0-identity"), "{message}");
            assert!(
                message.contains("not labelled as this member's"),
                "{message}"
            );
            server
        },
        member::reconcile(ctx.clone(), member),
    )
    .await;
    let error = result.unwrap_err();
    assert_eq!(error.reason(), "ForeignSecret", "{error}");
}

/// With the watch caches filled, a member reads nothing from the API server: its Swarm, its
/// identity Secret and its pod (absent, then as created) come from the caches.
#[tokio::test]
async fn with_watch_caches_a_new_member_only_writes() {
    let swarm = swarm_object(1);
    let key = MemberKey::from_hex(KEY).unwrap();
    let member = member_object(&swarm, 0, None);
    let secrets = vec![identity_secret("demo-0", &key)];

    // 1. No pod yet: it is created, nothing else.
    let (client, server) = mock_client();
    let ctx = context(client);
    ctx.use_caches(caches(
        vec![swarm.clone()],
        vec![member.clone()],
        vec![],
        secrets.clone(),
    ));
    let (expected, created) = (member.clone(), Captured::default());
    let keep = created.clone();
    let action = run(
        server,
        |mut server| async move {
            let pod = expect_pod_apply(&mut server, &expected).await;
            server.event(NS, "Normal", "PodCreated").await;
            keep.set(stored(serde_json::to_value(&pod).unwrap()));
            server
        },
        member::reconcile(ctx.clone(), member.clone()),
    )
    .await;
    assert_eq!(action.unwrap(), Action::requeue(Duration::from_secs(5)));

    // 2. The pod in the cache: the status is the only request.
    let (client, server) = mock_client();
    let ctx = context(client);
    ctx.use_caches(caches(
        vec![swarm.clone()],
        vec![member.clone()],
        vec![serde_json::from_value(created.get()).unwrap()],
        secrets,
    ));
    let expected = member.clone();
    let action = run(
        server,
        |mut server| async move {
            let status = expect_member_status(&mut server, &expected).await;
            assert_eq!(status["peerId"], key.peer_id_string());
            assert_eq!(status["pod"], "demo-0");
            assert_eq!(status["phase"], "Pending");
            server
        },
        member::reconcile(ctx.clone(), member),
    )
    .await;
    assert_eq!(action.unwrap(), Action::requeue(Duration::from_secs(300)));
}
