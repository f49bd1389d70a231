//! Reconcile flows against a scripted API server: every request the reconcilers send is asserted in
//! order (method, path, query where it matters, the body that carries the behaviour), and answered
//! with a canned response. Events are part of the behaviour, so they are part of the sequence.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::ByteString;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, MicroTime, Time};
use kube::api::DeleteParams;
use kube::runtime::controller::Action;
use kube::runtime::events::Reporter;
use kube::{Api, Client};
use serde_json::{Value, json};
use swarm_identity::{MemberKey, PRIVATE_KEY_FILE};
use swarm_node_config::{CONFIG_FILE, NodeConfig};
use swarm_operator::api::{MemberPhase, Swarm, SwarmMember, SwarmMemberStatus};
use swarm_operator::build::{PodSettings, build_member, build_member_pod};
use swarm_operator::controller::{Context, guarded, member, swarm};
use swarm_operator::leader::LeaseLock;
use swarm_operator::metrics::Metrics;
use swarm_operator::status::Readiness;

use support::{ApiServer, Captured, Exchange, mock_client, run, stored};

const NS: &str = "research";
const SWARM_UID: &str = "5f0c2c1e-0000-4000-8000-000000000001";
const DEFAULT_IMAGE: &str = "ghcr.io/example/swarm-node:test";

const PVC: &str = "/api/v1/namespaces/research/persistentvolumeclaims/models";
const MEMBERS: &str = "/apis/rlswarm.dev/v1alpha1/namespaces/research/swarmmembers";
const SWARM: &str = "/apis/rlswarm.dev/v1alpha1/namespaces/research/swarms/demo";
const SWARM_STATUS: &str = "/apis/rlswarm.dev/v1alpha1/namespaces/research/swarms/demo/status";
const SERVICE: &str = "/api/v1/namespaces/research/services/demo-peers";
const CONFIG_MAP: &str = "/api/v1/namespaces/research/configmaps/demo-config";
const SECRETS: &str = "/api/v1/namespaces/research/secrets";
const PODS: &str = "/api/v1/namespaces/research/pods";

/// A fixed member key, as an existing identity Secret would hold it.
const KEY: &str = "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318";

// ----- fixtures -----

fn context(client: Client) -> Arc<Context> {
    Arc::new(Context::new(
        client,
        Reporter {
            controller: "rl-swarm-operator".into(),
            instance: None,
        },
        Metrics::register(&mut swarm_telemetry::Metrics::new(None)),
        PodSettings {
            default_image: DEFAULT_IMAGE.into(),
        },
    ))
}

/// The Swarm `research/demo` as the API server returns it, with its model on the claim `models`.
fn swarm_object(replicas: i32) -> Swarm {
    serde_json::from_value(json!({
        "apiVersion": "rlswarm.dev/v1alpha1",
        "kind": "Swarm",
        "metadata": {
            "name": "demo",
            "namespace": NS,
            "uid": SWARM_UID,
            "generation": 1,
            "resourceVersion": "100",
        },
        "spec": {
            "replicas": replicas,
            "model": {"source": {"pvc": {"claimName": "models", "path": "qwen2.5-0.5b"}}},
        },
    }))
    .unwrap()
}

fn member_uid(ordinal: u32) -> String {
    format!("00000000-0000-4000-8000-00000000010{ordinal}")
}

/// The member `demo-<ordinal>` as the API server returns it.
fn member_object(swarm: &Swarm, ordinal: u32, status: Option<SwarmMemberStatus>) -> SwarmMember {
    let mut member = build_member(swarm, ordinal);
    member.metadata.uid = Some(member_uid(ordinal));
    member.metadata.generation = Some(1);
    member.metadata.resource_version = Some(format!("{}", 200 + ordinal));
    member.status = status;
    member
}

fn member_status(
    phase: MemberPhase,
    peer_id: Option<String>,
    message: Option<&str>,
) -> SwarmMemberStatus {
    SwarmMemberStatus {
        phase: Some(phase),
        peer_id,
        message: message.map(str::to_owned),
        ..Default::default()
    }
}

/// The Ready condition the member controller writes for `readiness`.
fn condition_of(readiness: Readiness) -> Condition {
    readiness.condition(&[], String::new(), Some(1), Timestamp::UNIX_EPOCH)
}

/// A distinct, valid PeerId per ordinal.
fn peer_id(ordinal: u32) -> String {
    MemberKey::from_hex(&format!("{:064x}", 0x1000 + ordinal))
        .unwrap()
        .peer_id_string()
}

fn multiaddr(member: &str, peer_id: &str) -> String {
    format!("/dns4/{member}.demo-peers.research.svc/tcp/4001/p2p/{peer_id}")
}

fn member_list(members: &[SwarmMember]) -> Value {
    json!({
        "apiVersion": "rlswarm.dev/v1alpha1",
        "kind": "SwarmMemberList",
        "metadata": {"resourceVersion": "300"},
        "items": members,
    })
}

fn model_claim() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "models", "namespace": NS, "uid": "claim-uid", "resourceVersion": "3"},
        "spec": {"accessModes": ["ReadOnlyMany"], "resources": {"requests": {"storage": "10Gi"}}},
        "status": {"phase": "Bound"},
    })
}

/// The identity Secret of `member` holding `key`, as created earlier by the operator.
fn identity_secret(member: &str, key: &MemberKey) -> Secret {
    let mut secret = Secret {
        immutable: Some(true),
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(
            PRIVATE_KEY_FILE.to_owned(),
            ByteString(key.secret_data().into_bytes()),
        )])),
        ..Default::default()
    };
    secret.metadata.name = Some(format!("{member}-identity"));
    secret.metadata.namespace = Some(NS.into());
    secret.metadata.uid = Some(format!("secret-{member}"));
    secret.metadata.labels = Some(BTreeMap::from([
        ("rlswarm.dev/swarm".to_owned(), "demo".to_owned()),
        ("rlswarm.dev/member".to_owned(), member.to_owned()),
        (
            "app.kubernetes.io/managed-by".to_owned(),
            "rl-swarm-operator".to_owned(),
        ),
    ]));
    secret
}

/// A pod `name` owned (as controller) by the object with `owner_uid`, in `phase`.
fn pod_object(name: &str, owner_uid: &str, phase: &str, ready: bool) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": NS,
            "uid": format!("pod-{owner_uid}"),
            "resourceVersion": "400",
            "ownerReferences": [{
                "apiVersion": "rlswarm.dev/v1alpha1",
                "kind": "SwarmMember",
                "name": name,
                "uid": owner_uid,
                "controller": true,
            }],
        },
        "spec": {"nodeName": "gpu-0", "containers": [{"name": "node", "image": DEFAULT_IMAGE}]},
        "status": {
            "phase": phase,
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
        },
    })
}

// ----- assertions shared by scenarios -----

/// `(status, reason, message)` of the condition `type_` in a status JSON.
fn condition<'a>(status: &'a Value, type_: &str) -> (&'a str, &'a str, &'a str) {
    let found = status["conditions"]
        .as_array()
        .unwrap_or_else(|| panic!("no conditions in {status:#}"))
        .iter()
        .find(|c| c["type"] == type_)
        .unwrap_or_else(|| panic!("no condition {type_} in {status:#}"));
    (
        found["status"].as_str().unwrap(),
        found["reason"].as_str().unwrap(),
        found["message"].as_str().unwrap(),
    )
}

/// Answers a status apply with the object and its new status.
fn answer_status<K: serde::Serialize>(exchange: Exchange, object: &K) {
    let mut body = serde_json::to_value(object).unwrap();
    body["status"] = exchange.body["status"].clone();
    exchange.ok(&body);
}

/// The SwarmMember apply of `demo-<ordinal>`: its identity and ownership, answered as stored.
async fn expect_member_apply(server: &mut ApiServer, ordinal: u32) {
    let apply = server.apply(&format!("{MEMBERS}/demo-{ordinal}")).await;
    let body = &apply.body;
    assert_eq!(body["apiVersion"], "rlswarm.dev/v1alpha1");
    assert_eq!(body["kind"], "SwarmMember");
    assert_eq!(body["metadata"]["name"], format!("demo-{ordinal}"));
    assert_eq!(body["metadata"]["namespace"], NS);
    assert_eq!(body["spec"], json!({"swarm": "demo", "ordinal": ordinal}));
    let labels = &body["metadata"]["labels"];
    assert_eq!(labels["rlswarm.dev/swarm"], "demo");
    assert_eq!(labels["rlswarm.dev/member"], format!("demo-{ordinal}"));
    assert_eq!(labels["rlswarm.dev/ordinal"], ordinal.to_string());
    assert_eq!(
        body["metadata"]["ownerReferences"],
        json!([{
            "apiVersion": "rlswarm.dev/v1alpha1",
            "kind": "Swarm",
            "name": "demo",
            "uid": SWARM_UID,
            "controller": true,
        }])
    );
    assert!(
        body.get("status").is_none(),
        "a member apply must not carry status: {body:#}"
    );
    apply.applied();
}

/// The headless Service apply, answered as stored.
/// The Swarm controller gives the new member `demo-<ordinal>` its identity: a GET that finds no
/// Secret, the Secret's creation (checked), and the member's IdentityCreated Event. Returns the key.
async fn expect_identity_created(server: &mut ApiServer, ordinal: u32) -> MemberKey {
    let member = format!("demo-{ordinal}");
    server
        .get(&format!("{SECRETS}/{member}-identity"))
        .await
        .not_found();
    let create = server.expect(Method::POST, SECRETS).await;
    assert_eq!(create.query("fieldManager"), Some("rl-swarm-operator"));
    let secret: Secret = create.parse();
    assert_eq!(
        secret.metadata.name.as_deref(),
        Some(format!("{member}-identity").as_str())
    );
    assert_eq!(secret.immutable, Some(true));
    let labels = secret.metadata.labels.clone().unwrap();
    assert_eq!(labels["rlswarm.dev/member"], member);
    assert_eq!(labels["rlswarm.dev/swarm"], "demo");
    assert_eq!(labels["app.kubernetes.io/managed-by"], "rl-swarm-operator");
    let owners = secret.metadata.owner_references.clone().unwrap();
    assert_eq!(
        (owners[0].kind.as_str(), owners[0].uid.as_str()),
        ("Swarm", SWARM_UID)
    );
    let data = secret.data.clone().unwrap();
    let key = MemberKey::from_secret_data(&data[PRIVATE_KEY_FILE].0).unwrap();
    let annotations = secret.metadata.annotations.clone().unwrap();
    assert_eq!(annotations["rlswarm.dev/peer-id"], key.peer_id_string());
    assert_eq!(annotations["rlswarm.dev/address"], key.address());
    create.created();

    let event = server.event(NS, "Normal", "IdentityCreated").await;
    assert_eq!(event["regarding"]["kind"], "SwarmMember");
    assert_eq!(event["regarding"]["name"], member);
    let note = event["note"].as_str().unwrap();
    assert!(note.contains(&key.peer_id_string()), "{note}");
    assert!(
        !note.contains(&key.secret_data()),
        "the key must never appear in an event"
    );
    key
}

async fn expect_service_apply(server: &mut ApiServer) {
    let apply = server.apply(SERVICE).await;
    let spec = &apply.body["spec"];
    assert_eq!(spec["clusterIP"], "None");
    assert_eq!(spec["publishNotReadyAddresses"], true);
    assert_eq!(spec["selector"], json!({"rlswarm.dev/swarm": "demo"}));
    assert_eq!(
        apply.body["metadata"]["ownerReferences"][0]["uid"],
        SWARM_UID
    );
    apply.applied();
}

/// The ConfigMap apply, answered as stored; returns the node configuration it carries.
async fn expect_config_apply(server: &mut ApiServer) -> NodeConfig {
    let apply = server.apply(CONFIG_MAP).await;
    let map: ConfigMap = apply.parse();
    assert_eq!(
        map.metadata.owner_references.as_ref().unwrap()[0].uid,
        SWARM_UID
    );
    let text = &map.data.as_ref().unwrap()[CONFIG_FILE];
    let config = NodeConfig::from_yaml(text, "configmap").unwrap();
    assert_eq!(config.swarm.uid, SWARM_UID);
    apply.applied();
    config
}

/// The Swarm status apply, answered; returns the status written.
async fn expect_swarm_status(server: &mut ApiServer, swarm: &Swarm) -> Value {
    let apply = server.apply(SWARM_STATUS).await;
    assert_eq!(apply.body["apiVersion"], "rlswarm.dev/v1alpha1");
    assert_eq!(apply.body["kind"], "Swarm");
    assert!(
        apply.body.get("spec").is_none(),
        "status apply carries spec: {:#}",
        apply.body
    );
    let status = apply.body["status"].clone();
    answer_status(apply, swarm);
    status
}

/// The SwarmMember status apply of `member`, answered; returns the status written.
async fn expect_member_status(server: &mut ApiServer, member: &SwarmMember) -> Value {
    let name = member.metadata.name.as_deref().unwrap();
    let apply = server.apply(&format!("{MEMBERS}/{name}/status")).await;
    assert_eq!(apply.body["kind"], "SwarmMember");
    assert!(
        apply.body.get("spec").is_none(),
        "status apply carries spec: {:#}",
        apply.body
    );
    let status = apply.body["status"].clone();
    answer_status(apply, member);
    status
}

/// The member pod apply: named after the member, owned by it, mounting its identity Secret;
/// answered as stored. Returns the pod.
async fn expect_pod_apply(server: &mut ApiServer, member: &SwarmMember) -> Pod {
    let name = member.metadata.name.as_deref().unwrap();
    let apply = server.apply(&format!("{PODS}/{name}")).await;
    let pod: Pod = apply.parse();
    let owner = &pod.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
        ("SwarmMember", name, member.metadata.uid.as_deref().unwrap())
    );
    assert_eq!(owner.controller, Some(true));
    let spec = pod.spec.as_ref().unwrap();
    let identity = spec
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .find(|v| v.secret.is_some())
        .expect("a Secret volume");
    assert_eq!(
        identity.secret.as_ref().unwrap().secret_name.as_deref(),
        Some(format!("{name}-identity").as_str())
    );
    let container = &spec.containers[0];
    let mount = container
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| m.name == identity.name)
        .expect("the identity volume is mounted");
    assert_eq!(mount.read_only, Some(true));
    assert!(
        pod.metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key("rlswarm.dev/template-hash")),
        "the pod carries its template hash"
    );
    apply.applied();
    pod
}

fn requeue_after(action: &Action) -> Option<Duration> {
    // `Action` keeps its delay private; its Debug output is the only way to read it back.
    let text = format!("{action:?}");
    let start = text.find("Some(")? + "Some(".len();
    let inner = &text[start..text[start..].find(')')? + start];
    if let Some(ms) = inner.strip_suffix("ms") {
        return Some(Duration::from_secs_f64(ms.parse::<f64>().ok()? / 1000.0));
    }
    Some(Duration::from_secs_f64(
        inner.strip_suffix('s')?.parse().ok()?,
    ))
}

// ----- Swarm controller -----

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
            for ordinal in 0..3 {
                expect_member_apply(&mut server, ordinal).await;
            }
            let mut peers = Vec::new();
            for ordinal in 0..3 {
                let key = expect_identity_created(&mut server, ordinal).await;
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
            expect_member_apply(&mut server, 2).await;
            expect_member_apply(&mut server, 3).await;
            // The known members' PeerIds come from their status; only the new ones' Secrets.
            let third = expect_identity_created(&mut server, 2).await;
            let fourth = expect_identity_created(&mut server, 3).await;
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
            expect_member_apply(&mut server, 1).await;
            // Its identity outlived it (the Swarm owns the Secret): read, never replaced.
            server
                .get(&format!("{SECRETS}/demo-1-identity"))
                .await
                .ok_with(&returning);
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

// ----- SwarmMember controller -----

#[tokio::test]
async fn first_member_reconcile_reads_its_identity_then_creates_claim_pod_and_status() {
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

            let status = expect_member_status(&mut server, &member_expected).await;
            assert_eq!(status["peerId"], key.peer_id_string());
            assert_eq!(status["address"], key.address());
            assert_eq!(status["pod"], "demo-0");
            assert_eq!(status["phase"], "Pending");
            assert_eq!(status["restarts"], 0);
            assert_eq!(status["observedGeneration"], 1);
            assert_eq!(condition(&status, "Ready").0, "False");
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
    let expected_peer = key.peer_id_string();
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
            let status = expect_member_status(&mut server, &member_expected).await;
            assert_eq!(status["phase"], "Pending");
            assert_eq!(status["pod"], "demo-1");
            assert_eq!(status["peerId"], expected_peer);
            assert_eq!(status["restarts"], 1);
            assert_eq!(status["failureStreak"], 1);
            server
        },
        member::reconcile(ctx.clone(), due),
    )
    .await;
    assert_eq!(action.unwrap(), Action::requeue(Duration::from_secs(300)));
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

#[tokio::test]
async fn running_member_settles_and_then_writes_nothing() {
    let swarm = swarm_object(1);
    let key = MemberKey::from_hex(KEY).unwrap();
    let member = member_object(&swarm, 0, None);
    let mut running = serde_json::to_value(build_member_pod(
        &swarm,
        &member,
        &PodSettings {
            default_image: DEFAULT_IMAGE.into(),
        },
    ))
    .unwrap();
    running["spec"]["nodeName"] = json!("gpu-3");
    running["status"] =
        json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]});
    let running = stored(running);

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
            expect_member_apply(&mut server, 0).await;
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

// ----- leader election -----

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

// ----- the harness itself: a scenario must be able to fail -----

#[tokio::test]
#[should_panic(
    expected = "unexpected request GET /api/v1/namespaces/research/persistentvolumeclaims/other"
)]
async fn harness_rejects_a_request_after_the_last_expected_one() {
    let (client, server) = mock_client();
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client, NS);
    let _ = run(
        server,
        |mut server| async move {
            server.get(PVC).await.ok(&model_claim());
            server
        },
        async {
            claims.get("models").await.unwrap();
            claims.get_opt("other").await
        },
    )
    .await;
}

#[tokio::test]
#[should_panic(expected = "without sending PATCH /api/v1/namespaces/research/services/demo-peers")]
async fn harness_rejects_a_reconciler_that_stops_early() {
    let (client, server) = mock_client();
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client, NS);
    let _ = run(
        server,
        |mut server| async move {
            server.get(PVC).await.ok(&model_claim());
            expect_service_apply(&mut server).await;
            server
        },
        async { claims.get("models").await.map(|_| ()) },
    )
    .await;
}

#[tokio::test]
#[should_panic(
    expected = "expected GET /api/v1/namespaces/research/persistentvolumeclaims/models, got DELETE"
)]
async fn harness_rejects_a_request_out_of_order() {
    let (client, server) = mock_client();
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client, NS);
    let _ = run(
        server,
        |mut server| async move {
            server.get(PVC).await.ok(&model_claim());
            server
        },
        async {
            claims
                .delete("models", &DeleteParams::default())
                .await
                .map(|_| ())
        },
    )
    .await;
}
