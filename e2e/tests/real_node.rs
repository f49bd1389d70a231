//! Members as real containers: the node image that scripts/build-oci-images built, run by containerd
//! and runc under the real kubelet of `e2e/bin/cluster`'s real node, on its CNI bridge, with the
//! pods' own probes and cluster DNS. What the runtime enforces is read back from the kernel.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{DeleteParams, ListParams};
use swarm_e2e::collector::Collector;
use swarm_e2e::containers::pod_process;
use swarm_e2e::provisioner::{Provisioner, claim_folder};
use swarm_e2e::testbed::{
    create_ledger_secret, create_model_volume, ledger_and_telemetry_yaml, node_log,
    real_node_swarm_yaml,
};
use swarm_e2e::*;
use swarm_ledger::anvil::{Anvil, anvil_binary};
use swarm_node::report::{NodeEvent, Started};
use swarm_operator::api::SwarmMember;

const SWARM: &str = "containers";

#[tokio::test]
async fn members_run_as_containers_of_the_node_image_on_the_real_node() {
    let real = RealNode::from_env();
    let f = Fixture::new("real-node", &[]).await;
    create_model_volume(&f).await;
    let operator = f.operator("operator", None);
    f.apply_yaml(&real_node_swarm_yaml(
        SWARM,
        2,
        &real.node,
        &real.node_image,
        "",
    ));
    f.wait_ready(SWARM, 2, &[&operator]).await;

    let pods: BTreeMap<String, Pod> = f
        .api::<Pod>()
        .list(&ListParams::default().labels(&format!("rlswarm.dev/swarm={SWARM}")))
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|p| (p.name_any(), p))
        .collect();
    assert_eq!(pods.len(), 2);
    for (name, pod) in &pods {
        assert_eq!(
            pod.spec.as_ref().unwrap().node_name.as_deref(),
            Some(real.node.as_str())
        );
        let status = pod.status.as_ref().unwrap();
        // Ready through the pod's own readiness probe, which the kubelet ran against /readyz.
        let ready = status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.status, "True", "{name}: {ready:?}");
        let ip = status.pod_ip.as_deref().unwrap();
        assert!(
            ip.starts_with(&real.subnet_prefix),
            "{name}: pod IP {ip} not on the bridge's subnet {}",
            real.subnet_prefix
        );
        let facts = pod_process(pod);
        eprintln!("{name}: on {}, ip {ip}, {facts:?}", real.node);
        assert_eq!(facts.uid, "65532 65532 65532 65532", "{name}: {facts:?}");
        assert_eq!(facts.gid, "65532 65532 65532 65532", "{name}: {facts:?}");
        assert_eq!(
            facts.effective_capabilities, "0000000000000000",
            "{name}: {facts:?}"
        );
        assert_eq!(facts.no_new_privs, "1", "{name}: {facts:?}");
        // 2: a seccomp filter (RuntimeDefault) is in force.
        assert_eq!(facts.seccomp, "2", "{name}: {facts:?}");
        assert!(
            facts.root_mount_options.split(',').any(|o| o == "ro"),
            "{name}: root filesystem not read-only: {facts:?}"
        );
        // Writable: only the pod's own writable volumes, the files the kubelet manages per pod, and
        // the kernel's and runtime's filesystems (/dev, /proc, /sys).
        let mut allowed: Vec<String> = pod.spec.as_ref().unwrap().containers[0]
            .volume_mounts
            .iter()
            .flatten()
            .filter(|m| m.read_only != Some(true))
            .map(|m| m.mount_path.clone())
            .collect();
        allowed.extend(
            [
                "/etc/hosts",
                "/etc/hostname",
                "/etc/resolv.conf",
                "/dev/termination-log",
            ]
            .map(String::from),
        );
        let kernel = |point: &str| {
            ["/dev", "/proc", "/sys"]
                .iter()
                .any(|d| point == *d || point.starts_with(&format!("{d}/")))
        };
        let stray: Vec<&String> = facts
            .writable_mounts
            .iter()
            .filter(|point| !allowed.contains(point) && !kernel(point))
            .collect();
        assert!(
            stray.is_empty(),
            "{name}: writable outside its volumes: {stray:?} ({facts:?})"
        );
    }

    // The members found each other by the headless Service's DNS names (CoreDNS) and trained on
    // each other's rollouts: their own reports, read back through the API server's log endpoint.
    let names: Vec<String> = pods.keys().cloned().collect();
    wait_for(
        &f.env,
        &f.ns.name,
        &[&operator],
        "both members to train on rollouts from the other",
        Duration::from_secs(180),
        || async {
            let mut missing = Vec::new();
            for name in &names {
                let from_peer = node_events(&f, name)
                    .await?
                    .into_iter()
                    .find_map(|e| match e {
                        NodeEvent::Round(r) if r.external_peers >= 1 => Some(r),
                        _ => None,
                    });
                match from_peer {
                    Some(r) => eprintln!(
                        "{name}: round {} trained on {} groups from {} peer(s)",
                        r.round, r.external_groups, r.external_peers
                    ),
                    None => missing.push(name.clone()),
                }
            }
            if missing.is_empty() {
                Ok(())
            } else {
                Err(format!("no round with a peer's rollouts yet: {missing:?}"))
            }
        },
    )
    .await;

    // A deleted pod's node stops on SIGTERM (it is its container's PID 1, which has no default
    // action for it): the pod is gone long before its 60 s grace period would have it killed.
    let pods_api = f.api::<Pod>();
    let victim = &names[0];
    let uid = pods[victim].metadata.uid.clone();
    pods_api
        .delete(victim, &DeleteParams::default())
        .await
        .unwrap();
    wait_for(
        &f.env,
        &f.ns.name,
        &[&operator],
        &format!("{victim} to stop on SIGTERM, well inside its grace period"),
        Duration::from_secs(40),
        || async {
            // Gone, or already replaced by the operator under a new uid.
            match pods_api.get_opt(victim).await {
                Ok(Some(pod)) if pod.metadata.uid == uid => Err("still terminating".to_owned()),
                Ok(_) => Ok(()),
                Err(err) => Err(err.to_string()),
            }
        },
    )
    .await;
}

/// What the real kubelet reports about a pod that cannot run reaches the member's status: an image
/// that is not on the node and may not be pulled, one whose registry refuses the connection, and a
/// node that exits at once.
#[tokio::test]
async fn missing_images_and_a_crashing_node_show_in_the_member_status() {
    let real = RealNode::from_env();
    let f = Fixture::new("real-node-faults", &[]).await;
    create_model_volume(&f).await;
    let operator = f.operator("operator", None);
    let missing = format!("{}-missing", real.node_image);
    f.apply_yaml(&real_node_swarm_yaml(
        "no-image", 1, &real.node, &missing, "",
    ));
    // A registry on a closed loopback port: the pull fails at once, nothing leaves the machine.
    let unpullable = "127.0.0.1:9/rl-swarm-operator/swarm-node:0.1.0-cpu";
    f.apply_yaml(
        &real_node_swarm_yaml("no-registry", 1, &real.node, unpullable, "")
            .replace("imagePullPolicy: Never", "imagePullPolicy: Always"),
    );
    // The node rejects its arguments and exits at once; the kubelet restarts it, backing off.
    let unusable = "    - {name: SWARM_METRICS_PORT, value: not-a-port}";
    f.apply_yaml(&real_node_swarm_yaml(
        "crashing",
        1,
        &real.node,
        &real.node_image,
        unusable,
    ));
    for (member, reason) in [
        ("no-image-0", "ErrImageNeverPull"),
        ("no-registry-0", "ImagePullBackOff"),
        ("crashing-0", "CrashLoopBackOff"),
    ] {
        let members = f.api::<SwarmMember>();
        wait_for(
            &f.env,
            &f.ns.name,
            &[&operator],
            &format!("{member}'s status to say {reason}"),
            SETTLE,
            || async {
                let message = members
                    .get(member)
                    .await
                    .map_err(|e| e.to_string())?
                    .status
                    .and_then(|s| s.message)
                    .unwrap_or_default();
                if message.starts_with(reason) {
                    eprintln!("{member}: {message}");
                    Ok(())
                } else {
                    Err(format!("message: {message:?}"))
                }
            },
        )
        .await;
    }
}

/// What the node now running in `pod` reported, from its log through the API server.
async fn node_events(f: &Fixture, pod: &str) -> Result<Vec<NodeEvent>, String> {
    let log = node_log(&f.api::<Pod>(), pod).await?;
    Ok(log.lines().filter_map(NodeEvent::parse).collect())
}

/// The `started` report of the node now running in `pod`.
async fn node_started(f: &Fixture, pod: &str) -> Result<Started, String> {
    node_events(f, pod)
        .await?
        .into_iter()
        .find_map(|e| match e {
            NodeEvent::Started(started) => Some(started),
            _ => None,
        })
        .ok_or_else(|| "the node has not started yet".to_owned())
}

/// A member's container killed on the node: the kubelet starts it again in the same pod, and the
/// node resumes from the checkpoint on its claim; its pod deleted, the new one does the same, with
/// the member's identity. The test bed's provisioner binds the claim to a folder the node's uid owns.
#[tokio::test]
async fn a_killed_node_and_a_deleted_pod_resume_from_the_checkpoint_on_the_claim() {
    let real = RealNode::from_env();
    let f = Fixture::new("real-node-restart", &[]).await;
    create_model_volume(&f).await;
    let _provisioner = Provisioner::start(f.client.clone(), &f.ns.name, f.dir.path());
    let operator = f.operator("operator", None);
    let checkpoints = "  checkpoints: {size: 1Gi, everyRounds: 1}";
    f.apply_yaml(&format!(
        "{}{checkpoints}\n",
        real_node_swarm_yaml("resume", 1, &real.node, &real.node_image, "")
    ));

    f.wait_ready("resume", 1, &[&operator]).await;
    let dir = claim_folder(&f.client, &f.ns.name, "resume-0-checkpoints")
        .await
        .unwrap();

    // A complete checkpoint on the claim (`round-<n>`, renamed from `.tmp` once written).
    let saved = || {
        std::fs::read_dir(dir.join("checkpoints"))
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|e| e.file_name().into_string().ok())
                    .filter_map(|n| n.strip_prefix("round-")?.parse::<u64>().ok())
                    .max()
            })
            .ok()
            .flatten()
    };
    let checkpoint = wait_for(
        &f.env,
        &f.ns.name,
        &[&operator],
        "a checkpoint written on the claim",
        Duration::from_secs(120),
        || async { saved().ok_or("none yet") },
    )
    .await;

    let pods = f.api::<Pod>();
    let pod = pods.get("resume-0").await.unwrap();
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &pod_process(&pod).pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());

    // Same pod, a new container, resumed from a checkpoint at least as new as the one seen.
    let resumed = wait_for(
        &f.env,
        &f.ns.name,
        &[&operator],
        "the node to restart in its pod and resume from its checkpoint",
        SETTLE,
        || async {
            let now = pods.get("resume-0").await.map_err(|e| e.to_string())?;
            if now.metadata.uid != pod.metadata.uid {
                return Err("the pod was replaced, not its container restarted".to_owned());
            }
            let restarts = now
                .status
                .as_ref()
                .unwrap()
                .container_statuses
                .as_ref()
                .unwrap()[0]
                .restart_count;
            if restarts < 1 {
                return Err("not restarted yet".to_owned());
            }
            node_started(&f, "resume-0")
                .await
                .map(|started| started.resumed_from)
                .map_err(|e| format!("restarted {restarts} times: {e}"))
        },
    )
    .await;
    eprintln!(
        "checkpoint of round {checkpoint} on the claim; the restarted node resumed from {resumed:?}"
    );
    assert!(
        resumed.is_some_and(|round| round >= checkpoint),
        "resumed from {resumed:?}, the claim had round {checkpoint}"
    );

    // The pod deleted: the operator makes a new one, which runs with the member's identity and
    // resumes from the same claim.
    let peer_id = f
        .api::<SwarmMember>()
        .get("resume-0")
        .await
        .unwrap()
        .status
        .and_then(|s| s.peer_id)
        .unwrap();
    let latest = saved().unwrap();
    pods.delete("resume-0", &DeleteParams::default())
        .await
        .unwrap();
    let started = wait_for(
        &f.env,
        &f.ns.name,
        &[&operator],
        "a new pod for resume-0, started from the claim",
        SETTLE,
        || async {
            let now = pods.get_opt("resume-0").await.map_err(|e| e.to_string())?;
            match now {
                Some(now) if now.metadata.uid != pod.metadata.uid => {
                    node_started(&f, "resume-0").await
                }
                _ => Err("the old pod is still there, or none yet".to_owned()),
            }
        },
    )
    .await;
    eprintln!(
        "the new pod's node: {} resumed from {:?} (the claim had round {latest})",
        started.peer_id, started.resumed_from
    );
    assert_eq!(started.peer_id, peer_id, "the member's identity");
    assert!(
        started.resumed_from.is_some_and(|round| round >= latest),
        "resumed from {:?}, the claim had round {latest}",
        started.resumed_from
    );
}

/// Members in containers record their rounds on a chain and export traces and metrics: anvil and the
/// collector listen on the bridge's host address, the only host address the pods reach.
#[tokio::test]
async fn members_on_the_real_node_record_rounds_on_the_ledger_and_export_telemetry() {
    let real = RealNode::from_env();
    let f = Fixture::new("real-node-ledger", &[]).await;
    create_model_volume(&f).await;
    let binary = anvil_binary(&f.env.root.join("scripts/install-ledger-tools")).unwrap();
    let anvil = Anvil::start_on(&binary, real.host_ip(), &[]).unwrap();
    create_ledger_secret(&f, &anvil.dev_keys()[0]).await;
    let collector = Collector::start_on(&f.env.otelcol(), f.dir.path(), real.host_ip());
    let operator = f.operator("operator", None);
    let ledger_and_telemetry = ledger_and_telemetry_yaml(&anvil.url(), &collector.http_endpoint());
    f.apply_yaml(&format!(
        "{}{ledger_and_telemetry}",
        real_node_swarm_yaml("chain", 2, &real.node, &real.node_image, "")
    ));
    f.wait_ready("chain", 2, &[&operator]).await;

    // ROUND and REWARD come from the chain: rounds each pod submitted from its member's account.
    let members = f.api::<SwarmMember>();
    wait_for(
        &f.env,
        &f.ns.name,
        &[&operator],
        "both members' rounds recorded on the ledger",
        Duration::from_secs(180),
        || async {
            let list = members
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?;
            let recorded: Vec<(String, Option<i64>, Option<f64>)> = list
                .items
                .iter()
                .map(|m| {
                    let status = m.status.clone().unwrap_or_default();
                    (m.name_any(), status.round, status.total_reward)
                })
                .collect();
            if recorded.len() == 2 && recorded.iter().all(|(_, r, t)| r.is_some() && t.is_some()) {
                eprintln!("on the ledger: {recorded:?}");
                Ok(())
            } else {
                Err(format!("{recorded:?}"))
            }
        },
    )
    .await;

    wait_for(
        &f.env,
        &f.ns.name,
        &[&operator],
        "the nodes' spans and metrics at the collector",
        Duration::from_secs(60),
        || async {
            let spans: Vec<(String, String)> = collector
                .spans()
                .into_iter()
                .map(|s| (s.service, s.name))
                .collect();
            let metrics: Vec<(String, String)> = collector
                .metrics()
                .into_iter()
                .map(|m| (m.service, m.name))
                .collect();
            let has = |list: &[(String, String)], name: &str| {
                list.iter()
                    .any(|(service, n)| service == "swarm-node" && n == name)
            };
            let missing: Vec<&str> = ["round", "train", "submit"]
                .into_iter()
                .filter(|name| !has(&spans, name))
                .chain(
                    ["swarm_node_rounds", "swarm_node_ledger_submissions"]
                        .into_iter()
                        .filter(|name| !has(&metrics, name)),
                )
                .collect();
            if missing.is_empty() {
                Ok(())
            } else {
                Err(format!("missing {missing:?}"))
            }
        },
    )
    .await;
}

/// The operator itself as a pod of its image, installed by the chart (unchanged, with values) onto
/// the real node: it reaches the API server through the `kubernetes` Service (kube-proxy, CoreDNS)
/// and runs a Swarm whose members are containers there too.
#[tokio::test]
async fn the_operator_runs_as_a_pod_of_its_image_and_runs_a_swarm() {
    let real = RealNode::from_env();
    let values = real.operator_release_values();
    let values: Vec<&str> = values.iter().map(String::as_str).collect();
    // `helm install --wait`: returns once the operator's pod is Ready by its own probe.
    let f = Fixture::new("real-node-operator", &values).await;
    create_model_volume(&f).await;
    f.apply_yaml(&real_node_swarm_yaml(
        "in-cluster",
        2,
        &real.node,
        &real.node_image,
        "",
    ));
    f.wait_ready("in-cluster", 2, &[]).await;

    let operators: Vec<Pod> = f
        .api::<Pod>()
        .list(&ListParams::default().labels("app.kubernetes.io/name=swarm-operator"))
        .await
        .unwrap()
        .items;
    assert_eq!(operators.len(), 1);
    let pod = &operators[0];
    assert_eq!(
        pod.spec.as_ref().unwrap().node_name.as_deref(),
        Some(real.node.as_str())
    );
    let container = &pod
        .status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()[0];
    assert!(container.ready, "{container:?}");
    let facts = pod_process(pod);
    eprintln!(
        "operator pod {} on {}: {facts:?}",
        pod.name_any(),
        real.node
    );
    assert_eq!(facts.uid, "65532 65532 65532 65532", "{facts:?}");
    assert_eq!(
        facts.effective_capabilities, "0000000000000000",
        "{facts:?}"
    );
    assert!(
        facts.root_mount_options.split(',').any(|o| o == "ro"),
        "{facts:?}"
    );
}
