//! The SAPO paper's controlled experiment, in small: the same swarm (members, rounds, base model,
//! task mix) trained under several splits of each round's training groups between the member's own
//! (I) and its peers' (J), and under several sharing policies, each arm with several seeds,
//! compared by cumulative reward (the total over members and rounds of each member's per-round
//! mean reward on its own completions) and by a greedy evaluation on held-out questions before
//! and after.
//!
//! The members of a run train in lockstep in this one process, on the same [`Learner`] a
//! networked member runs: every round each member samples, its groups go through the wire
//! format and the network's checks (encode, decode within the limits, validate, log-probability
//! counts) to every other member, and each member trains on what it chose. Nothing depends on
//! timing or machine load, so a seed gives the same numbers on every run on the same libtorch;
//! the members are spread over worker threads only to use the machine's cores. Arms are
//! interleaved seed by seed, so stopping a long comparison early leaves every arm with as many
//! seeds as the others.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use swarm_chart::{LineChart, Series};
use swarm_node_config::{SharingPolicy, TaskFamily, TrainingConfig};
use swarm_p2p::{Expectations, Limits, PeerId, SharedGroup, TokenCounter};
use swarm_rl::RewardStats;
use swarm_tasks::{Difficulty, Question, generate};

use crate::exchange::split_messages;
use crate::learner::{Learner, is_held_out, source_name};
use crate::member::NodeError;

/// The paper's configurations (arXiv 2509.08721, Qwen2.5-0.5B, 8 agents, 2000 rounds) and their
/// cumulative rewards.
pub const PAPER: [(u32, u32, f64); 4] = [
    (8, 0, 561.79),
    (6, 2, 854.43),
    (4, 4, 1093.31),
    (2, 6, 945.87),
];

/// Bootstrap resamples for the interval of a difference.
const RESAMPLES: usize = 10_000;
/// Draws per family when collecting the distinct held-out evaluation questions.
const EVALUATION_DRAWS: usize = 20_000;
/// Seed of the evaluation questions: the same set for every arm and seed.
const EVALUATION_SEED: u64 = 0x0e7a_1000;

#[derive(Debug, thiserror::Error)]
pub enum ExperimentError {
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot render the chart: {0}")]
    Chart(#[from] swarm_chart::ChartError),
    #[error("a member's worker thread panicked")]
    Worker,
    #[error("{0}")]
    Invalid(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ExperimentError + '_ {
    move |source| ExperimentError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One configuration of the comparison: an I/J split under a sharing policy (none when J is 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Arm {
    pub local: u32,
    pub external: u32,
    pub policy: Option<SharingPolicy>,
}

impl Arm {
    /// `8/0`, or `4/4 positive`.
    pub fn label(&self) -> String {
        match self.policy {
            Some(policy) => format!("{}/{} {}", self.local, self.external, policy_name(policy)),
            None => format!("{}/{}", self.local, self.external),
        }
    }

    fn is_isolated(&self) -> bool {
        self.external == 0
    }
}

/// The family's name as the config spells it.
pub fn family_name(family: TaskFamily) -> String {
    source_name(&swarm_tasks::Source::Procedural(family))
}

/// The policy's name as the config spells it.
pub fn policy_name(policy: SharingPolicy) -> String {
    serde_json::to_value(policy)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// What to compare and on what.
#[derive(Debug, Clone)]
pub struct Experiment {
    pub members: usize,
    pub rounds: u64,
    pub seeds: Vec<u64>,
    /// I/J splits; one with J = 0 is the isolated baseline, run once whatever the policies.
    pub splits: Vec<(u32, u32)>,
    pub policies: Vec<SharingPolicy>,
    /// The training settings every arm shares (tasks or task groups, learning rate, ...); I, J,
    /// the policy and the seed are set per arm.
    pub training: TrainingConfig,
    pub model: PathBuf,
    /// Distinct held-out questions per family in the evaluation set.
    pub evaluation_questions: usize,
    /// Worker threads the members are spread over.
    pub threads: usize,
    pub out: PathBuf,
    /// Keep the runs an earlier invocation wrote to `out/experiment.json` (same members, rounds,
    /// training settings, model and evaluation set) and run only the missing arm-seed pairs, so
    /// a comparison can be split over several invocations and still be summarised as one.
    pub resume: bool,
}

impl Experiment {
    /// Every arm: the isolated one first, then each policy's splits.
    pub fn arms(&self) -> Vec<Arm> {
        let mut arms: Vec<Arm> = self
            .splits
            .iter()
            .filter(|(_, external)| *external == 0)
            .map(|&(local, external)| Arm {
                local,
                external,
                policy: None,
            })
            .collect();
        for &policy in &self.policies {
            for &(local, external) in self.splits.iter().filter(|(_, j)| *j > 0) {
                arms.push(Arm {
                    local,
                    external,
                    policy: Some(policy),
                });
            }
        }
        arms
    }

    fn check(&self) -> Result<(), ExperimentError> {
        let invalid = |what: &str| Err(ExperimentError::Invalid(what.to_owned()));
        if self.members < 2 {
            return invalid("an experiment needs at least 2 members to share anything");
        }
        if self.rounds < 4 {
            return invalid("an experiment needs at least 4 rounds (its quarters are compared)");
        }
        if self.seeds.is_empty() {
            return invalid("an experiment needs at least one seed");
        }
        if !self.splits.iter().any(|(_, external)| *external == 0) {
            return invalid("the splits need an isolated one (J = 0) to compare against");
        }
        if self.splits.iter().any(|(i, j)| i + j == 0) {
            return invalid("a split must train on something (I + J > 0)");
        }
        if self.threads == 0 {
            return invalid("at least one worker thread");
        }
        let questions = self.training.questions_per_round;
        if self.splits.iter().any(|(local, _)| *local > questions) {
            return invalid("a split's I is larger than the questions per round");
        }
        // The rest of the settings must be what a Swarm would admit; each arm sets I and J.
        let mut training = self.training.clone();
        training.local_rollouts = 0;
        training.external_rollouts = 1;
        training.check().map_err(ExperimentError::Invalid)
    }
}

/// One member's record of one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberRecord {
    pub name: String,
    /// Per round: the mean reward of its own completions.
    pub rewards: Vec<f64>,
    /// Per round: own and peers' groups trained on, and peers' completions in the loss.
    pub trained_local: Vec<usize>,
    pub trained_external: Vec<usize>,
    pub external_completions: Vec<usize>,
    /// Greedy accuracy on the held-out questions, per family, before the first round and after
    /// the last.
    pub evaluation_before: BTreeMap<String, f64>,
    pub evaluation_after: BTreeMap<String, f64>,
}

impl MemberRecord {
    pub fn cumulative_reward(&self) -> f64 {
        self.rewards.iter().sum()
    }
}

/// One arm trained from one seed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub arm: Arm,
    pub seed: u64,
    pub members: Vec<MemberRecord>,
    pub seconds: f64,
}

impl Run {
    pub fn cumulative_reward(&self) -> f64 {
        self.members
            .iter()
            .map(MemberRecord::cumulative_reward)
            .sum()
    }

    /// Mean over members of the mean reward over the rounds in `rounds`.
    fn mean_reward(&self, rounds: std::ops::Range<usize>) -> f64 {
        let per_member: Vec<f64> = self
            .members
            .iter()
            .map(|m| mean(&m.rewards[rounds.clone()]))
            .collect();
        mean(&per_member)
    }

    fn quarters(&self) -> (f64, f64) {
        let rounds = self.members.first().map_or(0, |m| m.rewards.len());
        let quarter = (rounds / 4).max(1);
        (
            self.mean_reward(0..quarter),
            self.mean_reward(rounds - quarter..rounds),
        )
    }

    fn evaluation(&self, after: bool) -> f64 {
        let per_member: Vec<f64> = self
            .members
            .iter()
            .map(|m| {
                let scores = if after {
                    &m.evaluation_after
                } else {
                    &m.evaluation_before
                };
                mean(&scores.values().copied().collect::<Vec<_>>())
            })
            .collect();
        mean(&per_member)
    }
}

/// Everything an experiment produced, as written to `experiment.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Results {
    pub members: usize,
    pub rounds: u64,
    pub seeds: Vec<u64>,
    pub training: TrainingConfig,
    /// SHA-256 of the base model's files, so resumed runs start from the same weights.
    #[serde(default)]
    pub model: String,
    /// The held-out families and the number of distinct questions of each.
    pub evaluation: BTreeMap<String, usize>,
    pub runs: Vec<Run>,
}

impl Results {
    /// Why the runs in `self` cannot be summarised with runs made under `fresh`'s settings.
    fn incompatibility(&self, fresh: &Results) -> Option<&'static str> {
        if self.members != fresh.members {
            Some("members")
        } else if self.rounds != fresh.rounds {
            Some("rounds")
        } else if self.training != fresh.training {
            Some("training settings")
        } else if self.model != fresh.model {
            Some("base model")
        } else if self.evaluation != fresh.evaluation {
            Some("evaluation set")
        } else {
            None
        }
    }

    /// The arm-seed pairs of `arms` × `seeds` without a run yet, seed by seed.
    fn missing(&self, arms: &[Arm], seeds: &[u64]) -> Vec<(u64, Arm)> {
        seeds
            .iter()
            .flat_map(|&seed| arms.iter().map(move |&arm| (seed, arm)))
            .filter(|&(seed, arm)| !self.runs.iter().any(|r| r.seed == seed && r.arm == arm))
            .collect()
    }
}

/// An arm's numbers over its seeds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArmSummary {
    pub arm: Arm,
    pub seeds: usize,
    /// Cumulative reward: mean and standard deviation over seeds, and each seed's.
    pub cumulative_mean: f64,
    pub cumulative_sd: f64,
    pub cumulative_by_seed: Vec<f64>,
    /// Relative difference to the isolated arm, `sum(arm) / sum(isolated) - 1`, and its 95 %
    /// bootstrap interval (seeds, then members within them, resampled; paired by seed and member).
    pub versus_isolated: Option<Difference>,
    /// Mean reward over the first and the last quarter of the rounds (mean over seeds).
    pub first_quarter: f64,
    pub last_quarter: f64,
    /// Greedy held-out accuracy before and after (mean over seeds and members and families).
    pub evaluation_before: f64,
    pub evaluation_after: f64,
    /// Per family, after.
    pub evaluation_after_by_family: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Difference {
    pub relative: f64,
    pub low: f64,
    pub high: f64,
}

/// Runs every arm with every seed (when resuming, those `experiment.json` lacks), seed by seed,
/// writing `experiment.json` after each run and `reward.png` at the end to `experiment.out`;
/// prints a line per run.
pub fn run(experiment: &Experiment) -> Result<Results, ExperimentError> {
    experiment.check()?;
    fs::create_dir_all(&experiment.out).map_err(io(&experiment.out))?;
    let families = evaluation_families(&experiment.training);
    let evaluation = evaluation_set(
        &families,
        &experiment.training,
        experiment.evaluation_questions,
    );
    let mut results = Results {
        members: experiment.members,
        rounds: experiment.rounds,
        seeds: experiment.seeds.clone(),
        training: experiment.training.clone(),
        model: model_digest(&experiment.model)?,
        evaluation: evaluation
            .iter()
            .map(|(family, questions)| (family.clone(), questions.len()))
            .collect(),
        runs: Vec::new(),
    };
    let json_path = experiment.out.join("experiment.json");
    if experiment.resume && json_path.exists() {
        let prior: Results = fs::read(&json_path)
            .map_err(io(&json_path))
            .and_then(|bytes| {
                serde_json::from_slice(&bytes).map_err(|err| {
                    ExperimentError::Invalid(format!("{}: {err}", json_path.display()))
                })
            })?;
        if let Some(what) = prior.incompatibility(&results) {
            return Err(ExperimentError::Invalid(format!(
                "{} was made with other {what}: resume it with the same settings, or write to \
                 another --out",
                json_path.display()
            )));
        }
        results.runs = prior.runs;
        for seed in prior.seeds {
            if !results.seeds.contains(&seed) {
                results.seeds.push(seed);
            }
        }
        println!(
            "resuming: {} runs kept from {}",
            results.runs.len(),
            json_path.display()
        );
    }
    let pending = results.missing(&experiment.arms(), &experiment.seeds);
    let total = pending.len();
    let started = Instant::now();
    for (done, (seed, arm)) in pending.into_iter().enumerate() {
        let run = run_arm(experiment, arm, seed, &evaluation)?;
        let (first, last) = run.quarters();
        println!(
            "[{:>3}/{total}] seed {seed} {:<16} cumulative reward {:>8.2}  reward {:.3} -> {:.3}  \
             held-out {:.3} -> {:.3}  ({:.0} s, {:.0} s in all)",
            done + 1,
            arm.label(),
            run.cumulative_reward(),
            first,
            last,
            run.evaluation(false),
            run.evaluation(true),
            run.seconds,
            started.elapsed().as_secs_f64()
        );
        results.runs.push(run);
        // Written after every run, so an interrupted comparison keeps what it finished.
        write_json(&json_path, &results)?;
    }
    let summaries = summarise(&results);
    write_chart(&experiment.out.join("reward.png"), &results, &summaries)?;
    Ok(results)
}

/// SHA-256 over the names and contents of the files in the model directory, in name order.
fn model_digest(dir: &Path) -> Result<String, ExperimentError> {
    let mut paths: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(io(dir))?
        .map(|entry| entry.map(|e| e.path()).map_err(io(dir)))
        .collect::<Result<_, _>>()?;
    paths.retain(|path| path.is_file());
    paths.sort();
    let mut hasher = Sha256::new();
    for path in paths {
        hasher.update(path.file_name().unwrap_or_default().as_encoded_bytes());
        hasher.update(fs::read(&path).map_err(io(&path))?);
    }
    Ok(hex::encode(&hasher.finalize()[..]))
}

/// The families members are evaluated on: every family any member trains on (all of them when
/// the mix is empty).
fn evaluation_families(training: &TrainingConfig) -> Vec<TaskFamily> {
    let families = training.all_tasks();
    if families.is_empty() {
        swarm_tasks::families::ALL.to_vec()
    } else {
        families
    }
}

/// Up to `per_family` distinct held-out questions of each family, from a fixed seed.
fn evaluation_set(
    families: &[TaskFamily],
    training: &TrainingConfig,
    per_family: usize,
) -> Vec<(String, Vec<Question>)> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(EVALUATION_SEED);
    families
        .iter()
        .map(|&family| {
            let mut questions: Vec<Question> = Vec::new();
            for _ in 0..EVALUATION_DRAWS {
                if questions.len() == per_family {
                    break;
                }
                let question = generate(family, Difficulty::new(training.difficulty), &mut rng);
                if is_held_out(&question) && !questions.contains(&question) {
                    questions.push(question);
                }
            }
            (family_name(family), questions)
        })
        .collect()
}

/// One member of a run: its learner and its record so far.
struct Participant {
    peer: PeerId,
    learner: Learner,
    record: MemberRecord,
}

fn run_arm(
    experiment: &Experiment,
    arm: Arm,
    seed: u64,
    evaluation: &[(String, Vec<Question>)],
) -> Result<Run, ExperimentError> {
    let started = Instant::now();
    let mut training = experiment.training.clone();
    training.local_rollouts = arm.local;
    training.external_rollouts = arm.external;
    training.seed = Some(seed);
    if let Some(policy) = arm.policy {
        training.sharing.policy = policy;
    }
    let mut participants = (0..experiment.members)
        .map(|index| {
            let name = format!("local-{index}");
            let mut learner = Learner::load(
                &name,
                &experiment.model,
                swarm_node_config::Dtype::F32,
                &training,
            )?;
            learner.hold_out_evaluation_questions();
            Ok(Participant {
                peer: PeerId::random(),
                learner,
                record: MemberRecord {
                    name,
                    rewards: Vec::new(),
                    trained_local: Vec::new(),
                    trained_external: Vec::new(),
                    external_completions: Vec::new(),
                    evaluation_before: BTreeMap::new(),
                    evaluation_after: BTreeMap::new(),
                },
            })
        })
        .collect::<Result<Vec<_>, NodeError>>()?;
    let counter = participants[0].learner.token_counter();
    let group_size = usize::try_from(training.completions_per_question).unwrap_or(usize::MAX);

    in_parallel(&mut participants, experiment.threads, |p| {
        p.record.evaluation_before = evaluate(&mut p.learner, evaluation)?;
        Ok(())
    })?;
    for round in 0..experiment.rounds {
        let local = in_parallel(&mut participants, experiment.threads, |p| {
            let groups = p.learner.generate(round)?;
            p.record.rewards.push(RewardStats::of(&groups).mean_reward);
            Ok(groups)
        })?;
        let received = exchange(&participants, &local, round, group_size, &counter)?;
        in_parallel_with(&mut participants, &local, experiment.threads, |p, own| {
            let external = p.learner.adopt(p.peer, &received);
            let trained = p.learner.train(round, own, &external)?;
            p.record.trained_local.push(trained.local_groups);
            p.record.trained_external.push(trained.external_groups);
            p.record
                .external_completions
                .push(trained.external_completions);
            Ok(())
        })?;
    }
    in_parallel(&mut participants, experiment.threads, |p| {
        p.record.evaluation_after = evaluate(&mut p.learner, evaluation)?;
        Ok(())
    })?;
    Ok(Run {
        arm,
        seed,
        members: participants.into_iter().map(|p| p.record).collect(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Every member's groups of the round as its peers receive them: split into messages within the
/// size limit, encoded, then decoded, validated and checked as the network does on arrival.
fn exchange(
    participants: &[Participant],
    local: &[Vec<swarm_rl::Group>],
    round: u64,
    group_size: usize,
    counter: &TokenCounter,
) -> Result<Vec<(PeerId, Vec<SharedGroup>)>, ExperimentError> {
    let limits = Limits::default();
    let expect = Expectations {
        current_round: round,
        round_window: 1,
        group_size,
    };
    let mut received = Vec::new();
    for (participant, groups) in participants.iter().zip(local) {
        let shared = participant.learner.share(groups);
        for message in split_messages(
            round,
            participant.peer,
            shared,
            &limits,
            swarm_node_config::limits::MESSAGES_PER_PEER_PER_ROUND as usize,
        ) {
            let arrived = swarm_p2p::decode(&swarm_p2p::encode(&message), &limits)
                .and_then(|message| {
                    swarm_p2p::validate(&message, &participant.peer, &expect)?;
                    swarm_p2p::check_logprob_counts(&message, |c| counter(c))?;
                    Ok(message)
                })
                .map_err(|rejection| {
                    ExperimentError::Invalid(format!(
                        "a member's own message was rejected: {rejection}"
                    ))
                })?;
            received.push((participant.peer, arrived.groups));
        }
    }
    Ok(received)
}

fn evaluate(
    learner: &mut Learner,
    evaluation: &[(String, Vec<Question>)],
) -> Result<BTreeMap<String, f64>, NodeError> {
    evaluation
        .iter()
        .filter(|(_, questions)| !questions.is_empty())
        .map(|(family, questions)| Ok((family.clone(), learner.evaluate(questions)?.mean_reward)))
        .collect()
}

/// `work` on every participant, the participants split into `threads` contiguous chunks run on
/// their own threads; the results in participant order.
fn in_parallel<T: Send>(
    participants: &mut [Participant],
    threads: usize,
    work: impl Fn(&mut Participant) -> Result<T, NodeError> + Sync,
) -> Result<Vec<T>, ExperimentError> {
    let inputs = vec![(); participants.len()];
    in_parallel_with(participants, &inputs, threads, |p, ()| work(p))
}

/// [`in_parallel`] with one input per participant.
fn in_parallel_with<I: Sync, T: Send>(
    participants: &mut [Participant],
    inputs: &[I],
    threads: usize,
    work: impl Fn(&mut Participant, &I) -> Result<T, NodeError> + Sync,
) -> Result<Vec<T>, ExperimentError> {
    let chunk = participants.len().div_ceil(threads.max(1)).max(1);
    let work = &work;
    let results: Vec<Result<Vec<T>, NodeError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = participants
            .chunks_mut(chunk)
            .zip(inputs.chunks(chunk))
            .map(|(members, inputs)| {
                scope.spawn(move || {
                    members
                        .iter_mut()
                        .zip(inputs)
                        .map(|(p, input)| work(p, input))
                        .collect::<Result<Vec<T>, NodeError>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().unwrap_or_else(|_| Ok(Vec::new())))
            .collect()
    });
    let mut out = Vec::with_capacity(participants.len());
    for result in results {
        out.extend(result?);
    }
    if out.len() != participants.len() {
        return Err(ExperimentError::Worker);
    }
    Ok(out)
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len().max(1) as f64
}

/// Sample standard deviation; 0 for fewer than two values.
fn sd(values: &[f64]) -> f64 {
    if values.len() < 2 {
        return 0.0;
    }
    let m = mean(values);
    (values.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (values.len() - 1) as f64).sqrt()
}

/// Each arm's numbers over its seeds, in the order of the runs.
pub fn summarise(results: &Results) -> Vec<ArmSummary> {
    let mut arms: Vec<Arm> = Vec::new();
    for run in &results.runs {
        if !arms.contains(&run.arm) {
            arms.push(run.arm);
        }
    }
    let runs_of =
        |arm: &Arm| -> Vec<&Run> { results.runs.iter().filter(|r| r.arm == *arm).collect() };
    let isolated = arms.iter().find(|a| a.is_isolated()).map(runs_of);
    arms.iter()
        .map(|arm| {
            let runs = runs_of(arm);
            let cumulative: Vec<f64> = runs.iter().map(|r| r.cumulative_reward()).collect();
            let quarters: Vec<(f64, f64)> = runs.iter().map(|r| r.quarters()).collect();
            let mut by_family: BTreeMap<String, Vec<f64>> = BTreeMap::new();
            for run in &runs {
                for member in &run.members {
                    for (family, score) in &member.evaluation_after {
                        by_family.entry(family.clone()).or_default().push(*score);
                    }
                }
            }
            ArmSummary {
                arm: *arm,
                seeds: runs.len(),
                cumulative_mean: mean(&cumulative),
                cumulative_sd: sd(&cumulative),
                cumulative_by_seed: cumulative,
                versus_isolated: match &isolated {
                    Some(base) if !arm.is_isolated() => difference(&runs, base),
                    _ => None,
                },
                first_quarter: mean(&quarters.iter().map(|q| q.0).collect::<Vec<_>>()),
                last_quarter: mean(&quarters.iter().map(|q| q.1).collect::<Vec<_>>()),
                evaluation_before: mean(
                    &runs.iter().map(|r| r.evaluation(false)).collect::<Vec<_>>(),
                ),
                evaluation_after: mean(
                    &runs.iter().map(|r| r.evaluation(true)).collect::<Vec<_>>(),
                ),
                evaluation_after_by_family: by_family
                    .into_iter()
                    .map(|(family, scores)| (family, mean(&scores)))
                    .collect(),
            }
        })
        .collect()
}

/// `sum(arm) / sum(base) - 1` over the seeds both ran, with a 95 % percentile interval from a
/// two-stage bootstrap: seeds resampled with replacement, then members within each resampled
/// seed, each (seed, member) pair keeping its arm and baseline values together.
fn difference(arm: &[&Run], base: &[&Run]) -> Option<Difference> {
    // Per shared seed: per member, (arm's cumulative reward, baseline's).
    let pairs: Vec<Vec<(f64, f64)>> = arm
        .iter()
        .filter_map(|run| {
            let baseline = base.iter().find(|b| b.seed == run.seed)?;
            Some(
                run.members
                    .iter()
                    .zip(&baseline.members)
                    .map(|(a, b)| (a.cumulative_reward(), b.cumulative_reward()))
                    .collect(),
            )
        })
        .collect();
    if pairs.is_empty() || pairs.iter().any(Vec::is_empty) {
        return None;
    }
    let relative = |sample: &mut dyn Iterator<Item = (f64, f64)>| {
        let (a, b) = sample.fold((0.0, 0.0), |(sa, sb), (a, b)| (sa + a, sb + b));
        if b > 0.0 { a / b - 1.0 } else { f64::NAN }
    };
    let point = relative(&mut pairs.iter().flatten().copied());
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(0xb007);
    let mut draws: Vec<f64> = (0..RESAMPLES)
        .map(|_| {
            let mut sample = Vec::new();
            for _ in 0..pairs.len() {
                let seed = &pairs[rng.random_range(0..pairs.len())];
                for _ in 0..seed.len() {
                    sample.push(seed[rng.random_range(0..seed.len())]);
                }
            }
            relative(&mut sample.into_iter())
        })
        .filter(|d| d.is_finite())
        .collect();
    draws.sort_by(f64::total_cmp);
    let at = |q: f64| draws[((draws.len() - 1) as f64 * q).round() as usize];
    (!draws.is_empty()).then(|| Difference {
        relative: point,
        low: at(0.025),
        high: at(0.975),
    })
}

/// The comparison as a text table, arms in run order, with the paper's numbers where it has the
/// same split.
pub fn table(summaries: &[ArmSummary]) -> String {
    let mut text = String::from(
        "arm               seeds  cumulative reward (mean ± sd)   vs 8/0 [95 % interval]       \
         reward 1st -> last quarter   held-out before -> after   paper vs 8/0\n",
    );
    let paper_isolated = PAPER[0].2;
    for s in summaries {
        let versus = s.versus_isolated.map_or_else(
            || "-".to_owned(),
            |d| {
                format!(
                    "{:+.1} % [{:+.1}, {:+.1}]",
                    d.relative * 100.0,
                    d.low * 100.0,
                    d.high * 100.0
                )
            },
        );
        let paper = PAPER
            .iter()
            .find(|(i, j, _)| (*i, *j) == (s.arm.local, s.arm.external))
            .filter(|_| !s.arm.is_isolated())
            .map_or_else(
                || "-".to_owned(),
                |(_, _, total)| format!("{:+.0} %", (total / paper_isolated - 1.0) * 100.0),
            );
        let _ = writeln!(
            text,
            "{:<17} {:>5}  {:>14.2} ± {:<14.2} {:<28} {:>10.3} -> {:<13.3} {:>10.3} -> {:<13.3} {paper}",
            s.arm.label(),
            s.seeds,
            s.cumulative_mean,
            s.cumulative_sd,
            versus,
            s.first_quarter,
            s.last_quarter,
            s.evaluation_before,
            s.evaluation_after,
        );
    }
    text
}

fn write_json(path: &Path, results: &Results) -> Result<(), ExperimentError> {
    let json = serde_json::to_string(results).map_err(|e| ExperimentError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(e),
    })?;
    fs::write(path, json).map_err(io(path))
}

/// Mean reward per round over members, one line per arm: the mean over seeds, with a band from
/// the lowest to the highest seed; smoothed over a trailing window so the trend shows through
/// the sampling noise.
fn write_chart(
    path: &Path,
    results: &Results,
    summaries: &[ArmSummary],
) -> Result<(), ExperimentError> {
    let rounds = usize::try_from(results.rounds).unwrap_or(usize::MAX);
    let window = (rounds / 10).max(1);
    let series = summaries
        .iter()
        .map(|summary| {
            let per_seed: Vec<Vec<f64>> = results
                .runs
                .iter()
                .filter(|r| r.arm == summary.arm)
                .map(|run| {
                    let per_round: Vec<f64> = (0..rounds)
                        .map(|round| {
                            mean(
                                &run.members
                                    .iter()
                                    .filter_map(|m| m.rewards.get(round).copied())
                                    .collect::<Vec<_>>(),
                            )
                        })
                        .collect();
                    (0..rounds)
                        .map(|round| {
                            let from = (round + 1).saturating_sub(window);
                            mean(&per_round[from..=round])
                        })
                        .collect()
                })
                .collect();
            let at = |round: usize| -> Vec<f64> { per_seed.iter().map(|s| s[round]).collect() };
            let points = (0..rounds)
                .map(|round| (round as f64, mean(&at(round))))
                .collect();
            let band = (0..rounds)
                .map(|round| {
                    let values = at(round);
                    let low = values.iter().copied().fold(f64::INFINITY, f64::min);
                    let high = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    (round as f64, low, high)
                })
                .collect();
            Series::new(summary.arm.label(), points).with_band(band)
        })
        .collect();
    let chart = LineChart {
        title: format!(
            "Mean reward per round ({} members, mean of {} seeds, band: lowest to highest seed)",
            results.members,
            results.seeds.len()
        ),
        x_label: format!("round (trailing mean over {window})"),
        y_label: "reward".into(),
        series,
        y_range: None,
    };
    let png = chart.render_png(1100, 620)?;
    fs::write(path, png).map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(arm: Arm, seed: u64, per_member: &[&[f64]]) -> Run {
        Run {
            arm,
            seed,
            members: per_member
                .iter()
                .enumerate()
                .map(|(i, rewards)| MemberRecord {
                    name: format!("local-{i}"),
                    rewards: rewards.to_vec(),
                    trained_local: Vec::new(),
                    trained_external: Vec::new(),
                    external_completions: Vec::new(),
                    evaluation_before: BTreeMap::from([("basic_arithmetic".into(), 0.25)]),
                    evaluation_after: BTreeMap::from([("basic_arithmetic".into(), 0.5)]),
                })
                .collect(),
            seconds: 1.0,
        }
    }

    const ISOLATED: Arm = Arm {
        local: 8,
        external: 0,
        policy: None,
    };
    const SHARED: Arm = Arm {
        local: 4,
        external: 4,
        policy: Some(SharingPolicy::Positive),
    };

    fn results(runs: Vec<Run>) -> Results {
        Results {
            members: 2,
            rounds: 4,
            seeds: vec![1, 2],
            training: TrainingConfig::default(),
            model: "ab12".into(),
            evaluation: BTreeMap::new(),
            runs,
        }
    }

    /// A resumed comparison runs only the arm-seed pairs the earlier one did not finish, seed by
    /// seed, and refuses runs made with other settings.
    #[test]
    fn resuming_runs_only_what_is_missing_under_the_same_settings() {
        let prior = results(vec![
            run(ISOLATED, 1, &[&[0.1; 4]]),
            run(SHARED, 1, &[&[0.2; 4]]),
        ]);
        let plain = Arm {
            policy: Some(SharingPolicy::Plain),
            ..SHARED
        };
        assert_eq!(
            prior.missing(&[ISOLATED, SHARED, plain], &[1, 2]),
            [(1, plain), (2, ISOLATED), (2, SHARED), (2, plain)]
        );
        assert_eq!(prior.incompatibility(&results(Vec::new())), None);
        let other_model = Results {
            model: "cd34".into(),
            ..results(Vec::new())
        };
        assert_eq!(prior.incompatibility(&other_model), Some("base model"));
        let mut other_training = results(Vec::new());
        other_training.training.learning_rate *= 2.0;
        assert_eq!(
            prior.incompatibility(&other_training),
            Some("training settings")
        );
        let fewer_rounds = Results {
            rounds: 2,
            ..results(Vec::new())
        };
        assert_eq!(prior.incompatibility(&fewer_rounds), Some("rounds"));
    }

    #[test]
    fn summaries_compare_with_isolation_over_seeds() {
        let summaries = summarise(&results(vec![
            run(ISOLATED, 1, &[&[0.1, 0.1, 0.1, 0.1], &[0.1, 0.1, 0.1, 0.1]]),
            run(SHARED, 1, &[&[0.1, 0.1, 0.2, 0.2], &[0.1, 0.1, 0.2, 0.2]]),
            run(ISOLATED, 2, &[&[0.2, 0.2, 0.2, 0.2], &[0.2, 0.2, 0.2, 0.2]]),
            run(SHARED, 2, &[&[0.2, 0.2, 0.3, 0.3], &[0.2, 0.2, 0.3, 0.3]]),
        ]));
        assert_eq!(summaries.len(), 2);
        let (isolated, shared) = (&summaries[0], &summaries[1]);
        assert_eq!(isolated.arm, ISOLATED);
        assert!(isolated.versus_isolated.is_none());
        assert!((isolated.cumulative_mean - 1.2).abs() < 1e-9);
        assert_eq!(shared.seeds, 2);
        assert!((shared.cumulative_by_seed[0] - 1.2).abs() < 1e-9);
        assert!((shared.cumulative_by_seed[1] - 2.0).abs() < 1e-9);
        // sd of 1.2 and 2.0.
        assert!((shared.cumulative_sd - 0.8 / 2f64.sqrt()).abs() < 1e-9);
        // 3.2 against 2.4 over both seeds: +33 %; every resample gains, so the interval is above 0.
        let d = shared.versus_isolated.unwrap();
        assert!((d.relative - 1.0 / 3.0).abs() < 1e-9, "{d:?}");
        assert!(
            d.low > 0.0 && d.low <= d.relative && d.relative <= d.high,
            "{d:?}"
        );
        assert!((shared.first_quarter - 0.15).abs() < 1e-9);
        assert!((shared.last_quarter - 0.25).abs() < 1e-9);
        assert!((shared.evaluation_after - 0.5).abs() < 1e-9);
        let table = table(&summaries);
        assert!(
            table.lines().nth(2).unwrap().starts_with("4/4 positive"),
            "{table}"
        );
        assert!(table.contains("+33.3 %"), "{table}");
        assert!(table.contains("+95 %"), "{table}");
    }

    /// When one seed gains and another loses, the interval of the difference spans zero.
    #[test]
    fn a_difference_that_changes_sign_between_seeds_has_an_interval_across_zero() {
        let summaries = summarise(&results(vec![
            run(ISOLATED, 1, &[&[0.2; 4], &[0.2; 4]]),
            run(SHARED, 1, &[&[0.3; 4], &[0.3; 4]]),
            run(ISOLATED, 2, &[&[0.2; 4], &[0.2; 4]]),
            run(SHARED, 2, &[&[0.1; 4], &[0.1; 4]]),
        ]));
        let d = summaries[1].versus_isolated.unwrap();
        assert!(d.relative.abs() < 1e-9);
        assert!(d.low < 0.0 && d.high > 0.0, "{d:?}");
    }

    #[test]
    fn arms_run_isolation_once_then_each_policy() {
        let experiment = Experiment {
            members: 2,
            rounds: 4,
            seeds: vec![1],
            splits: vec![(8, 0), (4, 4)],
            policies: vec![SharingPolicy::Plain, SharingPolicy::Positive],
            training: TrainingConfig::default(),
            model: PathBuf::new(),
            evaluation_questions: 1,
            threads: 1,
            out: PathBuf::new(),
            resume: false,
        };
        let labels: Vec<String> = experiment.arms().iter().map(Arm::label).collect();
        assert_eq!(labels, ["8/0", "4/4 plain", "4/4 positive"]);
        let no_baseline = Experiment {
            splits: vec![(4, 4)],
            ..experiment
        };
        assert!(matches!(
            no_baseline.check(),
            Err(ExperimentError::Invalid(_))
        ));
    }
}
