//! The whole path on real pods: helm install runs the operator as a pod of its image on the real
//! node; the real scheduler puts its member pods there, and containerd and runc run them from the
//! node image (its args, env, Secret, ConfigMap and claims, its probes); the members find each other
//! by the headless Service's DNS names, train real rounds over libp2p and record them on an anvil
//! chain, traces and metrics reaching a real OpenTelemetry Collector; then scaling, deleting a pod,
//! and a soak with faults injected.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::DeleteParams;
use swarm_e2e::containers::pod_process;
use swarm_e2e::testbed::*;
use swarm_e2e::{SETTLE, http_get};
use swarm_ledger::Address;
use swarm_operator::api::Swarm;

#[tokio::test]
async fn a_swarm_trains_on_the_ledger_scales_and_survives_a_deleted_pod() {
    let bed = Testbed::new("full").await;
    bed.f.apply_yaml(&bed.swarm_yaml(4));

    // Four members train together over libp2p and record their rounds on the chain.
    bed.wait_members(4).await;
    bed.wait_training_together(4).await;
    bed.wait_registered().await;
    let ledger = bed.ledger().await;
    for member in bed.f.members().await {
        let running = bed.instance(&member.name_any()).await.unwrap();
        let status = member.status.unwrap();
        assert_eq!(
            running.starts()[0].peer_id,
            status.peer_id.clone().unwrap(),
            "the node runs with the identity the operator generated"
        );
        let record = ledger
            .member_by_account(status.address.unwrap().parse().unwrap())
            .await
            .unwrap()
            .unwrap();
        assert!(record.reward_submissions >= 1, "{record:?}");
    }
    // `kubectl get swarmmembers` shows each member's latest recorded round and its rewards, as the
    // ledger has them.
    bed.wait(
        "every member's ROUND and REWARD columns",
        Duration::from_secs(90),
        || async {
            let table = bed.f.env.kubectl(&[
                "get",
                "swarmmembers",
                "--namespace",
                &bed.f.ns.name,
                "--no-headers",
                "-o",
                "custom-columns=NAME:.metadata.name,ROUND:.status.round,REWARD:.status.totalReward",
            ]);
            let empty: Vec<&str> = table.lines().filter(|l| l.contains("<none>")).collect();
            if table.lines().count() == 4 && empty.is_empty() {
                Ok(())
            } else {
                Err(table)
            }
        },
    )
    .await;
    for member in bed.f.members().await {
        let status = member.status.unwrap();
        let record = ledger
            .member_by_account(status.address.unwrap().parse().unwrap())
            .await
            .unwrap()
            .unwrap();
        let (round, total) = (status.round.unwrap(), status.total_reward.unwrap());
        assert!(round >= 0 && status.last_reward.is_some());
        // The ledger may have moved on since the status was written, never back.
        assert!(
            total <= swarm_ledger::unscaled_reward(record.total_reward) + 1e-9,
            "{total} shown, {:?} recorded",
            record.total_reward
        );
    }
    let swarm: Swarm = bed.f.api::<Swarm>().get(SWARM).await.unwrap();
    assert!(swarm.status.unwrap().round.is_some(), "the Swarm's ROUND");

    // The node's own /metrics, on its pod address on the bridge, agrees with what it reported.
    let first = bed.instance(&format!("{SWARM}-0")).await.unwrap();
    let admin = first.metrics_address().unwrap();
    let metrics = http_get(&admin, "/metrics")
        .await
        .expect("the node's /metrics");
    assert!(
        metrics.contains("swarm_node_peers_connected 3.0"),
        "{metrics}"
    );
    assert!(metrics.contains("swarm_node_ledger_submissions_total{outcome=\"recorded\"}"));

    // Scale to 6: the new members join the swarm and the ledger.
    bed.f.scale(SWARM, 6);
    bed.wait_members(6).await;
    bed.wait_training_together(6).await;
    bed.wait_registered().await;

    // Scale to 3: the removed members stop (their pods gone once the kubelet confirmed it) and
    // leave the ledger; the rest train on.
    bed.f.scale(SWARM, 3);
    bed.wait_members(3).await;
    bed.wait_registered().await;
    let left = pods_of(&bed.f.client, &bed.f.ns.name).await.unwrap();
    for pod in [3, 4, 5].map(|i| format!("{SWARM}-{i}")) {
        assert!(!left.contains_key(&pod), "{pod} is still there");
    }
    bed.wait_training_together(3).await;

    // A deleted pod comes back with the same identity and resumes from its checkpoint.
    let victim = format!("{SWARM}-1");
    let before = bed.instance(&victim).await.unwrap();
    let checkpointed = before
        .rounds()
        .iter()
        .filter(|r| r.checkpointed)
        .map(|r| r.round)
        .max()
        .expect("the member checkpointed");
    let last_before = before.rounds().last().unwrap().round;
    bed.f
        .api::<Pod>()
        .delete(&victim, &DeleteParams::default())
        .await
        .unwrap();
    let after = bed
        .wait(
            &format!("{victim} to run again from its checkpoint and record a round"),
            TRAINING,
            || async {
                let instance = bed.instance(&victim).await?;
                let resumed = instance.starts().first().and_then(|s| s.resumed_from);
                let recorded = instance
                    .rounds()
                    .last()
                    .is_some_and(|r| r.ledger_recorded.unwrap_or(0) >= 1);
                if instance.uid != before.uid && instance.running && resumed.is_some() && recorded {
                    Ok(instance)
                } else {
                    Err(format!(
                        "{} rounds, uid {}, resumed from {resumed:?}",
                        instance.rounds().len(),
                        instance.uid
                    ))
                }
            },
        )
        .await;
    let started = after.starts()[0].clone();
    assert_eq!(started.peer_id, before.starts()[0].peer_id);
    let resumed = started.resumed_from.unwrap();
    // On SIGTERM the node finishes the round in progress (and checkpoints it) before it stops.
    assert!(
        (checkpointed..=last_before + 1).contains(&resumed),
        "resumed from {resumed}, checkpointed {checkpointed}..={last_before} before the deletion"
    );
    assert!(after.rounds().iter().all(|r| r.round > resumed));
    bed.wait_registered().await;

    // The operator's and the nodes' traces and metrics reached the collector.
    bed.wait(
        "the operator's and the nodes' spans and metrics at the collector",
        Duration::from_secs(30),
        || async {
            let spans = bed
                .collector
                .spans()
                .into_iter()
                .map(|s| (s.service, s.name));
            let metrics = bed
                .collector
                .metrics()
                .into_iter()
                .map(|m| (m.service, m.name));
            let missing_spans = missing(
                spans,
                &[
                    ("swarm-operator", "reconcile"),
                    ("swarm-node", "round"),
                    ("swarm-node", "generate"),
                    ("swarm-node", "gather"),
                    ("swarm-node", "train"),
                    ("swarm-node", "submit"),
                ],
            );
            let missing_metrics = missing(
                metrics,
                &[
                    ("swarm-operator", "swarm_operator_reconciliations"),
                    ("swarm-operator", "swarm_operator_api_requests"),
                    ("swarm-node", "swarm_node_rounds"),
                    ("swarm-node", "swarm_node_reward"),
                    ("swarm-node", "swarm_node_messages_accepted"),
                    ("swarm-node", "swarm_node_ledger_submissions"),
                ],
            );
            if missing_spans.is_empty() && missing_metrics.is_empty() {
                Ok(())
            } else {
                Err((missing_spans, missing_metrics))
            }
        },
    )
    .await;
    println!("{}", bed.summary().await);
}

/// The (service, name) pairs of `wanted` that are not among those `exported`.
fn missing<'a>(
    exported: impl Iterator<Item = (String, String)>,
    wanted: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    let exported: BTreeSet<(String, String)> = exported.collect();
    wanted
        .iter()
        .filter(|(service, name)| !exported.contains(&((*service).into(), (*name).into())))
        .copied()
        .collect()
}

/// A small seeded generator for the soak's choices; the seed is printed, so a run can be repeated.
struct Choices(u64);

impl Choices {
    fn below(&mut self, n: u64) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// A hub model: each member pod's `fetch-model` init container downloads it, from the stand-in Hub
/// the member template's `HF_ENDPOINT` names (on the bridge), into the member's checkpoint volume;
/// the node trains on it; a replaced pod finds it there and downloads nothing.
#[tokio::test]
async fn members_train_on_a_hub_model_their_init_container_downloads_once() {
    use swarm_hub::test_server::{TAGGED_COMMIT, serve_on};
    let bed = Testbed::new("hub").await;
    let hub = serve_on(bed.real.host_ip());
    let yaml = bed
        .swarm_yaml_with_env(
            2,
            &format!("    - {{name: HF_ENDPOINT, value: \"{}\"}}", hub.endpoint),
        )
        .replace(
            "      pvc: {claimName: tiny-model}\n",
            "      hub: {id: tests/learning-base, revision: v1}\n",
        );
    assert!(yaml.contains("tests/learning-base") && yaml.contains("HF_ENDPOINT"));
    bed.f.apply_yaml(&yaml);
    bed.wait_members(2).await;
    bed.wait_training_together(2).await;
    let pods = pods_of(&bed.f.client, &bed.f.ns.name).await.unwrap();
    for (pod, instance) in bed.running().await.unwrap() {
        // The init container's termination message, as the kubelet reports it.
        let message = pods[&pod]
            .status
            .as_ref()
            .and_then(|s| s.init_container_statuses.as_ref())
            .and_then(|all| all.iter().find(|c| c.name == "fetch-model"))
            .and_then(|c| c.state.as_ref()?.terminated.as_ref()?.message.clone());
        assert_eq!(message, Some(format!("commit {TAGGED_COMMIT}")), "{pod}");
        let log = instance.log_tail(200);
        assert!(
            log.contains("hub model ready") && log.contains(TAGGED_COMMIT),
            "{log}"
        );
        assert!(
            !log.contains("downloading the model"),
            "the node found it: {log}"
        );
    }
    // The operator read the commit from the init container's termination message.
    bed.wait(
        "every member's status to name the model's commit",
        SETTLE,
        || async {
            let commits: Vec<Option<String>> = bed
                .f
                .members()
                .await
                .into_iter()
                .map(|m| m.status.and_then(|s| s.model_commit))
                .collect();
            if commits.len() == 2 && commits.iter().all(|c| c.as_deref() == Some(TAGGED_COMMIT)) {
                Ok(())
            } else {
                Err(commits)
            }
        },
    )
    .await;
    let downloads =
        |hub: &swarm_hub::test_server::FakeHub| hub.log.lock().unwrap().weight_ranges.len();
    assert_eq!(downloads(&hub), 2, "one download per member");

    let victim = format!("{SWARM}-0");
    let before = bed.instance(&victim).await.unwrap().uid;
    bed.f
        .api::<Pod>()
        .delete(&victim, &DeleteParams::default())
        .await
        .unwrap();
    bed.wait(
        &format!("{victim} to run again and train"),
        TRAINING,
        || async {
            let instance = bed.instance(&victim).await?;
            if instance.uid != before && instance.running && !instance.rounds().is_empty() {
                Ok(())
            } else {
                Err(instance.log_tail(5))
            }
        },
    )
    .await;
    assert_eq!(
        downloads(&hub),
        2,
        "the replaced pod found the model on its volume"
    );
}

/// Faults for `E2E_SOAK_SECONDS` (default 180): every 4 to 12 s a random member pod is deleted or
/// the operator is killed and replaced; once, halfway, anvil stops for a while and comes back.
/// Afterwards the swarm must settle and these must hold: no two live members share an identity,
/// every live member is registered exactly once, no member has two submissions for one round, and
/// the Swarm's status matches the members and pods, and each member's container runs on the node.
#[tokio::test]
async fn a_soak_of_pod_deletions_operator_restarts_and_an_anvil_restart_keeps_the_invariants() {
    let seconds: u64 = std::env::var("E2E_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(180);
    let seed = std::env::var("E2E_SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| jiff::Timestamp::now().as_nanosecond() as u64 | 1);
    let mut choices = Choices(seed);
    let mut bed = Testbed::new("soak").await;
    let replicas = 4;
    bed.f.apply_yaml(&bed.swarm_yaml(replicas as u32));
    bed.wait_members(replicas).await;
    bed.wait_training_together(replicas).await;

    let started = std::time::Instant::now();
    let soak = Duration::from_secs(seconds);
    let (mut pod_deletions, mut operator_restarts, mut anvil_restarts) = (0, 0, 0);
    while started.elapsed() < soak {
        tokio::time::sleep(Duration::from_secs(4 + choices.below(9))).await;
        if anvil_restarts == 0 && started.elapsed() > soak / 2 {
            bed.anvil.stop().unwrap();
            tokio::time::sleep(Duration::from_secs(10)).await;
            bed.anvil.restart().unwrap();
            anvil_restarts += 1;
        } else if choices.below(3) < 2 {
            let pod = format!("{SWARM}-{}", choices.below(replicas as u64));
            // A pod already being replaced may be gone for a moment; that is no fault of ours.
            if bed
                .f
                .api::<Pod>()
                .delete(&pod, &DeleteParams::default())
                .await
                .is_ok()
            {
                pod_deletions += 1;
            }
        } else {
            bed.restart_operator().await;
            operator_restarts += 1;
        }
    }

    // Settled: every member back, training together and recording again.
    bed.wait_members(replicas).await;
    let recorded_before: BTreeMap<String, u64> = bed
        .running()
        .await
        .unwrap()
        .into_iter()
        .map(|(pod, i)| {
            (
                pod,
                i.rounds()
                    .last()
                    .and_then(|r| r.ledger_recorded)
                    .unwrap_or(0),
            )
        })
        .collect();
    bed.wait(
        "every member to record another round after the faults",
        TRAINING,
        || async {
            let behind: Vec<String> = bed
                .running()
                .await
                .map_err(|e| vec![e])?
                .into_iter()
                .filter(|(pod, i)| {
                    let now = i
                        .rounds()
                        .last()
                        .and_then(|r| r.ledger_recorded)
                        .unwrap_or(0);
                    now <= recorded_before.get(pod).copied().unwrap_or(0)
                })
                .map(|(pod, _)| pod)
                .collect();
            if behind.is_empty() {
                Ok(())
            } else {
                Err(behind)
            }
        },
    )
    .await;
    let mut checked = 0;

    // No two live members share an identity, and each node runs the identity of its member.
    let members = bed.f.members().await;
    let running = bed.running().await.unwrap();
    let mut peer_ids = BTreeSet::new();
    let mut addresses = BTreeSet::new();
    for member in &members {
        let name = member.name_any();
        let status = member.status.clone().unwrap();
        let peer_id = status.peer_id.clone().unwrap();
        assert!(
            peer_ids.insert(peer_id.clone()),
            "{name} shares PeerId {peer_id}"
        );
        assert!(
            addresses.insert(status.address.clone().unwrap()),
            "{name} shares its address"
        );
        let process = running
            .get(&name)
            .unwrap_or_else(|| panic!("no running node for {name}"));
        let starts = process.starts();
        assert_eq!(starts.last().unwrap().peer_id, peer_id, "{name}");
        checked += 3;
    }

    // Every live member registered exactly once: the contract counts exactly the live members,
    // each under its own PeerId.
    bed.wait_registered().await;
    checked += members.len();

    // Each member's reward for a round is on record at most once.
    let submissions = bed.ledger().await.reward_submissions().await.unwrap();
    let mut per_round: BTreeMap<(u64, Address), usize> = BTreeMap::new();
    for key in &submissions {
        *per_round.entry(*key).or_default() += 1;
    }
    let repeated: Vec<_> = per_round.iter().filter(|(_, n)| **n > 1).collect();
    assert!(repeated.is_empty(), "submitted twice: {repeated:?}");
    checked += per_round.len();

    // The Swarm's status matches the members, pods and the containers on the node.
    let swarm: Swarm = bed.f.api::<Swarm>().get(SWARM).await.unwrap();
    let status = swarm.status.clone().unwrap();
    let pods = pods_of(&bed.f.client, &bed.f.ns.name).await.unwrap();
    assert_eq!(status.replicas as usize, members.len());
    assert_eq!(status.ready_replicas as usize, pods.len());
    assert_eq!(running.len(), replicas);
    for member in &members {
        let name = member.name_any();
        let pod = &pods[&name];
        assert_eq!(
            member.status.as_ref().and_then(|s| s.pod.clone()),
            Some(name.clone())
        );
        // Its container's process is alive on the node, as the pods' user.
        let process = pod_process(pod);
        assert!(process.uid.starts_with("65532 "), "{name}: {process:?}");
    }
    checked += 3 + 2 * members.len();

    let started = bed.node_containers_started().await;
    println!(
        "soak: {seconds} s, seed {seed}: {pod_deletions} pod deletions, {operator_restarts} operator \
         restarts, {anvil_restarts} anvil restart; {started} member node containers started in all; \
         {} member-round submissions on the chain; {checked} invariant checks passed",
        submissions.len()
    );
}
