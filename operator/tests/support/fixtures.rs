//! What the reconcile scenarios share: the Swarm and its members as the API server would hold them,
//! the requests every flow makes in the same way, and readers of what the reconcilers wrote.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::Client;
use kube::runtime::controller::Action;
use kube::runtime::events::Reporter;
use serde_json::{Value, json};
use swarm_identity::{MemberKey, PRIVATE_KEY_FILE};
use swarm_node_config::{CONFIG_FILE, NodeConfig};
use swarm_operator::api::{MemberPhase, Swarm, SwarmMember, SwarmMemberStatus};
use swarm_operator::build::{PodSettings, build_member};
use swarm_operator::controller::Context;
use swarm_operator::metrics::Metrics;
use swarm_operator::status::Readiness;

use kube::core::DeserializeGuard;
use kube::runtime::reflector::Store;
use kube::runtime::reflector::store::Writer;
use kube::runtime::watcher;
use swarm_operator::controller::cache::Caches;

use super::{ApiServer, Exchange};

pub const NS: &str = "research";
pub const SWARM_UID: &str = "5f0c2c1e-0000-4000-8000-000000000001";
pub const DEFAULT_IMAGE: &str = "ghcr.io/example/swarm-node:test";

pub const PVC: &str = "/api/v1/namespaces/research/persistentvolumeclaims/models";
pub const MEMBERS: &str = "/apis/rlswarm.dev/v1alpha1/namespaces/research/swarmmembers";
pub const SWARM: &str = "/apis/rlswarm.dev/v1alpha1/namespaces/research/swarms/demo";
pub const SWARM_STATUS: &str = "/apis/rlswarm.dev/v1alpha1/namespaces/research/swarms/demo/status";
pub const SERVICE: &str = "/api/v1/namespaces/research/services/demo-peers";
pub const CONFIG_MAP: &str = "/api/v1/namespaces/research/configmaps/demo-config";
pub const SECRETS: &str = "/api/v1/namespaces/research/secrets";
pub const PODS: &str = "/api/v1/namespaces/research/pods";

/// A fixed member key, as an existing identity Secret would hold it.
pub const KEY: &str = "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318";

pub fn context(client: Client) -> Arc<Context> {
    Arc::new(new_context(client))
}

/// The controllers' context on a mocked client, for a test to configure further.
pub fn new_context(client: Client) -> Context {
    Context::new(
        client,
        Reporter {
            controller: "rl-swarm-operator".into(),
            instance: None,
        },
        Metrics::register(&mut swarm_telemetry::Metrics::new(None)),
        PodSettings {
            default_image: DEFAULT_IMAGE.into(),
        },
    )
}

/// The Swarm `research/demo` as the API server returns it, with its model on the claim `models`.
pub fn swarm_object(replicas: i32) -> Swarm {
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

pub fn member_uid(ordinal: u32) -> String {
    format!("00000000-0000-4000-8000-00000000010{ordinal}")
}

/// The member `demo-<ordinal>` as the API server returns it.
pub fn member_object(
    swarm: &Swarm,
    ordinal: u32,
    status: Option<SwarmMemberStatus>,
) -> SwarmMember {
    let mut member = build_member(swarm, ordinal);
    member.metadata.uid = Some(member_uid(ordinal));
    member.metadata.generation = Some(1);
    member.metadata.resource_version = Some(format!("{}", 200 + ordinal));
    member.status = status;
    member
}

pub fn member_status(
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
pub fn condition_of(readiness: Readiness) -> Condition {
    readiness.condition(&[], String::new(), Some(1), Timestamp::UNIX_EPOCH)
}

/// A distinct, valid PeerId per ordinal.
pub fn peer_id(ordinal: u32) -> String {
    MemberKey::from_hex(&format!("{:064x}", 0x1000 + ordinal))
        .unwrap()
        .peer_id_string()
}

pub fn multiaddr(member: &str, peer_id: &str) -> String {
    format!("/dns4/{member}.demo-peers.research.svc/tcp/4001/p2p/{peer_id}")
}

pub fn member_list(members: &[SwarmMember]) -> Value {
    json!({
        "apiVersion": "rlswarm.dev/v1alpha1",
        "kind": "SwarmMemberList",
        "metadata": {"resourceVersion": "300"},
        "items": members,
    })
}

pub fn model_claim() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "models", "namespace": NS, "uid": "claim-uid", "resourceVersion": "3"},
        "spec": {"accessModes": ["ReadOnlyMany"], "resources": {"requests": {"storage": "10Gi"}}},
        "status": {"phase": "Bound"},
    })
}

/// The identity Secret of `member` holding `key`, as created earlier by the operator.
pub fn identity_secret(member: &str, key: &MemberKey) -> Secret {
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
pub fn pod_object(name: &str, owner_uid: &str, phase: &str, ready: bool) -> Value {
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
pub fn condition<'a>(status: &'a Value, type_: &str) -> (&'a str, &'a str, &'a str) {
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
pub fn answer_status<K: serde::Serialize>(exchange: Exchange, object: &K) -> Value {
    let status = exchange.body["status"].clone();
    let mut body = serde_json::to_value(object).unwrap();
    body["status"] = status.clone();
    exchange.ok(&body);
    status
}

/// The SwarmMember apply of `demo-<ordinal>`: its identity and ownership, answered as stored.
pub async fn expect_member_apply(server: &mut ApiServer, ordinal: u32) {
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
/// The Swarm controller creates the identity of member `demo-<ordinal>`: a GET that finds no
/// Secret, then the Secret's creation (checked). Returns the key.
pub async fn expect_secret_created(server: &mut ApiServer, ordinal: u32) -> MemberKey {
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
    key
}

/// The IdentityCreated Event on member `demo-<ordinal>`, naming `key`'s PeerId and never the key.
pub async fn expect_identity_event(server: &mut ApiServer, ordinal: u32, key: &MemberKey) {
    let member = format!("demo-{ordinal}");

    let event = server.event(NS, "Normal", "IdentityCreated").await;
    assert_eq!(event["regarding"]["kind"], "SwarmMember");
    assert_eq!(event["regarding"]["name"], member);
    let note = event["note"].as_str().unwrap();
    assert!(note.contains(&key.peer_id_string()), "{note}");
    assert!(
        !note.contains(&key.secret_data()),
        "the key must never appear in an event"
    );
}

/// An existing member without a PeerId gets its identity: the Secret created, then the Event.
pub async fn expect_identity_created(server: &mut ApiServer, ordinal: u32) -> MemberKey {
    let key = expect_secret_created(server, ordinal).await;
    expect_identity_event(server, ordinal, &key).await;
    key
}

/// A new member: its identity Secret first (so its controller finds it at once), then the
/// member, then the IdentityCreated Event on it.
pub async fn expect_new_member(server: &mut ApiServer, ordinal: u32) -> MemberKey {
    let key = expect_secret_created(server, ordinal).await;
    expect_member_apply(server, ordinal).await;
    expect_identity_event(server, ordinal, &key).await;
    key
}

pub async fn expect_service_apply(server: &mut ApiServer) {
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
pub async fn expect_config_apply(server: &mut ApiServer) -> NodeConfig {
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
pub async fn expect_swarm_status(server: &mut ApiServer, swarm: &Swarm) -> Value {
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
pub async fn expect_member_status(server: &mut ApiServer, member: &SwarmMember) -> Value {
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
pub async fn expect_pod_apply(server: &mut ApiServer, member: &SwarmMember) -> Pod {
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

pub fn requeue_after(action: &Action) -> Option<Duration> {
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

/// A store that has listed once and holds `objects`, as a watch leaves it.
pub fn listed<K>(objects: Vec<K>) -> Store<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    let mut writer = Writer::<K>::default();
    writer.apply_watcher_event(&watcher::Event::Init);
    for object in objects {
        writer.apply_watcher_event(&watcher::Event::InitApply(object));
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
    writer.as_reader()
}

/// Watch caches holding exactly these objects, and no Service, ConfigMap or claim.
pub fn caches(
    swarms: Vec<Swarm>,
    members: Vec<SwarmMember>,
    pods: Vec<Pod>,
    secrets: Vec<Secret>,
) -> Caches {
    Caches {
        swarms: listed(
            swarms
                .into_iter()
                .map(|s| DeserializeGuard(Ok(s)))
                .collect(),
        ),
        members: listed(
            members
                .into_iter()
                .map(|m| DeserializeGuard(Ok(m)))
                .collect(),
        ),
        pods: listed(pods),
        secrets: listed(secrets),
        services: listed(Vec::new()),
        config_maps: listed(Vec::new()),
        claims: listed(Vec::new()),
    }
}
