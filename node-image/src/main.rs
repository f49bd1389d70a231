use std::io::IsTerminal;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use swarm_node::Startup;
use swarm_node::experiment::{self, Experiment};
use swarm_node::local::{self, LocalSwarm};
use swarm_node::member::{self, RunOptions};
use swarm_node_config::{
    SharingConfig, SharingPolicy, TaskFamily, TaskGroup, TaskWeight, TrainingConfig,
};
use swarm_telemetry::{LogFormat, Telemetry};

/// Exit status for a missing or malformed mounted file or argument: the configuration is wrong.
const EXIT_BAD_INPUT: u8 = 2;
/// Exit status when training itself fails.
const EXIT_FAILURE: u8 = 1;

/// A swarm member's training node. Without a subcommand it runs one member, as in a pod.
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    member: MemberArgs,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Checks the mounted identity and config, prints who this member is, and exits.
    Check(MemberArgs),
    /// Runs a swarm of several members on this machine, on the embedded base model.
    Local(LocalArgs),
    /// The SAPO experiment in small: swarms trained under several I/J splits and sharing policies,
    /// each with several seeds, compared by cumulative reward and a held-out evaluation.
    Experiment(ExperimentArgs),
    /// Downloads a model from the Hugging Face Hub into the Hub's cache (resuming a broken
    /// download), so a member that names it in its config starts without the network; prints a
    /// progress line to stderr for every tenth of each file (`downloading <bytes>/<total> <file>`,
    /// which the operator shows in the member's status) and the commit the revision resolved to.
    FetchModel(FetchModelArgs),
}

#[derive(Args, Clone)]
struct FetchModelArgs {
    /// Repository id, e.g. Qwen/Qwen2.5-0.5B-Instruct.
    #[arg(long)]
    id: String,
    /// Branch, tag or commit; main when empty.
    #[arg(long)]
    revision: Option<String>,
    /// A file to write the outcome to, `commit <sha>` or the error, as a Kubernetes termination
    /// message (the operator's init container passes /dev/termination-log).
    #[arg(long)]
    termination_log: Option<PathBuf>,
}

/// Longest termination message the kubelet keeps.
const TERMINATION_MESSAGE_BYTES: usize = 4096;

fn fetch_model(args: FetchModelArgs) -> ExitCode {
    let model = swarm_hub::HubModel {
        id: args.id,
        revision: args.revision,
    };
    // The progress lines go to stderr, the container's log as much as stdout is, where the operator
    // reads the last one; stdout keeps the outcome alone.
    let (message, code) = match member::fetch_hub_model(&model, &|line| eprintln!("{line}")) {
        Ok(fetched) => {
            println!("{} {}", fetched.commit, fetched.dir.display());
            (format!("commit {}", fetched.commit), ExitCode::SUCCESS)
        }
        Err(err) => {
            eprintln!("swarm-node: {err}");
            (err.to_string(), ExitCode::from(EXIT_FAILURE))
        }
    };
    if let Some(path) = args.termination_log {
        let mut end = message.len().min(TERMINATION_MESSAGE_BYTES);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        if let Err(err) = std::fs::write(&path, &message[..end]) {
            eprintln!("swarm-node: cannot write {}: {err}", path.display());
        }
    }
    code
}

#[derive(Args, Clone)]
struct MemberArgs {
    /// Directory where the member's identity Secret is mounted.
    #[arg(
        long,
        env = "SWARM_IDENTITY_DIR",
        default_value = "/var/run/rlswarm/identity"
    )]
    identity_dir: PathBuf,
    /// The node config file, from the swarm's ConfigMap.
    #[arg(long, env = "SWARM_CONFIG", default_value = "/etc/rlswarm/node.yaml")]
    config: PathBuf,
    /// The member's name (its pod name); required to run or check a member.
    #[arg(long, env = "SWARM_MEMBER")]
    member: Option<String>,
}

#[derive(Args, Clone)]
struct RunArgs {
    /// Address to listen on for peers.
    #[arg(long, env = "SWARM_LISTEN_HOST", default_value = "0.0.0.0")]
    listen_host: IpAddr,
    /// Port to listen on instead of the config's `p2p.port`.
    #[arg(long, env = "SWARM_LISTEN_PORT")]
    listen_port: Option<u16>,
    /// Port of /healthz, /readyz and /metrics on the listen host (the pod's probes use 9090);
    /// 0 picks a free one.
    #[arg(long, env = "SWARM_METRICS_PORT", default_value_t = 9090)]
    metrics_port: u16,
    /// libtorch intra-op threads (its default: one per core).
    #[arg(long, env = "SWARM_TORCH_THREADS")]
    torch_threads: Option<i32>,
    /// Exit after the config's last round instead of staying up for the swarm's peers.
    #[arg(long)]
    exit_when_done: bool,
}

#[derive(Args, Clone)]
struct SwarmArgs {
    /// Questions each member samples per round.
    #[arg(long, default_value_t = 8)]
    questions: u32,
    /// G: completions per question.
    #[arg(long, default_value_t = 8)]
    group_size: u32,
    /// Task families, comma-separated (basic_arithmetic, base_conversion, decimal_arithmetic,
    /// fraction_simplification, calendar_arithmetic, propositional_logic).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "basic_arithmetic,fraction_simplification"
    )]
    tasks: Vec<String>,
    /// A heterogeneous swarm instead of --tasks: task groups separated by `;`, families within
    /// a group by `,` (e.g. `basic_arithmetic;fraction_simplification`); member k trains on group
    /// k mod the number of groups, and every member is evaluated on all of them.
    #[arg(long)]
    task_groups: Option<String>,
    /// Difficulty of the questions, 1 to 5; the embedded model learns level 1.
    #[arg(long, default_value_t = 1)]
    difficulty: u8,
    /// Adam learning rate.
    #[arg(long, default_value_t = 5e-4)]
    learning_rate: f64,
    /// Most tokens per completion.
    #[arg(long, default_value_t = 16)]
    max_new_tokens: u32,
    /// How members train on their peers' completions: plain, positive, importance or shaping.
    #[arg(long, default_value = "positive")]
    sharing: String,
    /// `importance`: the most weight one peer token can get.
    #[arg(long, default_value_t = 2.0)]
    importance_cap: f64,
    /// `shaping`: γ of p / (p + γ).
    #[arg(long, default_value_t = 0.1)]
    shaping_gamma: f64,
    /// A model directory (config.json, *.safetensors, tokenizer.json) instead of the embedded one.
    #[arg(long, conflicts_with = "model_hub")]
    model: Option<PathBuf>,
    /// A model from the Hugging Face Hub instead of the embedded one, e.g. Qwen/Qwen2.5-0.5B-Instruct:
    /// downloaded into the Hub's cache (HF_HOME; HF_ENDPOINT for a mirror, HF_TOKEN for a token).
    #[arg(long)]
    model_hub: Option<String>,
    /// `--model-hub`: the branch, tag or commit; main when empty.
    #[arg(long, requires = "model_hub")]
    model_revision: Option<String>,
}

impl SwarmArgs {
    /// The model directory the arguments name, downloading a hub model first; none for the
    /// embedded one.
    fn model_dir(&self) -> Result<Option<PathBuf>, String> {
        match (&self.model, &self.model_hub) {
            (Some(dir), _) => Ok(Some(dir.clone())),
            (None, Some(id)) => {
                let model = swarm_hub::HubModel {
                    id: id.clone(),
                    revision: self.model_revision.clone(),
                };
                let fetched = member::fetch_hub_model(&model, &member::log_download)
                    .map_err(|e| e.to_string())?;
                println!("model {id} at commit {}", fetched.commit);
                Ok(Some(fetched.dir))
            }
            (None, None) => Ok(None),
        }
    }
}

#[derive(Args, Clone)]
struct LocalArgs {
    /// Member processes.
    #[arg(long, default_value_t = 4)]
    members: usize,
    /// Rounds to train.
    #[arg(long, default_value_t = 100)]
    rounds: u64,
    /// Length of a round on the wall clock; every member must sample and train within it.
    #[arg(long, default_value_t = 2)]
    round_seconds: u32,
    #[command(flatten)]
    swarm: SwarmArgs,
    /// I: own question groups trained on per round.
    #[arg(long, default_value_t = 4)]
    local: u32,
    /// J: peers' question groups trained on per round.
    #[arg(long, default_value_t = 4)]
    external: u32,
    /// Base seed of the members' questions and sampling.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Checkpoint every this many rounds.
    #[arg(long, default_value_t = 10)]
    checkpoint_every: u32,
    /// Output directory: metrics.csv, metrics.json, reward.png, members' logs.
    #[arg(long, default_value = "local-swarm")]
    out: PathBuf,
    /// The anvil binary for the swarm's local ledger (scripts/local-swarm sets ANVIL); without it
    /// the swarm runs without a ledger.
    #[arg(long, env = "ANVIL")]
    anvil: Option<PathBuf>,
    /// Run without a ledger even when anvil is available.
    #[arg(long)]
    no_ledger: bool,
}

#[derive(Args, Clone)]
struct ExperimentArgs {
    /// Members of each swarm.
    #[arg(long, default_value_t = 8)]
    members: usize,
    /// Rounds each swarm trains.
    #[arg(long, default_value_t = 100)]
    rounds: u64,
    #[command(flatten)]
    swarm: SwarmArgs,
    /// I/J splits to compare, comma-separated; the one with J = 0 is the baseline.
    #[arg(long, value_delimiter = ',', default_value = "8/0,6/2,4/4,2/6")]
    splits: Vec<String>,
    /// Sharing policies to compare, comma-separated (each with every split that shares);
    /// `--sharing` when not given.
    #[arg(long, value_delimiter = ',')]
    policies: Vec<String>,
    /// Seeds every arm runs with, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
    seeds: Vec<u64>,
    /// Worker threads the members of a swarm are spread over.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Distinct held-out questions per family in the evaluation before and after.
    #[arg(long, default_value_t = 32)]
    evaluation_questions: usize,
    /// Output directory: experiment.json, reward.png.
    #[arg(long, default_value = "sapo-experiment")]
    out: PathBuf,
    /// Keep the runs already in OUT/experiment.json (made with the same settings and base model)
    /// and run only the missing arm-seed pairs; the summary covers them all.
    #[arg(long)]
    resume: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let telemetry = match Telemetry::init(
        "swarm-node",
        LogFormat::Text {
            ansi: std::io::stderr().is_terminal(),
        },
    ) {
        Ok(telemetry) => telemetry,
        Err(err) => return bad_input(&err.to_string()),
    };
    match cli.command {
        None => run_member(cli.member, &cli.run, &telemetry),
        Some(Command::Check(args)) => match load(args) {
            Ok(startup) => {
                print!("{}", startup.summary());
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Some(Command::Local(args)) => run_local(args),
        Some(Command::Experiment(args)) => run_experiment(args),
        Some(Command::FetchModel(args)) => fetch_model(args),
    }
}

fn load(args: MemberArgs) -> Result<Startup, ExitCode> {
    let Some(member) = args.member else {
        return Err(bad_input("--member (or SWARM_MEMBER) is required"));
    };
    Startup::load(member, &args.identity_dir, &args.config).map_err(|err| {
        eprintln!("swarm-node: {err}");
        ExitCode::from(EXIT_BAD_INPUT)
    })
}

fn run_member(args: MemberArgs, run: &RunArgs, telemetry: &Telemetry) -> ExitCode {
    let startup = match load(args) {
        Ok(startup) => startup,
        Err(code) => return code,
    };
    eprint!("{}", startup.summary());
    let options = RunOptions {
        listen_host: run.listen_host,
        listen_port: run.listen_port,
        metrics_port: run.metrics_port,
        torch_threads: run.torch_threads,
        exit_when_done: run.exit_when_done,
    };
    let metrics = swarm_telemetry::Metrics::new(telemetry.meter("swarm-node"));
    match member::run(startup, &options, metrics, &mut std::io::stdout()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("swarm-node: {err}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn family(name: &str) -> Result<TaskFamily, String> {
    serde_json::from_value::<TaskFamily>(serde_json::Value::String(name.trim().to_owned()))
        .map_err(|_| format!("unknown task family `{name}`"))
}

fn policy(name: &str) -> Result<SharingPolicy, String> {
    serde_json::from_value::<SharingPolicy>(serde_json::Value::String(name.trim().to_owned()))
        .map_err(|_| {
            format!("unknown sharing policy `{name}` (plain, positive, importance, shaping)")
        })
}

/// The training settings `args` describe, on the local swarm's defaults.
fn training(args: &SwarmArgs) -> Result<TrainingConfig, String> {
    let weights = |names: &mut dyn Iterator<Item = &str>| {
        names
            .map(|name| family(name).map(|family| TaskWeight { family, weight: 1 }))
            .collect::<Result<Vec<_>, _>>()
    };
    if !(1..=5).contains(&args.difficulty) {
        return Err(format!("difficulty {} is outside 1..=5", args.difficulty));
    }
    if args.group_size < 2 {
        return Err("a group needs at least 2 completions".into());
    }
    let mut training = LocalSwarm::training_defaults();
    match &args.task_groups {
        Some(groups) => {
            training.tasks = Vec::new();
            training.task_groups = groups
                .split(';')
                .map(|group| {
                    let tasks = weights(&mut group.split(','))?;
                    Ok(TaskGroup { tasks })
                })
                .collect::<Result<Vec<_>, String>>()?;
        }
        None => training.tasks = weights(&mut args.tasks.iter().map(String::as_str))?,
    }
    training.questions_per_round = args.questions;
    training.completions_per_question = args.group_size;
    training.difficulty = args.difficulty;
    training.learning_rate = args.learning_rate;
    training.max_new_tokens = args.max_new_tokens;
    training.sharing = SharingConfig {
        policy: policy(&args.sharing)?,
        importance_cap: args.importance_cap,
        shaping_gamma: args.shaping_gamma,
    };
    Ok(training)
}

fn current_exe() -> Result<PathBuf, ExitCode> {
    std::env::current_exe().map_err(|err| {
        eprintln!("swarm-node: cannot find its own binary to start members: {err}");
        ExitCode::from(EXIT_FAILURE)
    })
}

fn bad_input(message: &str) -> ExitCode {
    eprintln!("swarm-node: {message}");
    ExitCode::from(EXIT_BAD_INPUT)
}

fn run_local(args: LocalArgs) -> ExitCode {
    let mut training = match training(&args.swarm) {
        Ok(training) => training,
        Err(message) => return bad_input(&message),
    };
    if args.local + args.external == 0 {
        return bad_input("--local plus --external must be at least 1");
    }
    training.local_rollouts = args.local;
    training.external_rollouts = args.external;
    training.seed = Some(args.seed);
    let model = match args.swarm.model_dir() {
        Ok(model) => model,
        Err(message) => return bad_input(&message),
    };
    let swarm = LocalSwarm {
        anvil: args.anvil.filter(|_| !args.no_ledger),
        members: args.members,
        rounds: args.rounds,
        round_seconds: args.round_seconds,
        training,
        model,
        checkpoint_every: args.checkpoint_every,
        out: args.out,
        progress: true,
    };
    let binary = match current_exe() {
        Ok(binary) => binary,
        Err(code) => return code,
    };
    let ledger = if swarm.anvil.is_some() {
        "a local anvil ledger"
    } else {
        "no ledger"
    };
    println!(
        "local swarm: {} members, {} rounds of {} s, I/J/G = {}/{}/{}, sharing {}, {ledger}, output in {}",
        swarm.members,
        swarm.rounds,
        swarm.round_seconds,
        args.local,
        args.external,
        swarm.training.completions_per_question,
        experiment::policy_name(swarm.training.sharing.policy),
        swarm.out.display()
    );
    match local::run(&swarm, &binary) {
        Ok(outcome) => {
            print!("\n{}", local::summary(&outcome));
            println!(
                "metrics: {0}/metrics.csv, {0}/metrics.json; chart: {0}/reward.png",
                swarm.out.display()
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("swarm-node: {err}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn parse_split(text: &str) -> Result<(u32, u32), String> {
    let (local, external) = text
        .split_once('/')
        .ok_or_else(|| format!("split `{text}` is not I/J"))?;
    let number = |s: &str| {
        s.trim()
            .parse::<u32>()
            .map_err(|_| format!("split `{text}` is not I/J"))
    };
    let split = (number(local)?, number(external)?);
    if split.0 + split.1 == 0 {
        return Err(format!("split `{text}` trains on nothing"));
    }
    Ok(split)
}

fn run_experiment(args: ExperimentArgs) -> ExitCode {
    let training = match training(&args.swarm) {
        Ok(training) => training,
        Err(message) => return bad_input(&message),
    };
    let splits = match args
        .splits
        .iter()
        .map(|s| parse_split(s))
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(splits) => splits,
        Err(message) => return bad_input(&message),
    };
    let policies = if args.policies.is_empty() {
        Ok(vec![training.sharing.policy])
    } else {
        args.policies.iter().map(|p| policy(p)).collect()
    };
    let policies = match policies {
        Ok(policies) => policies,
        Err(message) => return bad_input(&message),
    };
    let model = match args.swarm.model_dir() {
        Err(message) => return bad_input(&message),
        Ok(Some(model)) => model,
        Ok(None) => match local::write_base_model(&args.out.join("model")) {
            Ok(dir) => dir,
            Err(err) => return bad_input(&err.to_string()),
        },
    };
    let experiment = Experiment {
        members: args.members,
        rounds: args.rounds,
        seeds: args.seeds,
        splits,
        policies,
        training,
        model,
        evaluation_questions: args.evaluation_questions,
        threads: args.threads,
        out: args.out,
        resume: args.resume,
    };
    // Members train in lockstep threads; each op on one core is fastest for models this small.
    tch::set_num_threads(1);
    let arms = experiment.arms();
    println!(
        "SAPO experiment: {} arms x {} seeds, {} members x {} rounds, {} questions x {} completions, \
         tasks {}, output in {}",
        arms.len(),
        experiment.seeds.len(),
        experiment.members,
        experiment.rounds,
        experiment.training.questions_per_round,
        experiment.training.completions_per_question,
        describe_tasks(&experiment.training),
        experiment.out.display()
    );
    match experiment::run(&experiment) {
        Ok(results) => {
            print!("\n{}", experiment::table(&experiment::summarise(&results)));
            println!(
                "results: {0}/experiment.json, chart: {0}/reward.png",
                experiment.out.display()
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("swarm-node: {err}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// `basic_arithmetic` or `basic_arithmetic; fraction_simplification` (groups).
fn describe_tasks(training: &TrainingConfig) -> String {
    let names = |tasks: &[TaskWeight]| {
        tasks
            .iter()
            .map(|t| experiment::family_name(t.family))
            .collect::<Vec<_>>()
            .join(",")
    };
    if training.task_groups.is_empty() {
        names(&training.tasks)
    } else {
        training
            .task_groups
            .iter()
            .map(|g| names(&g.tasks))
            .collect::<Vec<_>>()
            .join("; ")
    }
}
