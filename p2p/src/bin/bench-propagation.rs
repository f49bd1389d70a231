//! Rollout propagation across a swarm of nodes on loopback TCP, all in one process so one clock
//! times every hop: publish → received by every other peer latency, and the rate one publisher
//! sustains to all its peers.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use rand::rngs::Xoshiro256PlusPlus;
use rand::seq::index;
use rand::{RngExt, SeedableRng};
use swarm_p2p::identity::Keypair;
use swarm_p2p::{
    Multiaddr, Network, NetworkConfig, NetworkError, PeerId, RolloutMessage, SharedCompletion,
    SharedGroup, encode, rollouts_topic,
};
use swarm_tasks::{Difficulty, families};
use tokio::sync::mpsc;
use tokio::time::{sleep, timeout};

const ROUND: u64 = 1;

#[derive(Parser)]
#[command(about = "Measures rollout propagation between in-process swarm nodes on loopback TCP")]
struct Args {
    #[arg(long, default_value_t = 16)]
    nodes: usize,
    /// Messages for the latency measurement, published one at a time by the nodes in turn.
    #[arg(long, default_value_t = 400)]
    messages: usize,
    /// Messages one node publishes for each throughput measurement.
    #[arg(long, default_value_t = 1000)]
    burst: usize,
    /// Messages in flight (not yet received by every peer) in the closed-loop throughput measurement.
    #[arg(long, default_value_t = 32)]
    window: usize,
    #[arg(long, default_value_t = 8)]
    groups: usize,
    #[arg(long, default_value_t = 8)]
    completions: usize,
    #[arg(long, default_value_t = 200)]
    completion_chars: usize,
    /// Bootstrap peers of each node: the previous node plus random earlier ones.
    #[arg(long, default_value_t = 3)]
    links: usize,
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

/// One delivery of a message to some node.
struct Delivery {
    sequence: u64,
    at: Instant,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.nodes < 2 {
        bail!("--nodes must be at least 2");
    }
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(args.seed);
    let (deliveries, mut delivered) = mpsc::unbounded_channel();
    let mut nodes: Vec<Network> = Vec::new();
    let mut addrs: Vec<Multiaddr> = Vec::new();
    let started = Instant::now();
    for _ in 0..args.nodes {
        let mut config = NetworkConfig::new(
            Keypair::generate_secp256k1(),
            rollouts_topic("bench"),
            args.completions,
        );
        config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse()?];
        config.bootstrap = bootstrap_links(&addrs, args.links, &mut rng);
        config.messages_per_peer_per_round = u32::MAX;
        config.inbox_capacity = args.burst.max(args.messages) * 2;
        let (network, mut inbox) = Network::start(config).await?;
        network.set_round(ROUND);
        let listen = network.listen_addrs().await;
        let first = listen.first().context("node listens nowhere")?;
        addrs.push(
            first
                .clone()
                .with_p2p(network.local_peer_id())
                .map_err(|addr| anyhow::anyhow!("listen address {addr} already names a peer"))?,
        );
        let deliveries = deliveries.clone();
        tokio::spawn(async move {
            while let Some(received) = inbox.recv().await {
                if let Some(sequence) = sequence_of(&received.message) {
                    let delivery = Delivery {
                        sequence,
                        at: received.received_at,
                    };
                    if deliveries.send(delivery).is_err() {
                        break;
                    }
                }
            }
        });
        nodes.push(network);
    }

    let mesh_target = (args.nodes - 1).min(4);
    timeout(Duration::from_secs(60), async {
        loop {
            let mut formed = true;
            for node in &nodes {
                formed &= node.status().await.mesh_peers.len() >= mesh_target;
            }
            if formed {
                break;
            }
            sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .context("gossip meshes did not form within 60 s")?;
    let mesh_formed = started.elapsed();

    let template = Template::new(&args, &mut rng);
    let sample = template.message(nodes[0].local_peer_id(), 0);
    let message_bytes = encode(&sample).len();
    let others = args.nodes - 1;

    // Latency: one message in flight at a time, so queueing never inflates it.
    let mut to_all = Vec::new();
    let mut to_one = Vec::new();
    let mut lost = 0;
    for sequence in 0..args.messages as u64 {
        let publisher = &nodes[sequence as usize % args.nodes];
        let bytes = encode(&template.message(publisher.local_peer_id(), sequence));
        let published = Instant::now();
        publish(publisher, bytes).await?;
        let mut arrivals = Vec::new();
        let waiting = async {
            while arrivals.len() < others {
                match delivered.recv().await {
                    Some(delivery) if delivery.sequence == sequence => arrivals.push(delivery.at),
                    Some(_) => {}
                    None => break,
                }
            }
        };
        if timeout(Duration::from_secs(5), waiting).await.is_err() {
            lost += others - arrivals.len();
        }
        to_one.extend(arrivals.iter().map(|at| *at - published));
        if arrivals.len() == others {
            to_all.extend(arrivals.iter().max().map(|at| *at - published));
        }
    }

    // Throughput, twice: open loop (everything at once, as fast as the send queues take it),
    // then closed loop (at most `window` messages not yet received by every peer).
    let open = throughput(
        &nodes[0],
        &template,
        &mut delivered,
        args.messages as u64,
        args.burst,
        others,
        usize::MAX,
    )
    .await?;
    let closed_start = (args.messages + args.burst) as u64;
    let closed = throughput(
        &nodes[0],
        &template,
        &mut delivered,
        closed_start,
        args.burst,
        others,
        args.window,
    )
    .await?;

    let mut dropped = 0;
    for node in &nodes {
        dropped += node.status().await.dropped;
    }
    println!(
        "{} nodes on loopback TCP, {} bootstrap links each, meshes formed in {:.1} s",
        args.nodes,
        args.links,
        mesh_formed.as_secs_f64()
    );
    println!(
        "message: {} groups x {} completions of {} chars = {:.1} KiB encoded\n",
        args.groups,
        args.completions,
        args.completion_chars,
        message_bytes as f64 / 1024.0
    );
    println!(
        "| latency over {} messages | p50 | p90 | p99 | max |",
        args.messages
    );
    println!("| --- | --- | --- | --- | --- |");
    println!(
        "| publish -> every other peer (ms) | {} |",
        percentiles(&mut to_all)
    );
    println!(
        "| publish -> one peer (ms) | {} |",
        percentiles(&mut to_one)
    );
    println!("\nlost deliveries: {lost}, dropped by slow consumers: {dropped}\n");
    println!(
        "| one publisher -> {others} peers, {} messages | in flight | delivered | until last delivery | rate to all peers |",
        args.burst
    );
    println!("| --- | --- | --- | --- | --- |");
    open.print("open loop", "all", message_bytes);
    closed.print("closed loop", &args.window.to_string(), message_bytes);
    for node in nodes {
        node.shutdown().await;
    }
    Ok(())
}

struct Throughput {
    delivered: usize,
    expected: usize,
    /// From the first publish to the last delivery.
    elapsed: Duration,
    peers: usize,
}

impl Throughput {
    fn print(&self, name: &str, in_flight: &str, message_bytes: usize) {
        let rate = self.delivered as f64 / self.peers as f64 / self.elapsed.as_secs_f64();
        println!(
            "| {name} | {in_flight} | {:.1} % | {:.2} s | {rate:.0} msg/s ({:.1} MiB/s per peer) |",
            100.0 * self.delivered as f64 / self.expected as f64,
            self.elapsed.as_secs_f64(),
            rate * message_bytes as f64 / (1024.0 * 1024.0)
        );
    }
}

/// `count` messages from `publisher`, numbered from `first`, with at most `window` of them not yet
/// received by all `peers`. Ends when every peer has every message, or nothing arrived for 2 s.
async fn throughput(
    publisher: &Network,
    template: &Template,
    delivered: &mut mpsc::UnboundedReceiver<Delivery>,
    first: u64,
    count: usize,
    peers: usize,
    window: usize,
) -> anyhow::Result<Throughput> {
    let messages: Vec<Vec<u8>> = (first..first + count as u64)
        .map(|sequence| encode(&template.message(publisher.local_peer_id(), sequence)))
        .collect();
    let mut arrivals: HashMap<u64, usize> = HashMap::new();
    let (mut published, mut complete, mut received) = (0, 0, 0);
    let started = Instant::now();
    let mut last = started;
    while complete < count {
        if published < count && published - complete < window {
            publish(publisher, messages[published].clone()).await?;
            published += 1;
            continue;
        }
        match timeout(Duration::from_secs(2), delivered.recv()).await {
            Ok(Some(delivery)) if delivery.sequence >= first => {
                received += 1;
                last = last.max(delivery.at);
                let arrived = arrivals.entry(delivery.sequence).or_default();
                *arrived += 1;
                if *arrived == peers {
                    complete += 1;
                }
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    Ok(Throughput {
        delivered: received,
        expected: count * peers,
        elapsed: last - started,
        peers,
    })
}

/// The previous node and up to `links - 1` random earlier ones: a connected random graph.
fn bootstrap_links(
    earlier: &[Multiaddr],
    links: usize,
    rng: &mut Xoshiro256PlusPlus,
) -> Vec<Multiaddr> {
    let Some((previous, rest)) = earlier.split_last() else {
        return Vec::new();
    };
    let mut chosen = vec![previous.clone()];
    let extra = links.saturating_sub(1).min(rest.len());
    chosen.extend(
        index::sample(rng, rest.len(), extra)
            .into_iter()
            .map(|at| rest[at].clone()),
    );
    chosen
}

async fn publish(network: &Network, bytes: Vec<u8>) -> anyhow::Result<()> {
    loop {
        match network.publish(bytes.clone()).await {
            Ok(()) => return Ok(()),
            // Back-pressure from full send queues, or peers still subscribing: try again shortly.
            Err(NetworkError::QueuesFull(_) | NetworkError::NoPeers) => {
                sleep(Duration::from_millis(1)).await;
            }
            Err(error) => return Err(error.into()),
        }
    }
}

/// Realistic rollouts: generated questions and completions of about the configured length; the
/// sequence number leads the first completion so receivers can tell messages apart.
struct Template {
    groups: Vec<SharedGroup>,
}

impl Template {
    fn new(args: &Args, rng: &mut Xoshiro256PlusPlus) -> Template {
        let filler = "Let me work through this step by step, checking each intermediate result. ";
        let groups = (0..args.groups)
            .map(|index| {
                let family = families::ALL[index % families::ALL.len()];
                let question = swarm_tasks::generate(family, Difficulty::default(), rng);
                let completions = (0..args.completions)
                    .map(|_| {
                        let answer = format!(" <answer>{}</answer>", question.answer);
                        let body: String = filler
                            .chars()
                            .cycle()
                            .take(args.completion_chars.saturating_sub(answer.len()))
                            .collect();
                        SharedCompletion {
                            text: body + &answer,
                            ended: rng.random_bool(0.8),
                            logprobs: Vec::new(),
                        }
                    })
                    .collect();
                SharedGroup {
                    question,
                    completions,
                }
            })
            .collect();
        Template { groups }
    }

    fn message(&self, sender: PeerId, sequence: u64) -> RolloutMessage {
        let mut groups = self.groups.clone();
        if let Some(first) = groups
            .first_mut()
            .and_then(|group| group.completions.first_mut())
        {
            first.text = format!("#{sequence} {}", first.text);
        }
        RolloutMessage {
            round: ROUND,
            sender,
            groups,
        }
    }
}

fn sequence_of(message: &RolloutMessage) -> Option<u64> {
    let text = &message.groups.first()?.completions.first()?.text;
    text.strip_prefix('#')?.split(' ').next()?.parse().ok()
}

/// "p50 | p90 | p99 | max" in milliseconds.
fn percentiles(samples: &mut [Duration]) -> String {
    if samples.is_empty() {
        return "- | - | - | -".into();
    }
    samples.sort_unstable();
    let at = |quantile: f64| {
        let index = ((samples.len() - 1) as f64 * quantile).round() as usize;
        format!("{:.2}", samples[index].as_secs_f64() * 1000.0)
    };
    [at(0.5), at(0.9), at(0.99), at(1.0)].join(" | ")
}
