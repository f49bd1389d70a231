//! The SAPO paper's controlled experiment, in small: the same swarm (members, rounds, seeds, task)
//! trained under several splits of each round's training groups between local (I) and external (J)
//! rollouts, compared by cumulative reward, the total over members and rounds of each member's
//! per-round mean reward.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use swarm_chart::{LineChart, Series};

use crate::local::{self, LocalError, LocalSwarm, Outcome};

/// The paper's configurations (arXiv 2509.08721, Qwen2.5-0.5B, 8 agents, 2000 rounds) and their
/// cumulative rewards.
pub const PAPER: [(u32, u32, f64); 4] = [
    (8, 0, 561.79),
    (6, 2, 854.43),
    (4, 4, 1093.31),
    (2, 6, 945.87),
];

/// One configuration's result.
#[derive(Debug, Clone)]
pub struct Arm {
    pub local: u32,
    pub external: u32,
    pub outcome: Outcome,
}

/// Runs `base` once per `(I, J)` split, each in its own directory under `base.out`, then writes
/// `experiment.csv` and `cumulative-reward.png` there.
pub fn run(
    base: &LocalSwarm,
    splits: &[(u32, u32)],
    binary: &Path,
) -> Result<Vec<Arm>, LocalError> {
    let mut arms = Vec::new();
    for &(local, external) in splits {
        let mut swarm = base.clone();
        swarm.training.local_rollouts = local;
        swarm.training.external_rollouts = external;
        swarm.out = base.out.join(format!("i{local}-j{external}"));
        println!(
            "running I/J = {local}/{external}: {} members x {} rounds ({})",
            swarm.members,
            swarm.rounds,
            swarm.out.display()
        );
        let outcome = local::run(&swarm, binary)?;
        println!("  cumulative reward {:.2}", outcome.cumulative_reward());
        arms.push(Arm {
            local,
            external,
            outcome,
        });
    }
    write_csv(&base.out.join("experiment.csv"), &arms)?;
    write_chart(&base.out.join("cumulative-reward.png"), &arms)?;
    Ok(arms)
}

/// Our cumulative rewards beside the paper's, with each one's gain over no sharing.
pub fn table(arms: &[Arm]) -> String {
    let isolated = arms
        .iter()
        .find(|a| a.external == 0)
        .map(|a| a.outcome.cumulative_reward());
    let gain = |value: f64, baseline: Option<f64>| match baseline {
        Some(b) if b > 0.0 => format!("{:+.0} %", (value / b - 1.0) * 100.0),
        _ => "-".into(),
    };
    let paper_isolated = PAPER[0].2;
    let mut text = String::from(
        "I/J   cumulative reward (here)   vs 8/0   last-quarter mean reward   skipped   \
         paper (Qwen2.5-0.5B, 8 agents, 2000 rounds)   vs 8/0\n",
    );
    for arm in arms {
        let ours = arm.outcome.cumulative_reward();
        let paper = PAPER
            .iter()
            .find(|(i, j, _)| (*i, *j) == (arm.local, arm.external))
            .map(|(_, _, total)| *total);
        let _ = writeln!(
            text,
            "{}/{}   {ours:>24.2}   {:>6}   {:>24.3}   {:>7}   {:>43}   {:>6}",
            arm.local,
            arm.external,
            gain(ours, isolated),
            arm.outcome.final_quarter_reward(),
            arm.outcome.skipped_rounds(),
            paper.map_or_else(|| "-".into(), |p| format!("{p:.2}")),
            paper.map_or_else(|| "-".into(), |p| gain(p, Some(paper_isolated))),
        );
    }
    text
}

fn write_csv(path: &Path, arms: &[Arm]) -> Result<(), LocalError> {
    let mut csv = String::from(
        "local,external,members,rounds_reported,skipped_rounds,cumulative_reward,final_quarter_reward\n",
    );
    for arm in arms {
        let _ = writeln!(
            csv,
            "{},{},{},{},{},{:.4},{:.4}",
            arm.local,
            arm.external,
            arm.outcome.members.len(),
            arm.outcome.reports.len(),
            arm.outcome.skipped_rounds(),
            arm.outcome.cumulative_reward(),
            arm.outcome.final_quarter_reward()
        );
    }
    fs::write(path, csv).map_err(|source| LocalError::Io {
        path: PathBuf::from(path),
        source,
    })
}

/// Cumulative reward over rounds, one line per split.
fn write_chart(path: &Path, arms: &[Arm]) -> Result<(), LocalError> {
    let series = arms
        .iter()
        .map(|arm| {
            let mut per_round: Vec<(u64, f64)> = Vec::new();
            for report in &arm.outcome.reports {
                match per_round
                    .iter_mut()
                    .find(|(round, _)| *round == report.round)
                {
                    Some((_, total)) => *total += report.reward,
                    None => per_round.push((report.round, report.reward)),
                }
            }
            per_round.sort_by_key(|(round, _)| *round);
            let mut running = 0.0;
            Series {
                name: format!("I/J {}/{}", arm.local, arm.external),
                points: per_round
                    .into_iter()
                    .map(|(round, total)| {
                        running += total;
                        (round as f64, running)
                    })
                    .collect(),
            }
        })
        .collect();
    let chart = LineChart {
        title: "Cumulative reward over all members".into(),
        x_label: "round".into(),
        y_label: "cumulative reward".into(),
        series,
        y_range: None,
    };
    let png = chart.render_png(960, 540)?;
    fs::write(path, png).map_err(|source| LocalError::Io {
        path: PathBuf::from(path),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::RoundReport;

    fn arm(local: u32, external: u32, rewards: &[f64]) -> Arm {
        let members = vec!["local-0".to_owned(), "local-1".to_owned()];
        let reports = members
            .iter()
            .flat_map(|member| {
                rewards
                    .iter()
                    .enumerate()
                    .map(|(round, reward)| RoundReport {
                        member: member.clone(),
                        round: round as u64,
                        reward: *reward,
                        ..RoundReport::default()
                    })
            })
            .collect();
        Arm {
            local,
            external,
            outcome: Outcome {
                members,
                reports,
                ledger: None,
            },
        }
    }

    #[test]
    fn table_compares_with_isolation_and_the_paper() {
        let isolated = arm(8, 0, &[0.1, 0.1, 0.1, 0.1, 0.1]);
        let shared = arm(4, 4, &[0.1, 0.1, 0.2, 0.2, 0.4]);
        assert!((isolated.outcome.cumulative_reward() - 1.0).abs() < 1e-9);
        assert!((shared.outcome.cumulative_reward() - 2.0).abs() < 1e-9);
        // Rounds 0..=4: the last quarter starts at round 3.
        assert!((shared.outcome.final_quarter_reward() - 0.3).abs() < 1e-9);
        let table = table(&[isolated, shared]);
        let rows: Vec<&str> = table.lines().collect();
        assert_eq!(rows.len(), 3, "{table}");
        assert!(
            rows[1].starts_with("8/0") && rows[1].contains("561.79"),
            "{table}"
        );
        assert!(
            rows[2].starts_with("4/4") && rows[2].contains("+100 %"),
            "{table}"
        );
        assert!(
            rows[2].contains("1093.31") && rows[2].contains("+95 %"),
            "{table}"
        );
    }
}
