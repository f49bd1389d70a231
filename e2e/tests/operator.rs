//! The operator against a real API server, scheduler and garbage collector: each scenario installs
//! the chart into a fresh namespace and runs the operator under the chart's ServiceAccount.
//! The GPU nodes are shared, so the scenarios run one at a time (`--test-threads=1`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Secret, Service};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{Client, ResourceExt};
use swarm_e2e::*;
use swarm_node_config::{CONFIG_FILE, NodeConfig};
use swarm_operator::api::{MemberPhase, Swarm, SwarmMember, SwarmPhase};

fn swarm_yaml(name: &str, replicas: u32, gpus: u32) -> String {
    format!(
        r#"apiVersion: rlswarm.dev/v1alpha1
kind: Swarm
metadata:
  name: {name}
spec:
  replicas: {replicas}
  member:
    resources:
      gpus: {gpus}
  model:
    source:
      hub:
        id: Qwen/Qwen2.5-0.5B-Instruct
"#
    )
}

#[tokio::test]
async fn examples_run_as_members_with_identities_on_gpu_nodes() {
    let env = Env::from_env();
    let examples = std::fs::read_dir(env.root.join("examples")).unwrap();
    for example in examples {
        let path = example.unwrap().path();
        let swarm: Swarm =
            serde_yaml_ng::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let name = swarm.name_any();
        let replicas = swarm.spec.replicas;
        let wants_gpus = swarm.spec.member.resources.gpus.unwrap_or(0) > 0;

        let f = Fixture::new("example", &[]).await;
        let operator = f.operator("operator", None);
        f.apply_file(&path.to_string_lossy());
        let ready = f.wait_ready(&name, replicas, &[&operator]).await;

        // Every member: an immutable identity Secret whose key gives the PeerId in its status.
        let secrets = f.api::<Secret>();
        let members = f.members().await;
        let mut peers = BTreeSet::new();
        for member in &members {
            let status = member.status.as_ref().unwrap();
            assert_eq!(status.phase, Some(MemberPhase::Running));
            let secret = secrets.get(&member.identity_secret_name()).await.unwrap();
            assert_eq!(secret.immutable, Some(true));
            let key = swarm_identity::MemberKey::from_secret_data(
                &secret.data.as_ref().unwrap()[swarm_identity::PRIVATE_KEY_FILE].0,
            )
            .unwrap();
            assert_eq!(
                status.peer_id.as_deref(),
                Some(key.peer_id_string().as_str())
            );
            assert_eq!(status.address.as_deref(), Some(key.address().as_str()));
            peers.insert(key.peer_id_string());
        }
        assert_eq!(peers.len(), members.len(), "identities are distinct");

        // The headless Service and the node config with every member's multiaddr.
        let service = f
            .api::<Service>()
            .get(&format!("{name}-peers"))
            .await
            .unwrap();
        let spec = service.spec.unwrap();
        assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
        assert_eq!(spec.publish_not_ready_addresses, Some(true));
        let config_map = f
            .api::<ConfigMap>()
            .get(&format!("{name}-config"))
            .await
            .unwrap();
        let config =
            NodeConfig::from_yaml(&config_map.data.unwrap()[CONFIG_FILE], "configmap").unwrap();
        assert_eq!(config.p2p.bootstrap_peers.len(), replicas as usize);
        assert_eq!(
            ready.status.unwrap().bootstrap_peers,
            config.p2p.bootstrap_peers
        );
        for peer in &peers {
            assert!(
                config
                    .p2p
                    .bootstrap_peers
                    .iter()
                    .any(|a| a.ends_with(peer.as_str()))
            );
        }

        // Pods are bound by the scheduler; GPU members land on GPU nodes only.
        let nodes = Api::<Node>::all(f.client.clone());
        for pod in f.api::<Pod>().list(&ListParams::default()).await.unwrap() {
            let node_name = pod.spec.as_ref().unwrap().node_name.clone().unwrap();
            let node = nodes.get(&node_name).await.unwrap();
            let has_gpus = node
                .labels()
                .get("nvidia.com/gpu.present")
                .is_some_and(|v| v == "true");
            if wants_gpus {
                assert!(has_gpus, "GPU pod {} on {node_name}", pod.name_any());
            }
        }
    }
}

#[tokio::test]
async fn kubectl_scale_adds_and_removes_the_highest_members_keeping_identities() {
    let f = Fixture::new("scale", &[]).await;
    let operator = f.operator("operator", None);
    f.apply_yaml(&swarm_yaml("scaled", 2, 1));
    f.wait_ready("scaled", 2, &[&operator]).await;

    f.scale("scaled", 4);
    f.wait_ready("scaled", 4, &[&operator]).await;
    let before = f.peer_ids().await;

    f.scale("scaled", 1);
    f.wait_ready("scaled", 1, &[&operator]).await;
    let left: Vec<String> = f.members().await.iter().map(|m| m.name_any()).collect();
    assert_eq!(left, ["scaled-0"]);
    // Identities outlive scale-down.
    let secrets = f.api::<Secret>();
    for ordinal in 1..4 {
        secrets
            .get(&format!("scaled-{ordinal}-identity"))
            .await
            .unwrap();
    }

    f.scale("scaled", 4);
    f.wait_ready("scaled", 4, &[&operator]).await;
    assert_eq!(
        f.peer_ids().await,
        before,
        "members came back with their identities"
    );
}

#[tokio::test]
async fn deleted_member_and_deleted_pod_come_back_with_the_same_identity() {
    let f = Fixture::new("replace", &[]).await;
    let operator = f.operator("operator", None);
    f.apply_yaml(&swarm_yaml("healing", 3, 1));
    f.wait_ready("healing", 3, &[&operator]).await;
    let before = f.peer_ids().await;

    let members = f.api::<SwarmMember>();
    let old_uid = members.get("healing-1").await.unwrap().metadata.uid;
    members
        .delete("healing-1", &DeleteParams::default())
        .await
        .unwrap();
    f.wait_replaced(&members, "healing-1", old_uid, &[&operator])
        .await;
    f.wait_ready("healing", 3, &[&operator]).await;

    let pods = f.api::<Pod>();
    let old_pod = pods.get("healing-2").await.unwrap().metadata.uid;
    pods.delete("healing-2", &DeleteParams::default())
        .await
        .unwrap();
    f.wait_replaced(&pods, "healing-2", old_pod, &[&operator])
        .await;
    f.wait_ready("healing", 3, &[&operator]).await;
    let restarted = members.get("healing-2").await.unwrap().status.unwrap();
    assert_eq!(restarted.restarts, 1);
    assert_eq!(f.peer_ids().await, before);
}

/// Free `nvidia.com/gpu` on schedulable-for-us nodes, counting pods bound anywhere in the cluster.
async fn free_gpus(client: &Client) -> Result<i64, String> {
    let gpu = |q: Option<&k8s_openapi::apimachinery::pkg::api::resource::Quantity>| {
        q.and_then(|q| q.0.parse::<i64>().ok()).unwrap_or(0)
    };
    let nodes = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|e| e.to_string())?;
    let total: i64 = nodes
        .iter()
        .map(|n| {
            gpu(n
                .status
                .as_ref()
                .and_then(|s| s.allocatable.as_ref())
                .and_then(|a| a.get("nvidia.com/gpu")))
        })
        .sum();
    let pods = Api::<Pod>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|e| e.to_string())?;
    let used: i64 = pods
        .iter()
        .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some())
        .flat_map(|p| p.spec.as_ref().unwrap().containers.iter())
        .map(|c| {
            gpu(c
                .resources
                .as_ref()
                .and_then(|r| r.limits.as_ref())
                .and_then(|l| l.get("nvidia.com/gpu")))
        })
        .sum();
    Ok(total - used)
}

#[tokio::test]
async fn members_beyond_the_cluster_gpus_stay_pending_and_say_why() {
    let f = Fixture::new("gpus", &[]).await;
    // Earlier scenarios' namespaces are deleted asynchronously; start from an idle cluster.
    let free = wait_for(
        &f.env,
        &f.ns.name,
        &[],
        "the GPUs of earlier scenarios to be released",
        SETTLE,
        || async {
            let free = free_gpus(&f.client).await?;
            if free >= 40 {
                Ok(free)
            } else {
                Err(format!("{free} GPUs free"))
            }
        },
    )
    .await;
    let per_member = 8;
    let fitting = (free / per_member) as usize;
    let replicas = fitting + 2;
    let operator = f.operator("operator", None);
    f.apply_yaml(&swarm_yaml("greedy", replicas as u32, per_member as u32));

    let swarms = f.api::<Swarm>();
    let status = wait_for(
        &f.env,
        &f.ns.name,
        &[&operator],
        "the surplus members to be reported Pending",
        SETTLE,
        || async {
            let status = swarms
                .get("greedy")
                .await
                .map_err(|e| e.to_string())?
                .status
                .ok_or("no status")?;
            let members = f.members().await;
            let pending: Vec<String> = members
                .iter()
                .filter(|m| {
                    m.status.as_ref().is_some_and(|s| {
                        s.phase == Some(MemberPhase::Pending)
                            && s.message
                                .as_deref()
                                .is_some_and(|m| m.contains("Insufficient nvidia.com/gpu"))
                    })
                })
                .map(|m| m.name_any())
                .collect();
            if status.ready_replicas == fitting as i32
                && pending.len() == 2
                && status.phase == Some(SwarmPhase::Degraded)
            {
                Ok(status)
            } else {
                Err(format!(
                    "ready={} pending={pending:?} phase={:?}",
                    status.ready_replicas, status.phase
                ))
            }
        },
    )
    .await;
    let degraded = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Degraded")
        .unwrap();
    assert_eq!(degraded.status, "True");
    assert!(
        degraded.message.contains("Insufficient nvidia.com/gpu"),
        "{}",
        degraded.message
    );
    let available = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Available")
        .unwrap();
    assert_eq!(available.status, "False");
}

#[tokio::test]
async fn deleting_the_swarm_lets_the_garbage_collector_remove_everything() {
    let f = Fixture::new("gc", &[]).await;
    let operator = f.operator("operator", None);
    f.apply_yaml(&swarm_yaml("doomed", 3, 1));
    f.wait_ready("doomed", 3, &[&operator]).await;

    f.api::<Swarm>()
        .delete("doomed", &DeleteParams::foreground())
        .await
        .unwrap();
    let selector = ListParams::default().labels("rlswarm.dev/swarm=doomed");
    wait_for(
        &f.env,
        &f.ns.name,
        &[&operator],
        "every child of the Swarm to be collected",
        SETTLE,
        || async {
            let left: Vec<String> = [
                ("members", f.count::<SwarmMember>(&selector).await?),
                ("pods", f.count::<Pod>(&selector).await?),
                ("secrets", f.count::<Secret>(&selector).await?),
                ("services", f.count::<Service>(&selector).await?),
                ("configmaps", f.count::<ConfigMap>(&selector).await?),
            ]
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .map(|(kind, n)| format!("{n} {kind}"))
            .collect();
            if left.is_empty() {
                Ok(())
            } else {
                Err(left.join(", "))
            }
        },
    )
    .await;
}

#[tokio::test]
async fn operator_killed_mid_scale_up_converges_without_duplicates() {
    let f = Fixture::new("crash", &[]).await;
    let mut first = f.operator("first", None);
    f.apply_yaml(&swarm_yaml("bumpy", 1, 1));
    f.wait_ready("bumpy", 1, &[&first]).await;

    f.scale("bumpy", 24);
    wait_for(
        &f.env,
        &f.ns.name,
        &[&first],
        "the scale-up to be under way",
        SETTLE,
        || async {
            let n = f.members().await.len();
            if n > 1 { Ok(()) } else { Err(n) }
        },
    )
    .await;
    first.kill();

    let second = f.operator("second", None);
    f.wait_ready("bumpy", 24, &[&second]).await;
    let secrets = f
        .api::<Secret>()
        .list(&ListParams::default().labels("rlswarm.dev/swarm=bumpy"))
        .await
        .unwrap()
        .items;
    assert_eq!(secrets.len(), 24, "one identity per member");
    let peers: BTreeSet<String> = f.peer_ids().await.into_iter().map(|(_, p)| p).collect();
    assert_eq!(peers.len(), 24, "no two members share an identity");
}

#[tokio::test]
async fn only_the_lease_holder_writes() {
    let f = Fixture::new("leader", &["--set", "leaderElection.enabled=true"]).await;
    let a = f.operator("replica-a", Some("swarm-operator"));
    wait_for(
        &f.env,
        &f.ns.name,
        &[&a],
        "replica-a to lead",
        SETTLE,
        || async {
            lease_holder(&f)
                .await
                .filter(|h| h == "replica-a")
                .ok_or("no holder yet")
        },
    )
    .await;
    let b = f.operator("replica-b", Some("swarm-operator"));
    f.apply_yaml(&swarm_yaml("led", 2, 1));
    f.wait_ready("led", 2, &[&a, &b]).await;

    let standby = wait_for(
        &f.env,
        &f.ns.name,
        &[&b],
        "replica-b to serve metrics",
        SETTLE,
        || async { b.metrics().await.ok_or("not serving") },
    )
    .await;
    assert!(
        !standby.contains("swarm_operator_reconciliations_total"),
        "the standby reconciled:\n{standby}"
    );
    let leader = a.metrics().await.unwrap();
    assert!(
        leader.contains("swarm_operator_reconciliations_total{controller=\"swarm\"}"),
        "{leader}"
    );
    assert_eq!(lease_holder(&f).await.as_deref(), Some("replica-a"));

    drop(a);
    wait_for(
        &f.env,
        &f.ns.name,
        &[&b],
        "replica-b to take over the Lease",
        SETTLE,
        || async {
            lease_holder(&f)
                .await
                .filter(|h| h == "replica-b")
                .ok_or("replica-a still holds it")
        },
    )
    .await;
    f.scale("led", 3);
    f.wait_ready("led", 3, &[&b]).await;
}

async fn lease_holder(f: &Fixture) -> Option<String> {
    f.api::<k8s_openapi::api::coordination::v1::Lease>()
        .get_opt("swarm-operator")
        .await
        .ok()??
        .spec?
        .holder_identity
}

#[tokio::test]
async fn invalid_swarms_are_rejected_by_the_api_server_with_their_rule_messages() {
    let env = Env::from_env();
    ensure_crds(&env).await;
    let client = env.admin_client().await;
    let ns = TestNamespace::create(&env, &client, "invalid").await;
    let swarms: Api<Swarm> = Api::namespaced(client.clone(), &ns.name);
    let base: serde_json::Value = serde_yaml_ng::from_str(&swarm_yaml("valid", 1, 0)).unwrap();
    swarms
        .create(
            &PostParams {
                dry_run: true,
                ..Default::default()
            },
            &serde_json::from_value(base.clone()).unwrap(),
        )
        .await
        .expect("the base Swarm is valid");

    let cases: Vec<(&str, serde_json::Value, &str)> = vec![
        (
            "replicas",
            serde_json::json!({"spec": {"replicas": 1001}}),
            "replicas must be between 0 and 1000",
        ),
        (
            "negative replicas",
            serde_json::json!({"spec": {"replicas": -1}}),
            "replicas must be between 0 and 1000",
        ),
        (
            "G",
            serde_json::json!({"spec": {"training": {"completionsPerQuestion": 1}}}),
            "completionsPerQuestion (G) must be between 2 and 64",
        ),
        (
            "I+J",
            serde_json::json!({"spec": {"training": {"localRollouts": 0, "externalRollouts": 0}}}),
            "(I + J) must be at least 1",
        ),
        (
            "learning rate",
            serde_json::json!({"spec": {"training": {"learningRate": 0.0}}}),
            "learningRate must be greater than 0",
        ),
        (
            "clip low",
            serde_json::json!({"spec": {"training": {"clipEpsilonLow": 1.0}}}),
            "clipEpsilonLow must be between 0 and 1",
        ),
        (
            "clip high",
            serde_json::json!({"spec": {"training": {"clipEpsilonHigh": 0.0}}}),
            "clipEpsilonHigh must be between 0 and 1",
        ),
        (
            "long name",
            serde_json::json!({"metadata": {"name": "a".repeat(51)}}),
            "at most 50 characters",
        ),
        (
            "dotted name",
            serde_json::json!({"metadata": {"name": "my.swarm"}}),
            "must be a DNS label that starts with a letter",
        ),
        (
            "two model sources",
            serde_json::json!({"spec": {"model": {"source": {"pvc": {"claimName": "models"}}}}}),
            "exactly one of pvc, image or hub",
        ),
        (
            "privileged port",
            serde_json::json!({"spec": {"p2p": {"port": 80}}}),
            "p2p.port must be between 1024 and 65535",
        ),
        (
            "too many gpus",
            serde_json::json!({"spec": {"member": {"resources": {"gpus": 17}}}}),
            "gpus must be between 0 and 16",
        ),
        (
            "pull policy",
            serde_json::json!({"spec": {"member": {"imagePullPolicy": "Sometimes"}}}),
            "imagePullPolicy must be Always, IfNotPresent or Never",
        ),
        (
            "round length",
            serde_json::json!({"spec": {"rounds": {"durationSeconds": 0}}}),
            "rounds.durationSeconds must be between 1 and 86400",
        ),
        // Round sizes: each bound, and what peers would reject.
        (
            "no token budget",
            serde_json::json!({"spec": {"training": {"maxNewTokens": 0}}}),
            "maxNewTokens must be between 1 and 4096",
        ),
        (
            "absurd token budget",
            serde_json::json!({"spec": {"training": {"maxNewTokens": 1_000_000}}}),
            "maxNewTokens must be between 1 and 4096",
        ),
        (
            "a round without questions",
            serde_json::json!({"spec": {"training": {"questionsPerRound": 0, "localRollouts": 0}}}),
            "questionsPerRound must be between 1 and 256",
        ),
        (
            "more questions than a round's messages carry",
            serde_json::json!({"spec": {"training": {"questionsPerRound": 300, "maxNewTokens": 8}}}),
            "questionsPerRound must be between 1 and 256",
        ),
        (
            "G over what peers accept",
            serde_json::json!({"spec": {"training": {"completionsPerQuestion": 65}}}),
            "completionsPerQuestion (G) must be between 2 and 64",
        ),
        (
            "a group over one message",
            serde_json::json!({"spec": {"training": {"completionsPerQuestion": 16, "maxNewTokens": 4096}}}),
            "must fit one rollout message",
        ),
        (
            "a round over its messages",
            serde_json::json!({"spec": {"training": {"questionsPerRound": 64, "completionsPerQuestion": 16, "maxNewTokens": 512}}}),
            "a round's completions must fit the 8 messages",
        ),
        (
            "more local groups than questions",
            serde_json::json!({"spec": {"training": {"questionsPerRound": 4, "localRollouts": 5}}}),
            "localRollouts (I) must be at most training.questionsPerRound",
        ),
        // Knob bounds.
        (
            "learning rate above 1",
            serde_json::json!({"spec": {"training": {"learningRate": 3.0}}}),
            "learningRate must be greater than 0 and at most 1",
        ),
        (
            "temperature 0",
            serde_json::json!({"spec": {"training": {"temperature": 0.0}}}),
            "temperature must be greater than 0 and at most 10",
        ),
        (
            "difficulty 9",
            serde_json::json!({"spec": {"training": {"difficulty": 9}}}),
            "difficulty must be between 1 and 5",
        ),
        // Task mixes and question sources.
        (
            "weights all 0",
            serde_json::json!({"spec": {"training": {"tasks": [{"family": "basic_arithmetic", "weight": 0}]}}}),
            "weights are all 0",
        ),
        (
            "a family twice",
            serde_json::json!({"spec": {"training": {"tasks": [{"family": "basic_arithmetic"}, {"family": "basic_arithmetic"}]}}}),
            "lists a family more than once",
        ),
        (
            "a dataset and tasks",
            serde_json::json!({"spec": {"training": {"tasks": [{"family": "basic_arithmetic"}], "dataset": {"path": "q.jsonl"}}}}),
            "training.tasks and training.dataset are two sources of questions",
        ),
        // Kubernetes syntax.
        (
            "malformed quantity",
            serde_json::json!({"spec": {"member": {"resources": {"requests": {"cpu": "two"}}}}}),
            "member.resources.requests values must be quantities",
        ),
        (
            "empty storage size",
            serde_json::json!({"spec": {"checkpoints": {"size": "0Gi"}}}),
            "checkpoints.size must be a storage size greater than 0",
        ),
        (
            "empty image",
            serde_json::json!({"spec": {"member": {"image": ""}}}),
            "member.image must be an image reference",
        ),
        (
            "invalid environment variable name",
            serde_json::json!({"spec": {"member": {"env": [{"name": "MY VAR", "value": "1"}]}}}),
            "member.env names must be letters",
        ),
        (
            "runtime class name",
            serde_json::json!({"spec": {"member": {"runtimeClassName": "Nvidia_GPU"}}}),
            "member.runtimeClassName must name a RuntimeClass",
        ),
        (
            "malformed hub repo id",
            serde_json::json!({"spec": {"model": {"source": {"hub": {"id": "not a repo id!"}}}}}),
            "model.source.hub.id must be a hub repository id",
        ),
        (
            "hub revision with a space",
            serde_json::json!({"spec": {"model": {"source": {"hub": {"id": "Qwen/Qwen2.5-0.5B-Instruct", "revision": "main branch"}}}}}),
            "model.source.hub.revision must be a branch, tag or commit",
        ),
    ];
    for (what, patch, message) in &cases {
        let mut object = base.clone();
        merge(&mut object, patch);
        let post = |o: serde_json::Value| {
            let swarms = swarms.clone();
            async move {
                let swarm: Swarm = serde_json::from_value(o).unwrap();
                swarms.create(&PostParams::default(), &swarm).await
            }
        };
        match post(object).await {
            Err(kube::Error::Api(status)) => {
                assert_eq!(status.code, 422, "{what}: {status:?}");
                assert!(
                    status.message.contains(message),
                    "{what}: expected {message:?} in {:?}",
                    status.message
                );
            }
            other => panic!("{what}: expected a rejection, got {other:?}"),
        }
    }
    assert!(cases.len() >= 35);

    // Immutable fields, on a stored Swarm.
    let stored = swarms
        .create(
            &PostParams::default(),
            &serde_json::from_value(base.clone()).unwrap(),
        )
        .await
        .unwrap();
    for (what, patch, message) in [
        (
            "model",
            serde_json::json!({"spec": {"model": {"source": {"hub": {"id": "other/model"}}}}}),
            "model is immutable",
        ),
        (
            "G",
            serde_json::json!({"spec": {"training": {"completionsPerQuestion": 4}}}),
            "completionsPerQuestion (G) is immutable",
        ),
    ] {
        let result = swarms
            .patch(
                &stored.name_any(),
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&patch),
            )
            .await;
        match result {
            Err(kube::Error::Api(status)) => assert!(
                status.message.contains(message),
                "{what}: {:?}",
                status.message
            ),
            other => panic!("{what}: expected a rejection, got {other:?}"),
        }
    }
}

fn merge(target: &mut serde_json::Value, patch: &serde_json::Value) {
    match (target, patch) {
        (serde_json::Value::Object(t), serde_json::Value::Object(p)) => {
            for (k, v) in p {
                merge(t.entry(k.clone()).or_insert(serde_json::Value::Null), v);
            }
        }
        (t, p) => *t = p.clone(),
    }
}
