//! Ledger flows of both controllers: the Kubernetes API is the scripted server of the reconcile
//! (every request asserted in order), the chain a real anvil, so contract deployment, funding,
//! registration, round advancing and deregistration are real transactions.

#![allow(clippy::unwrap_used, clippy::expect_used)]

// Shared with the reconcile scenarios; these need only part.
#[path = "support/chain.rs"]
mod chain;
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
use swarm_operator::api::{Swarm, SwarmMember};
use swarm_operator::build::{PodSettings, build_member, build_member_pod};
use swarm_operator::controller::{Context, member, swarm};
use swarm_operator::ledger::deployment_salt;

use chain::{CHAIN_ID, Chain, closed_port};
use support::fixtures::{
    CONFIG_MAP, DEFAULT_IMAGE, KEY, MEMBERS, NS, PVC, SERVICE, SWARM, SWARM_STATUS, answer_status,
    condition, new_context, swarm_object,
};
use support::{ApiServer, mock_client, run};

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

/// `research/demo` with a ledger at `rpc_url`, created `age` ago with 10 s rounds.
fn ledger_swarm(replicas: i32, rpc_url: &str, contract: Value, age: SignedDuration) -> Swarm {
    let mut swarm = swarm_object(replicas);
    swarm.metadata.creation_timestamp = Some(Time(Timestamp::now() - age));
    swarm.spec.rounds = serde_json::from_value(json!({"durationSeconds": 10})).unwrap();
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

/// The Swarm controller's Kubernetes requests before it turns to the ledger (no members).
async fn expect_children(server: &mut ApiServer) {
    server.get(PVC).await.ok(&json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "models", "namespace": NS},
    }));
    server.get(MEMBERS).await.ok(&json!({
        "apiVersion": "rlswarm.dev/v1alpha1", "kind": "SwarmMemberList",
        "metadata": {"resourceVersion": "300"}, "items": [],
    }));
    for path in [SERVICE, CONFIG_MAP] {
        server.apply(path).await.applied();
    }
}

fn assert_no_key(text: &str, keys: &[String]) {
    for key in keys {
        assert!(!text.contains(key), "a private key leaked into {text}");
    }
}

/// The whole lifecycle on a real chain: deploy, connect and advance rounds, fund and register a
/// member, register nothing twice (also when the status was lost), deregister it when scaled away.
#[tokio::test]
async fn swarm_and_member_lifecycle_on_a_real_chain() {
    let chain = Chain::start();
    let operator = MemberKey::generate();
    let operator_account: Address = operator.address().parse().unwrap();
    chain.fund(operator_account).await;
    let member_key = MemberKey::from_hex(KEY).unwrap();
    let member_account: Address = member_key.address().parse().unwrap();
    let operator_secret = secret("ledger-operator", &operator);

    // 1. A new Swarm asking for a contract: finalizer, deployment, address in status, Event.
    let swarm0 = ledger_swarm(
        0,
        &chain.url(),
        json!({"deploy": {}}),
        SignedDuration::from_secs(25),
    );
    let (client, server) = mock_client();
    let ctx = context(client);
    let (answer, op_secret, keys, url) = (
        swarm0.clone(),
        operator_secret.clone(),
        vec![operator.secret_data()],
        chain.url(),
    );
    let written = support::Captured::default();
    let keep = written.clone();
    let action = run(
        server,
        |mut server| async move {
            let object = serde_json::to_value(&answer).unwrap();
            expect_finalizers(&mut server, SWARM, &object, json!([SWARM_FINALIZER])).await;
            expect_children(&mut server).await;
            server.get(OPERATOR_SECRET).await.ok_with(&op_secret);
            let apply = server.apply(SWARM_STATUS).await;
            assert_no_key(&apply.body.to_string(), &keys);
            let status = answer_status(apply, &answer);
            let (ready, reason, message) = condition(&status, "LedgerReady");
            assert_eq!((ready, reason), ("True", "ContractDeployed"));
            assert!(message.contains(&format!("through {url}")), "{message}");
            let event = server.event(NS, "Normal", "ContractDeployed").await;
            assert_no_key(&event.to_string(), &keys);
            keep.set(status);
            server
        },
        swarm::reconcile(ctx.clone(), swarm0.clone()),
    )
    .await;
    assert_eq!(action.unwrap(), Action::requeue(Duration::from_secs(1)));
    let status = written.get();
    let contract: Address = status["ledger"]["contractAddress"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(status["ledger"]["operatorAccount"], operator.address());
    let nonce_after_deploy = chain.nonce(operator_account).await;

    // 2. The next pass connects to that contract (never deploys again) and catches the round up:
    //    created 25 s ago with 10 s rounds, the ledger must be at round 2.
    let mut swarm1 = swarm0.clone();
    swarm1.metadata.finalizers = Some(vec![SWARM_FINALIZER.into()]);
    swarm1.status = Some(serde_json::from_value(status).unwrap());
    let (client, server) = mock_client();
    let ctx = context(client);
    let (answer, op_secret) = (swarm1.clone(), operator_secret.clone());
    let action = run(
        server,
        |mut server| async move {
            expect_children(&mut server).await;
            server.get(OPERATOR_SECRET).await.ok_with(&op_secret);
            let status = answer_status(server.apply(SWARM_STATUS).await, &answer);
            assert_eq!(condition(&status, "LedgerReady").1, "Connected");
            assert_eq!(status["ledger"]["round"], 2);
            assert_eq!(
                status["ledger"]["contractAddress"],
                contract.to_checksum(None)
            );
            server
        },
        swarm::reconcile(ctx.clone(), swarm1.clone()),
    )
    .await;
    let wait = requeue_secs(&action.unwrap());
    assert!(
        (1.0..=10.0).contains(&wait),
        "back for the next round: {wait}"
    );
    assert_eq!(
        chain.nonce(operator_account).await,
        nonce_after_deploy + 2,
        "two advances, no second deployment"
    );
    let mut swarm2 = swarm1.clone();
    swarm2.status.as_mut().unwrap().ledger = Some(swarm_operator::api::SwarmLedgerStatus {
        contract_address: Some(contract.to_checksum(None)),
        operator_account: Some(operator.address()),
        round: Some(2),
    });

    // 3. The member: finalizer, funding, registration, all recorded in its status.
    let member0 = member_object(&swarm2, json!({"phase": "Running"}), false);
    let pod = running_pod(&swarm2, &member0);
    let written = support::Captured::default();
    let keep = written.clone();
    let (client, server) = mock_client();
    let ctx = context(client);
    let (answer, op_secret, identity, pod_answer, member_answer) = (
        swarm2.clone(),
        operator_secret.clone(),
        secret("demo-0-identity", &member_key),
        pod.clone(),
        member0.clone(),
    );
    let keys = vec![operator.secret_data(), member_key.secret_data()];
    let action = run(
        server,
        |mut server| async move {
            server.get(SWARM).await.ok_with(&answer);
            server.get(IDENTITY_SECRET).await.ok_with(&identity);
            server.get(POD).await.ok_with(&pod_answer);
            let object = serde_json::to_value(&member_answer).unwrap();
            expect_finalizers(&mut server, MEMBER, &object, json!([MEMBER_FINALIZER])).await;
            server.get(OPERATOR_SECRET).await.ok_with(&op_secret);
            let apply = server.apply(MEMBER_STATUS).await;
            assert_no_key(&apply.body.to_string(), &keys);
            let status = answer_status(apply, &member_answer);
            assert_eq!(condition(&status, "Ready").0, "True");
            let (registered, reason, message) = condition(&status, "Registered");
            assert_eq!((registered, reason), ("True", "Registered"));
            let ledger = &status["ledger"];
            let tx = ledger["registrationTransaction"].as_str().unwrap();
            assert!(message.contains(tx), "{message}");
            assert!(
                ledger["fundingTransaction"]
                    .as_str()
                    .unwrap()
                    .starts_with("0x")
            );
            assert_eq!(ledger["contractAddress"], contract.to_checksum(None));
            keep.set(status);
            server
        },
        member::reconcile(ctx.clone(), member0.clone()),
    )
    .await;
    assert_eq!(action.unwrap(), Action::requeue(Duration::from_secs(300)));
    assert_eq!(
        chain.balance(member_account).await,
        parse_ether("0.5").unwrap()
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

    // 4. Reconciled again: the status says registered, so the chain is not even asked.
    let member1 = member_object(&swarm2, written.get(), true);
    let (client, server) = mock_client();
    let ctx = context(client);
    let (answer, identity, pod_answer) = (
        swarm2.clone(),
        secret("demo-0-identity", &member_key),
        pod.clone(),
    );
    run(
        server,
        |mut server| async move {
            server.get(SWARM).await.ok_with(&answer);
            server.get(IDENTITY_SECRET).await.ok_with(&identity);
            server.get(POD).await.ok_with(&pod_answer);
            server
        },
        member::reconcile(ctx.clone(), member1.clone()),
    )
    .await
    .unwrap();

    // 5. Status lost (e.g. restored without it): the chain already has everything, nothing is sent.
    let member_lost = member_object(&swarm2, json!({"phase": "Running"}), true);
    let (client, server) = mock_client();
    let ctx = context(client);
    let (answer, op_secret, identity, pod_answer, member_answer) = (
        swarm2.clone(),
        operator_secret.clone(),
        secret("demo-0-identity", &member_key),
        pod.clone(),
        member_lost.clone(),
    );
    run(
        server,
        |mut server| async move {
            server.get(SWARM).await.ok_with(&answer);
            server.get(IDENTITY_SECRET).await.ok_with(&identity);
            server.get(POD).await.ok_with(&pod_answer);
            server.get(OPERATOR_SECRET).await.ok_with(&op_secret);
            let status = answer_status(server.apply(MEMBER_STATUS).await, &member_answer);
            let (registered, _, message) = condition(&status, "Registered");
            assert_eq!(registered, "True");
            assert!(message.contains("already registered"), "{message}");
            assert!(status["ledger"].get("registrationTransaction").is_none());
            assert!(status["ledger"].get("fundingTransaction").is_none());
            server
        },
        member::reconcile(ctx.clone(), member_lost),
    )
    .await
    .unwrap();
    assert_eq!(
        chain.nonce(operator_account).await,
        nonce_after_registration,
        "a re-run sends no transaction"
    );

    // 5b. The member records rewards for two rounds; the Swarm's next pass shows its latest round
    //     and rewards in the member's status, under the progress field manager, with one read of
    //     the chain's logs.
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
    let mut swarm_one = swarm2.clone();
    swarm_one.spec.replicas = 1;
    let (client, server) = mock_client();
    let ctx = context(client);
    let (answer, op_secret, listed) = (
        swarm_one.clone(),
        operator_secret.clone(),
        serde_json::to_value(&member1).unwrap(),
    );
    run(
        server,
        |mut server| async move {
            server.get(PVC).await.ok(&json!({
                "apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": {"name": "models", "namespace": NS},
            }));
            server.get(MEMBERS).await.ok(&json!({
                "apiVersion": "rlswarm.dev/v1alpha1", "kind": "SwarmMemberList",
                "metadata": {"resourceVersion": "300"}, "items": [listed.clone()],
            }));
            for path in [SERVICE, CONFIG_MAP] {
                server.apply(path).await.applied();
            }
            server.get(OPERATOR_SECRET).await.ok_with(&op_secret);
            answer_status(server.apply(SWARM_STATUS).await, &answer);
            let progress = server.expect(Method::PATCH, MEMBER_STATUS).await;
            assert_eq!(
                progress.query("fieldManager"),
                Some(swarm_operator::api::PROGRESS_FIELD_MANAGER)
            );
            assert_eq!(
                progress.body["status"],
                json!({"round": 1, "lastReward": 0.5, "totalReward": 0.75})
            );
            progress.ok(&listed);
            server
        },
        swarm::reconcile(ctx.clone(), swarm_one),
    )
    .await
    .unwrap();

    // 6. Scaled away (replicas 0): the member leaves the ledger, then its finalizer goes.
    let mut leaving = member1;
    leaving.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
    leaving.status.as_mut().unwrap().address = Some(member_key.address());
    let (client, server) = mock_client();
    let ctx = context(client);
    let (answer, op_secret, member_answer, address) = (
        swarm2.clone(),
        operator_secret.clone(),
        serde_json::to_value(&leaving).unwrap(),
        member_key.address(),
    );
    let action = run(
        server,
        |mut server| async move {
            server.get(SWARM).await.ok_with(&answer);
            server.get(OPERATOR_SECRET).await.ok_with(&op_secret);
            let event = server.event(NS, "Normal", "Deregistered").await;
            assert!(event["note"].as_str().unwrap().contains(&address));
            expect_finalizers(&mut server, MEMBER, &member_answer, json!([])).await;
            server
        },
        member::reconcile(ctx.clone(), leaving),
    )
    .await;
    assert_eq!(action.unwrap(), Action::await_change());
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
    let swarm0 = ledger_swarm(
        0,
        &chain.url(),
        json!({"deploy": {}}),
        SignedDuration::from_secs(25),
    );
    let expected = deterministic_address(operator_account, deployment_salt(&swarm0));

    // 1. The deployment goes through; writing its address into the status fails.
    let (client, server) = mock_client();
    let (answer, op_secret) = (swarm0.clone(), operator_secret.clone());
    let result = run(
        server,
        |mut server| async move {
            let object = serde_json::to_value(&answer).unwrap();
            expect_finalizers(&mut server, SWARM, &object, json!([SWARM_FINALIZER])).await;
            expect_children(&mut server).await;
            server.get(OPERATOR_SECRET).await.ok_with(&op_secret);
            server.apply(SWARM_STATUS).await.failure(
                http::StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                "etcdserver: request timed out",
            );
            server
        },
        swarm::reconcile(context(client), swarm0.clone()),
    )
    .await;
    assert!(
        result.is_err(),
        "the failed status write is an error to retry"
    );
    assert_eq!(
        chain.nonce(operator_account).await,
        1,
        "one deployment sent"
    );

    // 2. The next pass, on a Swarm whose status has no contract, finds the deployed one.
    let mut swarm1 = swarm0.clone();
    swarm1.metadata.finalizers = Some(vec![SWARM_FINALIZER.into()]);
    let (client, server) = mock_client();
    let (answer, op_secret) = (swarm1.clone(), operator_secret.clone());
    let action = run(
        server,
        |mut server| async move {
            expect_children(&mut server).await;
            server.get(OPERATOR_SECRET).await.ok_with(&op_secret);
            let status = answer_status(server.apply(SWARM_STATUS).await, &answer);
            assert_eq!(condition(&status, "LedgerReady").1, "Connected");
            assert_eq!(
                status["ledger"]["contractAddress"],
                expected.to_checksum(None)
            );
            assert_eq!(status["ledger"]["round"], 2);
            server
        },
        swarm::reconcile(context(client), swarm1.clone()),
    )
    .await;
    action.unwrap();
    assert_eq!(
        chain.nonce(operator_account).await,
        1 + 2,
        "the deployment and two round advances: no second deployment"
    );
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

/// An RPC endpoint that does not answer: the Swarm says so (without the URL's API key) and comes
/// back soon; a member's registration waits with its own condition, and nothing crashes.
#[tokio::test]
async fn unreachable_rpc_is_a_condition_and_a_retry() {
    let url = format!("http://127.0.0.1:{}/v3/sekrit-api-key", closed_port());
    let contract = "0x5FbDB2315678afecb367f032d93F642f64180aa3";
    let mut swarm = ledger_swarm(
        0,
        &url,
        json!({"address": contract}),
        SignedDuration::from_secs(5),
    );
    swarm.metadata.finalizers = Some(vec![SWARM_FINALIZER.into()]);
    let operator_secret = secret("ledger-operator", &MemberKey::generate());
    let (client, server) = mock_client();
    let ctx = context(client);
    let (answer, op_secret) = (swarm.clone(), operator_secret.clone());
    let action = run(
        server,
        |mut server| async move {
            expect_children(&mut server).await;
            server.get(OPERATOR_SECRET).await.ok_with(&op_secret);
            let status = answer_status(server.apply(SWARM_STATUS).await, &answer);
            let (ready, reason, message) = condition(&status, "LedgerReady");
            assert_eq!((ready, reason), ("False", "RpcUnreachable"));
            assert!(!message.contains("sekrit"), "the API key leaked: {message}");
            assert!(message.contains("127.0.0.1"), "{message}");
            let event = server.event(NS, "Warning", "RpcUnreachable").await;
            assert!(!event.to_string().contains("sekrit"));
            server
        },
        swarm::reconcile(ctx.clone(), swarm.clone()),
    )
    .await;
    assert_eq!(action.unwrap(), Action::requeue(Duration::from_secs(5)));

    // The member keeps its pod and says why it is not registered yet; it is retried.
    let member = member_object(&swarm, json!({"phase": "Running"}), true);
    let pod = running_pod(&swarm, &member);
    let key = MemberKey::from_hex(KEY).unwrap();
    let (client, server) = mock_client();
    let ctx = context(client);
    let (answer, identity, member_answer, op_secret) = (
        swarm.clone(),
        secret("demo-0-identity", &key),
        member.clone(),
        operator_secret,
    );
    let action = run(
        server,
        |mut server| async move {
            server.get(SWARM).await.ok_with(&answer);
            server.get(IDENTITY_SECRET).await.ok_with(&identity);
            server.get(POD).await.ok_with(&pod);
            server.get(OPERATOR_SECRET).await.ok_with(&op_secret);
            let status = answer_status(server.apply(MEMBER_STATUS).await, &member_answer);
            let (registered, reason, message) = condition(&status, "Registered");
            assert_eq!((registered, reason), ("False", "RpcUnreachable"));
            assert!(!message.contains("sekrit"), "{message}");
            assert_eq!(condition(&status, "Ready").0, "True");
            server
        },
        member::reconcile(ctx.clone(), member),
    )
    .await;
    assert_eq!(action.unwrap(), Action::requeue(Duration::from_secs(5)));
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
    let ctx = context(client);
    let answer = swarm.clone();
    let action = run(
        server,
        |mut server| async move {
            expect_children(&mut server).await;
            server.get(OPERATOR_SECRET).await.not_found();
            let status = answer_status(server.apply(SWARM_STATUS).await, &answer);
            let (ready, reason, message) = condition(&status, "LedgerReady");
            assert_eq!((ready, reason), ("False", "OperatorKeyMissing"));
            assert!(message.contains("research/ledger-operator"), "{message}");
            server.event(NS, "Warning", "OperatorKeyMissing").await;
            server
        },
        swarm::reconcile(ctx.clone(), swarm),
    )
    .await;
    assert_eq!(action.unwrap(), Action::requeue(Duration::from_secs(5)));
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
