//! Real nodes on loopback sockets, in one process: delivery over TCP and QUIC, late bootstrap
//! peers, and a rogue peer that the honest ones shut out.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use common::valid_message;
use swarm_identity::MemberKey;
use swarm_p2p::identity::Keypair;
use swarm_p2p::{
    Backoff, Multiaddr, Network, NetworkConfig, NetworkError, NetworkStatus, PeerId, Received,
    SharedCompletion, encode, rollouts_topic,
};
use tokio::sync::mpsc;
use tokio::time::{sleep, timeout};

const GROUP_SIZE: usize = 4;
const ROUND: u64 = 5;
/// Below this score gossipsub ignores a peer altogether (see the crate's scoring thresholds).
const GRAYLIST: f64 = -80.0;

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

fn addr(text: &str) -> Multiaddr {
    text.parse().unwrap()
}

fn config(keypair: Keypair, listen: &str, bootstrap: Vec<Multiaddr>) -> NetworkConfig {
    let mut config = NetworkConfig::new(keypair, rollouts_topic("test-swarm"), GROUP_SIZE);
    // A stand-in for a tokenizer: one token per character, plus the end-of-sequence token.
    config.count_tokens = Some(Arc::new(|completion: &SharedCompletion| {
        completion.text.chars().count() + usize::from(completion.ended)
    }));
    config.listen = vec![addr(listen)];
    config.bootstrap = bootstrap;
    config.redial = Backoff {
        initial: Duration::from_millis(200),
        max: Duration::from_secs(1),
    };
    config
}

async fn start(config: NetworkConfig) -> (Network, mpsc::Receiver<Received>) {
    let (network, inbox) = Network::start(config).await.unwrap();
    network.set_round(ROUND);
    (network, inbox)
}

/// The node's first listen address, dialable as a bootstrap entry.
async fn bootstrap_addr(network: &Network) -> Multiaddr {
    let listen = network.listen_addrs().await;
    listen[0].clone().with_p2p(network.local_peer_id()).unwrap()
}

/// Polls `check` on the node's status until it holds; panics with the last status after `limit`.
async fn wait_for_status(
    network: &Network,
    what: &str,
    limit: Duration,
    check: impl Fn(&NetworkStatus) -> bool,
) -> NetworkStatus {
    let polling = async {
        loop {
            let status = network.status().await;
            if check(&status) {
                return status;
            }
            sleep(Duration::from_millis(100)).await;
        }
    };
    match timeout(limit, polling).await {
        Ok(status) => status,
        Err(_) => panic!(
            "timed out waiting for {what}: {:#?}",
            network.status().await
        ),
    }
}

async fn within<T>(what: &str, limit: Duration, future: impl Future<Output = T>) -> T {
    timeout(limit, future)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// Publishes, retrying while no peer has subscribed yet.
async fn publish(network: &Network, bytes: Vec<u8>) {
    within("a subscribed peer", Duration::from_secs(10), async {
        loop {
            match network.publish(bytes.clone()).await {
                Ok(()) => return,
                Err(NetworkError::NoPeers) => sleep(Duration::from_millis(100)).await,
                Err(error) => panic!("publish failed: {error}"),
            }
        }
    })
    .await;
}

async fn publish_valid(network: &Network) -> Vec<u8> {
    let bytes = encode(&valid_message(
        network.local_peer_id(),
        ROUND,
        2,
        GROUP_SIZE,
    ));
    publish(network, bytes.clone()).await;
    bytes
}

/// Receives `count` messages and returns their authors.
async fn receive(inbox: &mut mpsc::Receiver<Received>, count: usize) -> Vec<Received> {
    within("messages", Duration::from_secs(15), async {
        let mut received = Vec::new();
        while received.len() < count {
            received.push(inbox.recv().await.unwrap());
        }
        received
    })
    .await
}

fn authors(received: &[Received]) -> BTreeSet<PeerId> {
    received.iter().map(|received| received.author).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_nodes_over_tcp_receive_every_other_nodes_messages() {
    init_tracing();
    // The member key the operator issues plugs straight in.
    let member = MemberKey::generate();
    let (first, first_inbox) = start(config(
        member.libp2p_keypair(),
        "/ip4/127.0.0.1/tcp/0",
        Vec::new(),
    ))
    .await;
    assert_eq!(first.local_peer_id(), member.peer_id());
    let hub = bootstrap_addr(&first).await;
    let mut nodes = vec![(first, first_inbox)];
    for _ in 0..3 {
        // Each knows only the first node (and itself, which it skips); the DHT finds the rest.
        let key = Keypair::generate_secp256k1();
        let own = addr("/ip4/127.0.0.1/tcp/1")
            .with_p2p(key.public().to_peer_id())
            .unwrap();
        nodes.push(start(config(key, "/ip4/127.0.0.1/tcp/0", vec![hub.clone(), own])).await);
    }
    let peers: BTreeSet<PeerId> = nodes.iter().map(|(node, _)| node.local_peer_id()).collect();
    for (node, _) in &nodes {
        wait_for_status(
            node,
            "a full gossip mesh",
            Duration::from_secs(20),
            |status| status.mesh_peers.len() == peers.len() - 1,
        )
        .await;
    }

    let mut sent = Vec::new();
    for (node, _) in &nodes {
        sent.push((node.local_peer_id(), publish_valid(node).await));
    }
    for (node, inbox) in &mut nodes {
        let received = receive(inbox, peers.len() - 1).await;
        let mut others = peers.clone();
        others.remove(&node.local_peer_id());
        assert_eq!(authors(&received), others);
        for message in &received {
            let (_, bytes) = sent
                .iter()
                .find(|(author, _)| *author == message.author)
                .unwrap();
            assert_eq!(encode(&message.message), *bytes);
        }
        let status = node.status().await;
        assert_eq!(status.accepted, 3);
        assert!(status.rejected.is_empty(), "{status:#?}");
        assert!(status.peer_scores.iter().all(|(_, score)| *score >= 0.0));
    }
    for (node, _) in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_exchange_messages_over_quic_only() {
    init_tracing();
    let quic = "/ip4/127.0.0.1/udp/0/quic-v1";
    let (first, mut first_inbox) =
        start(config(Keypair::generate_secp256k1(), quic, Vec::new())).await;
    let first_addr = bootstrap_addr(&first).await;
    assert!(first_addr.to_string().contains("/quic-v1/"), "{first_addr}");
    let (second, mut second_inbox) = start(config(
        Keypair::generate_secp256k1(),
        quic,
        vec![first_addr],
    ))
    .await;

    publish_valid(&second).await;
    publish_valid(&first).await;
    assert_eq!(
        receive(&mut first_inbox, 1).await[0].author,
        second.local_peer_id()
    );
    assert_eq!(
        receive(&mut second_inbox, 1).await[0].author,
        first.local_peer_id()
    );
    first.shutdown().await;
    second.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_keeps_dialling_a_bootstrap_peer_that_starts_later() {
    init_tracing();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let late_key = Keypair::generate_secp256k1();
    let late_listen = format!("/ip4/127.0.0.1/tcp/{port}");
    let late_addr = addr(&late_listen)
        .with_p2p(late_key.public().to_peer_id())
        .unwrap();
    let (early, mut early_inbox) = start(config(
        Keypair::generate_secp256k1(),
        "/ip4/127.0.0.1/tcp/0",
        vec![late_addr],
    ))
    .await;
    assert!(matches!(
        early.publish(vec![1]).await,
        Err(NetworkError::NoPeers)
    ));
    wait_for_status(&early, "failed dials", Duration::from_secs(10), |status| {
        status.dial_failures >= 3
    })
    .await;

    let (late, _late_inbox) = start(config(late_key, &late_listen, Vec::new())).await;
    wait_for_status(&early, "the late peer", Duration::from_secs(10), |status| {
        status.connected_peers == [late.local_peer_id()]
    })
    .await;
    publish_valid(&late).await;
    assert_eq!(
        receive(&mut early_inbox, 1).await[0].author,
        late.local_peer_id()
    );
    early.shutdown().await;
    late.shutdown().await;
}

/// Log-probabilities that are not finite and ≤ 0, or not one per token as the receiver counts
/// them, get a message rejected and its sender scored down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_logprobs_are_rejected_and_scored() {
    init_tracing();
    let (honest, _honest_inbox) = start(config(
        Keypair::generate_secp256k1(),
        "/ip4/127.0.0.1/tcp/0",
        Vec::new(),
    ))
    .await;
    let honest_addr = bootstrap_addr(&honest).await;
    let (sender, _sender_inbox) = start(config(
        Keypair::generate_secp256k1(),
        "/ip4/127.0.0.1/tcp/0",
        vec![honest_addr],
    ))
    .await;
    let sender_id = sender.local_peer_id();
    wait_for_status(&honest, "a mesh", Duration::from_secs(15), |status| {
        status.mesh_peers.len() == 1
    })
    .await;
    let with_logprobs = |logprobs: Vec<f32>| {
        let mut message = valid_message(sender_id, ROUND, 2, GROUP_SIZE);
        message.groups[1].completions[0].logprobs = logprobs;
        encode(&message)
    };
    // The honest node counts one token per character (see `config`).
    publish(&sender, with_logprobs(vec![0.5])).await;
    publish(&sender, with_logprobs(vec![-1.0; 3])).await;
    let status = wait_for_status(&honest, "rejections", Duration::from_secs(10), |status| {
        status.rejected("invalid_logprobs") == 2
    })
    .await;
    assert_eq!(status.accepted, 0, "{status:#?}");
    assert!(status.score(&sender_id).unwrap() < 0.0, "{status:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rogue_peer_is_rejected_scored_down_and_graylisted() {
    init_tracing();
    let (alice, mut alice_inbox) = start(config(
        Keypair::generate_secp256k1(),
        "/ip4/127.0.0.1/tcp/0",
        Vec::new(),
    ))
    .await;
    let alice_addr = bootstrap_addr(&alice).await;
    let (bob, mut bob_inbox) = start(config(
        Keypair::generate_secp256k1(),
        "/ip4/127.0.0.1/tcp/0",
        vec![alice_addr.clone()],
    ))
    .await;
    let bob_addr = bootstrap_addr(&bob).await;
    let (rogue, _rogue_inbox) = start(config(
        Keypair::generate_secp256k1(),
        "/ip4/127.0.0.1/tcp/0",
        vec![alice_addr, bob_addr],
    ))
    .await;
    let rogue_id = rogue.local_peer_id();
    for honest in [&alice, &bob] {
        wait_for_status(honest, "a full mesh", Duration::from_secs(15), |status| {
            status.mesh_peers.len() == 2
        })
        .await;
    }

    let garbage = vec![swarm_p2p::SCHEMA_VERSION, 5, 3, 1, 2, 3, 0];
    let oversized = vec![swarm_p2p::SCHEMA_VERSION; 256 * 1024 + 1];
    let wrong_round = encode(&valid_message(rogue_id, ROUND + 10, 2, GROUP_SIZE));
    let wrong_group_size = encode(&valid_message(rogue_id, ROUND, 2, GROUP_SIZE - 1));
    for bytes in [garbage, oversized, wrong_round, wrong_group_size] {
        publish(&rogue, bytes).await;
    }
    let expected = [
        "malformed",
        "too_large",
        "round_out_of_window",
        "group_size",
    ];
    for honest in [&alice, &bob] {
        let status = wait_for_status(honest, "rejections", Duration::from_secs(10), |status| {
            expected.iter().all(|reason| status.rejected(reason) == 1)
        })
        .await;
        assert!(status.score(&rogue_id).unwrap() < 0.0, "{status:#?}");
    }

    // A flood of valid messages: the swarm's limit per round is allowed, the rest rejected until
    // the rogue is graylisted.
    let allowed = swarm_node_config::limits::MESSAGES_PER_PEER_PER_ROUND as usize;
    let valid = encode(&valid_message(rogue_id, ROUND, 2, GROUP_SIZE));
    for _ in 0..allowed + 6 {
        publish(&rogue, valid.clone()).await;
    }
    for honest in [&alice, &bob] {
        let status = wait_for_status(honest, "the graylist", Duration::from_secs(10), |status| {
            status.rejected("rate_limited") >= 1
                && status
                    .score(&rogue_id)
                    .is_some_and(|score| score < GRAYLIST)
        })
        .await;
        assert_eq!(status.accepted, allowed as u64, "{status:#?}");
    }
    assert_eq!(
        authors(&receive(&mut alice_inbox, allowed).await),
        BTreeSet::from([rogue_id])
    );
    assert_eq!(
        authors(&receive(&mut bob_inbox, allowed).await),
        BTreeSet::from([rogue_id])
    );

    // The honest nodes still hear each other, and think well of each other.
    publish_valid(&alice).await;
    publish_valid(&bob).await;
    assert_eq!(
        receive(&mut bob_inbox, 1).await[0].author,
        alice.local_peer_id()
    );
    assert_eq!(
        receive(&mut alice_inbox, 1).await[0].author,
        bob.local_peer_id()
    );
    let alice_status = alice.status().await;
    let bob_status = bob.status().await;
    assert!(alice_status.score(&bob.local_peer_id()).unwrap() >= 0.0);
    assert!(bob_status.score(&alice.local_peer_id()).unwrap() >= 0.0);
    for node in [alice, bob, rogue] {
        node.shutdown().await;
    }
}
