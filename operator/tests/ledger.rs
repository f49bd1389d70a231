//! Ledger flows: the ledger controller's, whose Kubernetes API is the scripted server of the
//! reconcile (every request asserted in order) and whose chain is a real anvil, so contract
//! deployment, funding, registration, round advancing and deregistration are real transactions;
//! and the Swarm and member controllers', which never ask the chain.

#![allow(clippy::unwrap_used, clippy::expect_used)]

// Shared with the reconcile scenarios; these need only part.
#[allow(dead_code)]
mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use alloy::primitives::utils::parse_ether;
use http::Method;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Pod, PodCondition, PodStatus, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Client;
use kube::runtime::controller::Action;
use serde_json::{Value, json};
use swarm_identity::{MemberKey, PRIVATE_KEY_FILE};
use swarm_ledger::{
    Address, LedgerClient, LedgerOptions, RetryPolicy, deterministic_address, member_signer,
};
use swarm_operator::api::{LEDGER_FIELD_MANAGER, Swarm, SwarmMember};
use swarm_operator::build::{PodSettings, build_member, build_member_pod};
use swarm_operator::controller::{Context, ledger, member, swarm};
use swarm_operator::ledger::deployment_salt;

use support::fixtures::{
    CONFIG_MAP, DEFAULT_IMAGE, KEY, MEMBERS, NS, PVC, SERVICE, SWARM, SWARM_STATUS, answer_status,
    condition, new_context, swarm_object,
};
use support::{ApiServer, Exchange, mock_client, run};
use swarm_ledger::testing::{CHAIN_ID, Chain, closed_port};

const OPERATOR_SECRET: &str = "/api/v1/namespaces/research/secrets/ledger-operator";
const IDENTITY_SECRET: &str = "/api/v1/namespaces/research/secrets/demo-0-identity";
const POD: &str = "/api/v1/namespaces/research/pods/demo-0";
const MEMBER: &str = "/apis/rlswarm.dev/v1alpha1/namespaces/research/swarmmembers/demo-0";
const MEMBER_STATUS: &str =
    "/apis/rlswarm.dev/v1alpha1/namespaces/research/swarmmembers/demo-0/status";
const SWARM_FINALIZER: &str = "rlswarm.dev/ledger-members";
const MEMBER_FINALIZER: &str = "rlswarm.dev/ledger-registration";

/// Short timeouts and backoff, so failure paths finish at once.
fn ledger_options() -> LedgerOptions {
    LedgerOptions {
        request_timeout: Duration::from_secs(5),
        receipt_timeout: Duration::from_secs(10),
        poll_interval: Duration::from_millis(20),
        retry: RetryPolicy {
            max_attempts: 2,
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(50),
        },
    }
}

fn context(client: Client) -> Arc<Context> {
    Arc::new(new_context(client).with_ledger_options(ledger_options()))
}

/// `research/demo` with a ledger at `rpc_url`, created `age` ago with 60 s rounds.
fn ledger_swarm(replicas: i32, rpc_url: &str, contract: Value, age: SignedDuration) -> Swarm {
    let mut swarm = swarm_object(replicas);
    swarm.metadata.creation_timestamp = Some(Time(Timestamp::now() - age));
    swarm.spec.rounds = serde_json::from_value(json!({"durationSeconds": 60})).unwrap();
    swarm.spec.ledger = Some(
        serde_json::from_value(json!({
            "rpcUrl": rpc_url,
            "chainId": CHAIN_ID,
            "contract": contract,
            "operatorKeySecret": {"name": "ledger-operator"},
            "memberFunding": "0.5",
        }))
        .unwrap(),
    );
    swarm
}

fn secret(name: &str, key: &MemberKey) -> Secret {
    let mut secret = Secret {
        data: Some(BTreeMap::from([(
            PRIVATE_KEY_FILE.to_owned(),
            ByteString(key.secret_data().into_bytes()),
        )])),
        ..Default::default()
    };
    secret.metadata.name = Some(name.into());
    secret.metadata.namespace = Some(NS.into());
    secret.metadata.labels = Some(BTreeMap::from([(
        "rlswarm.dev/member".to_owned(),
        "demo-0".to_owned(),
    )]));
    secret
}

fn member_object(swarm: &Swarm, status: Value, finalized: bool) -> SwarmMember {
    let mut member = build_member(swarm, 0);
    member.metadata.uid = Some("00000000-0000-4000-8000-000000000100".into());
    member.metadata.generation = Some(1);
    member.metadata.resource_version = Some("200".into());
    if finalized {
        member.metadata.finalizers = Some(vec![MEMBER_FINALIZER.into()]);
    }
    member.status = serde_json::from_value(status).unwrap();
    member
}

/// The member's pod as it runs: current template, ready.
fn running_pod(swarm: &Swarm, member: &SwarmMember) -> Pod {
    let mut pod = build_member_pod(
        swarm,
        member,
        &PodSettings {
            default_image: DEFAULT_IMAGE.into(),
        },
    );
    pod.metadata.uid = Some("pod-uid".into());
    pod.spec.as_mut().unwrap().node_name = Some("gpu-0".into());
    pod.status = Some(PodStatus {
        phase: Some("Running".into()),
        conditions: Some(vec![PodCondition {
            type_: "Ready".into(),
            status: "True".into(),
            ..Default::default()
        }]),
        ..Default::default()
    });
    pod
}

/// A finalizer merge patch of `path`: asserts the finalizers and the resourceVersion it is based on.
async fn expect_finalizers(server: &mut ApiServer, path: &str, object: &Value, finalizers: Value) {
    let patch = server.expect(Method::PATCH, path).await;
    assert_eq!(
        patch.content_type.as_deref(),
        Some("application/merge-patch+json")
    );
    assert_eq!(patch.body["metadata"]["finalizers"], finalizers);
    assert_eq!(
        patch.body["metadata"]["resourceVersion"],
        object["metadata"]["resourceVersion"]
    );
    let mut answer = object.clone();
    answer["metadata"]["finalizers"] = finalizers;
    patch.ok(&answer);
}

/// The Swarm controller's Kubernetes requests before its status (no members).
async fn expect_children(server: &mut ApiServer) {
    server.get(PVC).await.ok(&json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "models", "namespace": NS},
    }));
    server.get(MEMBERS).await.ok(&list(&[]));
    for path in [SERVICE, CONFIG_MAP] {
        server.apply(path).await.applied();
    }
}

fn list(members: &[SwarmMember]) -> Value {
    json!({
        "apiVersion": "rlswarm.dev/v1alpha1", "kind": "SwarmMemberList",
        "metadata": {"resourceVersion": "300"}, "items": members,
    })
}

/// A status apply of `path` under the ledger controller's own field manager.
async fn ledger_apply(server: &mut ApiServer, path: &str) -> Exchange {
    let apply = server.expect(Method::PATCH, path).await;
    assert_eq!(apply.query("fieldManager"), Some(LEDGER_FIELD_MANAGER));
    assert_eq!(apply.query("force"), Some("true"));
    apply
}

fn assert_no_key(text: &str, keys: &[String]) {
    for key in keys {
        assert!(!text.contains(key), "a private key leaked into {text}");
    }
}

/// `base` with the fields of `part` (a status the ledger controller wrote) added.
fn merged(base: Value, part: &Value) -> Value {
    let mut merged = base;
    for (field, value) in part.as_object().unwrap() {
        merged[field] = value.clone();
    }
    merged
}

/// The whole lifecycle on a real chain, all in the ledger controller: deploy, advance rounds, fund
/// and register a member in one pass; show the rewards it records; register nothing twice (also
/// when its status was lost); deregister it when scaled away.
#[tokio::test]
async fn swarm_and_member_lifecycle_on_a_real_chain() {
    let chain = Chain::start();
    let operator = MemberKey::generate();
    let operator_account: Address = operator.address().parse().unwrap();
    chain.fund(operator_account).await;
    let member_key = MemberKey::from_hex(KEY).unwrap();
    let member_account: Address = member_key.address().parse().unwrap();
    let operator_secret = secret("ledger-operator", &operator);
    let identity = secret("demo-0-identity", &member_key);
    let keys = vec![operator.secret_data(), member_key.secret_data()];
    let identity_status = json!({
        "phase": "Running",
        "address": member_key.address(),
        "peerId": member_key.peer_id_string(),
    });

    // 1. A new Swarm asking for a contract (created 125 s ago, 60 s rounds) and its member, whose
    //    identity is known: the contract is deployed and advanced to round 2, the member funded
    //    and registered; each status is written once, with the ledger's fields only.
    let mut swarm0 = ledger_swarm(
        1,
        &chain.url(),
        json!({"deploy": {}}),
        SignedDuration::from_secs(125),
    );
    swarm0.metadata.finalizers = Some(vec![SWARM_FINALIZER.into()]);
    let member0 = member_object(&swarm0, identity_status.clone(), false);
    let swarm_written = support::Captured::default();
    let member_written = support::Captured::default();
    let (keep_swarm, keep_member) = (swarm_written.clone(), member_written.clone());
    let (client, server) = mock_client();
    let (answer, op_secret, identity0, member_answer, url, leaked) = (
        swarm0.clone(),
        operator_secret.clone(),
        identity.clone(),
        member0.clone(),
        chain.url(),
        keys.clone(),
    );
    let action = run(
        server,
        |mut server| async move {
            server
                .get(MEMBERS)
                .await
                .ok(&list(std::slice::from_ref(&member_answer)));
            server.get(OPERATOR_SECRET).await.ok_with(&op_secret);
            let apply = ledger_apply(&mut server, SWARM_STATUS).await;
            assert_no_key(&apply.body.to_string(), &leaked);
            let status = answer_status(apply, &answer);
            let (ready, reason, message) = condition(&status, "LedgerReady");
            assert_eq!((ready, reason), ("True", "ContractDeployed"));
            assert!(message.contains(&format!("through {url}")), "{message}");
            assert_eq!(status["ledger"]["round"], 2);
            assert_eq!(
                status.as_object().unwrap().len(),
                2,
                "the ledger's fields only: {status:#}"
            );
            let event = server.event(NS, "Normal", "ContractDeployed").await;
            assert_no_key(&event.to_string(), &leaked);
            server.get(IDENTITY_SECRET).await.ok_with(&identity0);
            let object = serde_json::to_value(&member_answer).unwrap();
            expect_finalizers(&mut server, MEMBER, &object, json!([MEMBER_FINALIZER])).await;
            let apply = ledger_apply(&mut server, MEMBER_STATUS).await;
            assert_no_key(&apply.body.to_string(), &leaked);
            let member_status = answer_status(apply, &member_answer);
            let (registered, reason, message) = condition(&member_status, "Registered");
            assert_eq!((registered, reason), ("True", "Registered"));
            assert_eq!(
                member_status["conditions"].as_array().unwrap().len(),
                1,
                "Ready is the member controller's"
            );
            let ledger = &member_status["ledger"];
            let tx = ledger["registrationTransaction"].as_str().unwrap();
            assert!(message.contains(tx), "{message}");
            assert!(
                ledger["fundingTransaction"]
                    .as_str()
                    .unwrap()
                    .starts_with("0x")
            );
            keep_swarm.set(status);
            keep_member.set(member_status);
            server
        },
        ledger::reconcile(context(client), swarm0.clone()),
    )
    .await;
    let wait = requeue_secs(&action.unwrap());
    assert!(
        (1.0..=60.0).contains(&wait),
        "back for the next round: {wait}"
    );
    assert_eq!(
        chain.nonce(operator_account).await,
        1 + 2 + 2,
        "one deployment, two round advances, one funding, one registration"
    );
    assert_eq!(
        chain.balance(member_account).await,
        parse_ether("0.5").unwrap()
    );
    let contract = deterministic_address(operator_account, deployment_salt(&swarm0));
    assert_eq!(
        member_written.get()["ledger"]["contractAddress"],
        contract.to_checksum(None)
    );
    let reader = LedgerClient::connect(
        &chain.url(),
        CHAIN_ID,
        member_signer(&operator).unwrap(),
        contract,
        ledger_options(),
    )
    .await
    .unwrap();
    let record = reader
        .member_by_account(member_account)
        .await
        .unwrap()
        .unwrap();
    assert!(record.registered);
    assert_eq!(record.peer_id, member_key.peer_id_string());
    let nonce_after_registration = chain.nonce(operator_account).await;

    // 2. The member's status lost (e.g. restored without it): the next pass connects to the same
    //    contract (never deploys again); the chain already has the member, nothing is sent, and
    //    the status says so.
    let mut swarm1 = swarm0.clone();
    swarm1.status = Some(serde_json::from_value(swarm_written.get()).unwrap());
    let member_lost = member_object(&swarm1, identity_status.clone(), true);
    let swarm_connected = support::Captured::default();
    let keep_swarm = swarm_connected.clone();
    let (client, server) = mock_client();
    let (answer, op_secret, identity1, member_answer) = (
        swarm1.clone(),
        operator_secret.clone(),
        identity.clone(),
        member_lost.clone(),
    );
    run(
        server,
        |mut server| async move {
            server
                .get(MEMBERS)
                .await
                .ok(&list(std::slice::from_ref(&member_answer)));
            server.get(OPERATOR_SECRET).await.ok_with(&op_secret);
            let status = answer_status(ledger_apply(&mut server, SWARM_STATUS).await, &answer);
            assert_eq!(condition(&status, "LedgerReady").1, "Connected");
            assert_eq!(
                status["ledger"]["contractAddress"],
                contract.to_checksum(None)
            );
            keep_swarm.set(status);
            server.get(IDENTITY_SECRET).await.ok_with(&identity1);
            let status = answer_status(
                ledger_apply(&mut server, MEMBER_STATUS).await,
                &member_answer,
            );
            let (registered, _, message) = condition(&status, "Registered");
            assert_eq!(registered, "True");
            assert!(message.contains("already registered"), "{message}");
            assert!(status["ledger"].get("registrationTransaction").is_none());
            assert!(status["ledger"].get("fundingTransaction").is_none());
            server
        },
        ledger::reconcile(context(client), swarm1.clone()),
    )
    .await
    .unwrap();
    assert_eq!(
        chain.nonce(operator_account).await,
        nonce_after_registration,
        "no second deployment, no transaction at all"
    );

    // 3. The member records rewards for two rounds; the next pass shows its latest round and
    //    rewards, with its registration, in one write; the Swarm's fields are as shown.
    let member_client = LedgerClient::connect(
        &chain.url(),
        CHAIN_ID,
        member_signer(&member_key).unwrap(),
        contract,
        ledger_options(),
    )
    .await
    .unwrap();
    for (round, reward) in [(0, 0.25), (1, 0.5)] {
        member_client
            .submit_reward(round, swarm_ledger::scaled_reward(reward))
            .await
            .unwrap();
    }
    let mut swarm2 = swarm1.clone();
    swarm2.status = Some(serde_json::from_value(swarm_connected.get()).unwrap());
    let member1 = member_object(
        &swarm2,
        merged(identity_status.clone(), &member_written.get()),
        true,
    );
    let (client, server) = mock_client();
    let (op_secret, member_answer) = (operator_secret.clone(), member1.clone());
    run(
        server,
        |mut server| async move {
            server
                .get(MEMBERS)
                .await
                .ok(&list(std::slice::from_ref(&member_answer)));
            server.get(OPERATOR_SECRET).await.ok_with(&op_secret);
            let progress = ledger_apply(&mut server, MEMBER_STATUS).await;
            let shown = &progress.body["status"];
            assert_eq!(
                (&shown["round"], &shown["lastReward"], &shown["totalReward"]),
                (&json!(1), &json!(0.5), &json!(0.75))
            );
            assert_eq!(condition(shown, "Registered").0, "True");
            assert_eq!(
                shown["ledger"]["contractAddress"],
                contract.to_checksum(None)
            );
            answer_status(progress, &member_answer);
            server
        },
        ledger::reconcile(context(client), swarm2.clone()),
    )
    .await
    .unwrap();
    assert_eq!(
        chain.nonce(operator_account).await,
        nonce_after_registration,
        "showing progress sends nothing"
    );

    // 4. Scaled away (replicas 0): the member leaves the ledger, then its finalizer goes.
    let mut leaving = member1;
    leaving.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
    let mut swarm_none = swarm2.clone();
    swarm_none.spec.replicas = 0;
    let (client, server) = mock_client();
    let (op_secret, member_answer, address) = (
        operator_secret.clone(),
        serde_json::to_value(&leaving).unwrap(),
        member_key.address(),
    );
    run(
        server,
        |mut server| async move {
            server.get(MEMBERS).await.ok(&json!({
                "apiVersion": "rlswarm.dev/v1alpha1", "kind": "SwarmMemberList",
                "metadata": {"resourceVersion": "300"}, "items": [member_answer.clone()],
            }));
            server.get(OPERATOR_SECRET).await.ok_with(&op_secret);
            let event = server.event(NS, "Normal", "Deregistered").await;
            assert!(event["note"].as_str().unwrap().contains(&address));
            expect_finalizers(&mut server, MEMBER, &member_answer, json!([])).await;
            server
        },
        ledger::reconcile(context(client), swarm_none),
    )
    .await
    .unwrap();
    let record = reader
        .member_by_account(member_account)
        .await
        .unwrap()
        .unwrap();
    assert!(!record.registered);
}

/// A deployment whose address never reached the status (the status write failed; the next pass
/// sees the Swarm without it): the next pass finds the contract at the Swarm's deterministic
/// address and uses it. One contract, one deployment transaction.
#[tokio::test]
async fn a_lost_status_write_after_a_deploy_deploys_no_second_contract() {
    let chain = Chain::start();
    let operator = MemberKey::generate();
    let operator_account: Address = operator.address().parse().unwrap();
    chain.fund(operator_account).await;
    let operator_secret = secret("ledger-operator", &operator);
    let mut swarm = ledger_swarm(
        0,
        &chain.url(),
        json!({"deploy": {}}),
        SignedDuration::from_secs(125),
    );
    swarm.metadata.finalizers = Some(vec![SWARM_FINALIZER.into()]);
    let expected = deterministic_address(operator_account, deployment_salt(&swarm));

    // 1. The deployment (and the round advances) go through; writing the address fails.
    let (client, server) = mock_client();
    let op_secret = operator_secret.clone();
    let result = run(
        server,
        |mut server| async move {
            server.get(MEMBERS).await.ok(&list(&[]));
            server.get(OPERATOR_SECRET).await.ok_with(&op_secret);
            ledger_apply(&mut server, SWARM_STATUS).await.failure(
                http::StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                "etcdserver: request timed out",
            );
            server
        },
        ledger::reconcile(context(client), swarm.clone()),
    )
    .await;
    assert!(
        result.is_err(),
        "the failed status write is an error to retry"
    );
    assert_eq!(
        chain.nonce(operator_account).await,
        1 + 2,
        "one deployment, two round advances"
    );

    // 2. The next pass, on the Swarm whose status has no contract, finds the deployed one.
    let (client, server) = mock_client();
    let (answer, op_secret) = (swarm.clone(), operator_secret.clone());
    run(
        server,
        |mut server| async move {
            server.get(MEMBERS).await.ok(&list(&[]));
            server.get(OPERATOR_SECRET).await.ok_with(&op_secret);
            let status = answer_status(ledger_apply(&mut server, SWARM_STATUS).await, &answer);
            assert_eq!(condition(&status, "LedgerReady").1, "Connected");
            assert_eq!(
                status["ledger"]["contractAddress"],
                expected.to_checksum(None)
            );
            assert_eq!(status["ledger"]["round"], 2);
            server
        },
        ledger::reconcile(context(client), swarm),
    )
    .await
    .unwrap();
    assert_eq!(
        chain.nonce(operator_account).await,
        1 + 2,
        "no second deployment"
    );
}

/// An RPC endpoint that does not answer: the ledger controller says so on the Swarm (without the
/// URL's API key) and on the member waiting for its registration, and comes back soon. The Swarm
/// and member controllers of the same Swarm never ask the chain: they finish as without a ledger.
#[tokio::test]
async fn unreachable_rpc_is_a_condition_and_a_retry_and_blocks_no_other_reconcile() {
    let url = format!("http://127.0.0.1:{}/v3/sekrit-api-key", closed_port());
    let contract = "0x5FbDB2315678afecb367f032d93F642f64180aa3";
    let mut swarm = ledger_swarm(
        1,
        &url,
        json!({"address": contract}),
        SignedDuration::from_secs(5),
    );
    swarm.metadata.finalizers = Some(vec![SWARM_FINALIZER.into()]);
    let key = MemberKey::from_hex(KEY).unwrap();
    let member = member_object(
        &swarm,
        json!({"phase": "Running", "address": key.address(), "peerId": key.peer_id_string()}),
        false,
    );
    let operator_secret = secret("ledger-operator", &MemberKey::generate());
    let (client, server) = mock_client();
    let (answer, op_secret, member_answer) =
        (swarm.clone(), operator_secret.clone(), member.clone());
    let action = run(
        server,
        |mut server| async move {
            server
                .get(MEMBERS)
                .await
                .ok(&list(std::slice::from_ref(&member_answer)));
            server.get(OPERATOR_SECRET).await.ok_with(&op_secret);
            let status = answer_status(ledger_apply(&mut server, SWARM_STATUS).await, &answer);
            let (ready, reason, message) = condition(&status, "LedgerReady");
            assert_eq!((ready, reason), ("False", "RpcUnreachable"));
            assert!(!message.contains("sekrit"), "the API key leaked: {message}");
            assert!(message.contains("127.0.0.1"), "{message}");
            let event = server.event(NS, "Warning", "RpcUnreachable").await;
            assert!(!event.to_string().contains("sekrit"));
            let status = answer_status(
                ledger_apply(&mut server, MEMBER_STATUS).await,
                &member_answer,
            );
            let (registered, reason, message) = condition(&status, "Registered");
            assert_eq!((registered, reason), ("False", "RpcUnreachable"));
            assert!(!message.contains("sekrit"), "{message}");
            server
        },
        ledger::reconcile(context(client), swarm.clone()),
    )
    .await;
    assert_eq!(action.unwrap(), Action::requeue(Duration::from_secs(5)));

    // The Swarm controller (scaled to 0, so that it creates no member): its children and its own
    // status, no operator key, no chain.
    let mut scaled_down = swarm.clone();
    scaled_down.spec.replicas = 0;
    let (client, server) = mock_client();
    let answer = scaled_down.clone();
    let action = run(
        server,
        |mut server| async move {
            expect_children(&mut server).await;
            let status = answer_status(server.apply(SWARM_STATUS).await, &answer);
            assert!(status.get("ledger").is_none(), "{status:#}");
            assert!(
                status["conditions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|c| c["type"] != "LedgerReady"),
                "{status:#}"
            );
            server
        },
        swarm::reconcile(context(client), scaled_down),
    )
    .await;
    assert_eq!(action.unwrap(), Action::requeue(Duration::from_secs(300)));

    // The member controller: its pod and its readiness; registration is not its business.
    let pod = running_pod(&swarm, &member);
    let (client, server) = mock_client();
    let (answer, identity, member_answer) = (
        swarm.clone(),
        secret("demo-0-identity", &key),
        member.clone(),
    );
    let action = run(
        server,
        |mut server| async move {
            server.get(SWARM).await.ok_with(&answer);
            server.get(IDENTITY_SECRET).await.ok_with(&identity);
            server.get(POD).await.ok_with(&pod);
            let status = answer_status(server.apply(MEMBER_STATUS).await, &member_answer);
            assert_eq!(condition(&status, "Ready").0, "True");
            assert_eq!(status["conditions"].as_array().unwrap().len(), 1);
            server
        },
        member::reconcile(context(client), member),
    )
    .await;
    assert_eq!(action.unwrap(), Action::requeue(Duration::from_secs(300)));
}

/// A missing operator key Secret is reported on the Swarm, not retried as an error.
#[tokio::test]
async fn missing_operator_key_is_a_condition() {
    let mut swarm = ledger_swarm(
        0,
        "http://127.0.0.1:1",
        json!({"deploy": {}}),
        SignedDuration::from_secs(5),
    );
    swarm.metadata.finalizers = Some(vec![SWARM_FINALIZER.into()]);
    let (client, server) = mock_client();
    let answer = swarm.clone();
    let action = run(
        server,
        |mut server| async move {
            server.get(MEMBERS).await.ok(&list(&[]));
            server.get(OPERATOR_SECRET).await.not_found();
            let status = answer_status(ledger_apply(&mut server, SWARM_STATUS).await, &answer);
            let (ready, reason, message) = condition(&status, "LedgerReady");
            assert_eq!((ready, reason), ("False", "OperatorKeyMissing"));
            assert!(message.contains("research/ledger-operator"), "{message}");
            server.event(NS, "Warning", "OperatorKeyMissing").await;
            server
        },
        ledger::reconcile(context(client), swarm),
    )
    .await;
    assert_eq!(action.unwrap(), Action::requeue(Duration::from_secs(5)));
}

/// A replica whose Lease renewals fail touches neither the chain nor the API.
#[tokio::test]
async fn only_the_lease_holder_works_on_the_ledger() {
    let swarm = ledger_swarm(
        0,
        "http://127.0.0.1:1",
        json!({"deploy": {}}),
        SignedDuration::from_secs(5),
    );
    let (client, server) = mock_client();
    let ctx = Arc::new(
        new_context(client).with_leader_flag(Arc::new(std::sync::atomic::AtomicBool::new(false))),
    );
    let action = run(
        server,
        |server| async move { server },
        ledger::reconcile(ctx, swarm),
    )
    .await;
    assert_eq!(action.unwrap(), Action::requeue(Duration::from_secs(5)));
}

fn requeue_secs(action: &Action) -> f64 {
    // `Action` keeps its delay private; its Debug output is the only way to read it back.
    let text = format!("{action:?}");
    let start = text.find("Some(").unwrap() + "Some(".len();
    let inner = &text[start..text[start..].find(')').unwrap() + start];
    match inner.strip_suffix("ms") {
        Some(ms) => ms.parse::<f64>().unwrap() / 1000.0,
        None => inner.strip_suffix('s').unwrap().parse().unwrap(),
    }
}

/// Deleting a Swarm with a ledger: its members are deleted first (each deregisters through its own
/// finalizer); once none is left, the Swarm's finalizer goes.
#[tokio::test]
async fn deleted_swarm_waits_for_its_members_to_leave() {
    let mut swarm = ledger_swarm(
        1,
        "http://127.0.0.1:1",
        json!({"deploy": {}}),
        SignedDuration::from_secs(5),
    );
    swarm.metadata.finalizers = Some(vec![SWARM_FINALIZER.into()]);
    swarm.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
    let member = member_object(&swarm, json!({"phase": "Running"}), true);
    let list = |items: Vec<SwarmMember>| {
        json!({
            "apiVersion": "rlswarm.dev/v1alpha1", "kind": "SwarmMemberList",
            "metadata": {"resourceVersion": "300"}, "items": items,
        })
    };
    let (client, server) = mock_client();
    let ctx = context(client);
    let (members, gone) = (list(vec![member.clone()]), member.clone());
    let action = run(
        server,
        |mut server| async move {
            server.get(MEMBERS).await.ok(&members);
            let delete = server.expect(Method::DELETE, MEMBER).await;
            assert_eq!(delete.body["propagationPolicy"], "Background");
            let mut deleting = serde_json::to_value(&gone).unwrap();
            deleting["metadata"]["deletionTimestamp"] = json!("2025-01-01T00:00:00Z");
            delete.ok(&deleting);
            server
        },
        swarm::reconcile(ctx.clone(), swarm.clone()),
    )
    .await;
    assert_eq!(action.unwrap(), Action::requeue(Duration::from_secs(5)));

    let (client, server) = mock_client();
    let ctx = context(client);
    let (empty, object) = (list(vec![]), serde_json::to_value(&swarm).unwrap());
    let action = run(
        server,
        |mut server| async move {
            server.get(MEMBERS).await.ok(&empty);
            expect_finalizers(&mut server, SWARM, &object, json!([])).await;
            server
        },
        swarm::reconcile(ctx.clone(), swarm),
    )
    .await;
    assert_eq!(action.unwrap(), Action::await_change());
}
