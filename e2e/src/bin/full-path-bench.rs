//! The full path's startup benchmark on real pods: for each N, apply a Swarm of N members with an
//! anvil ledger (the operator a pod on the real node, the members containers of the node image
//! there) and report the seconds from `kubectl apply` until all N are Running and Ready (their
//! readiness probes), until every member's node has started (its `started` report in the
//! container's log), until all train together (a round with every other member connected and
//! heard from), and until every member has a round recorded on the chain. Rounds are wall-clock
//! periods of `ROUND_SECONDS` from the Swarm's creation, so the last two include up to a round of
//! waiting by design. Run it through `e2e/bin/bench-full-path`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use swarm_e2e::testbed::{Instance, ROUND_SECONDS, SWARM, TRAINING, Testbed};
use swarm_operator::api::Swarm;

#[tokio::main]
async fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("member counts, e.g. 4 6"))
        .collect();
    let sizes = if sizes.is_empty() { vec![4, 6] } else { sizes };
    println!("rounds of {ROUND_SECONDS} s; seconds from `kubectl apply`:");
    println!(
        "| members | all Running | all nodes started | all training together | all recorded on the ledger | training / Running |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: |");
    for n in sizes {
        let row = run(n).await;
        println!(
            "| {n} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2} |",
            row[0],
            row[1],
            row[2],
            row[3],
            row[2] / row[0]
        );
    }
}

/// Whether a member's node has reached a milestone.
type Reached<'a> = dyn Fn(&Instance) -> bool + 'a;

async fn run(n: usize) -> [f64; 4] {
    let bed = Testbed::new(&format!("fp{n}")).await;
    let swarms = bed.f.api::<Swarm>();
    let started = Instant::now();
    bed.f.apply_yaml(&bed.swarm_yaml(n as u32));

    bed.wait(&format!("{n} members Running"), TRAINING, || async {
        let ready = swarms
            .get(SWARM)
            .await
            .map_err(|e| e.to_string())?
            .status
            .unwrap_or_default()
            .ready_replicas;
        if ready as usize == n {
            Ok(())
        } else {
            Err(format!("{ready} ready"))
        }
    })
    .await;
    let running = started.elapsed().as_secs_f64();

    // After Running, each milestone is when every member's node has reached it.
    let milestones: [(&str, &Reached); 3] = [
        ("nodes started", &|i| !i.starts().is_empty()),
        ("members training together", &|i| {
            i.rounds()
                .iter()
                .any(|r| r.peers == n - 1 && r.external_peers == n - 1)
        }),
        ("members with a round on the ledger", &|i| {
            i.rounds()
                .iter()
                .any(|r| r.ledger_recorded.unwrap_or(0) >= 1)
        }),
    ];
    let mut seconds = [running, 0.0, 0.0, 0.0];
    for ((what, reached), at) in milestones.into_iter().zip(&mut seconds[1..]) {
        bed.wait(&format!("{n} {what}"), TRAINING, || async {
            let running = bed.running().await?;
            if running.len() == n && running.values().all(reached) {
                Ok(())
            } else {
                Err(format!("{} running", running.len()))
            }
        })
        .await;
        *at = started.elapsed().as_secs_f64();
    }
    seconds
}
