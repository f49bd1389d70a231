use std::io::IsTerminal;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use swarm_node::Startup;
use swarm_node::experiment;
use swarm_node::local::{self, LocalSwarm};
use swarm_node::member::{self, RunOptions};
use swarm_node_config::{TaskFamily, TaskWeight};
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
    /// The SAPO experiment in small: one local swarm per I/J split, compared by cumulative reward.
    Experiment(ExperimentArgs),
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
    #[arg(long, value_delimiter = ',', default_value = "basic_arithmetic")]
    tasks: Vec<String>,
    /// Difficulty of the questions, 1 to 5; the embedded model learns level 1.
    #[arg(long, default_value_t = 1)]
    difficulty: u8,
    /// Adam learning rate; members drift apart (and peers' rollouts grow off-policy) faster above it.
    #[arg(long, default_value_t = 2e-4)]
    learning_rate: f64,
    /// Most tokens per completion.
    #[arg(long, default_value_t = 16)]
    max_new_tokens: u32,
    /// Base seed of the members' questions and sampling.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Checkpoint every this many rounds.
    #[arg(long, default_value_t = 10)]
    checkpoint_every: u32,
    /// A model directory (config.json, *.safetensors, tokenizer.json) instead of the embedded one.
    #[arg(long)]
    model: Option<PathBuf>,
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
    /// Member processes, as the paper's 8 agents.
    #[arg(long, default_value_t = 8)]
    members: usize,
    /// Rounds to train per split.
    #[arg(long, default_value_t = 150)]
    rounds: u64,
    /// Length of a round on the wall clock; every member must sample and train within it.
    #[arg(long, default_value_t = 4)]
    round_seconds: u32,
    #[command(flatten)]
    swarm: SwarmArgs,
    /// I/J splits to compare, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "8/0,6/2,4/4,2/6")]
    splits: Vec<String>,
    /// Output directory, one sub-directory per split.
    #[arg(long, default_value = "sapo-experiment")]
    out: PathBuf,
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

/// The swarm's shape: members, rounds and round length.
struct Shape {
    members: usize,
    rounds: u64,
    round_seconds: u32,
}

fn swarm(
    shape: Shape,
    args: &SwarmArgs,
    out: PathBuf,
    progress: bool,
) -> Result<LocalSwarm, String> {
    let tasks = args
        .tasks
        .iter()
        .map(|name| {
            serde_json::from_value::<TaskFamily>(serde_json::Value::String(name.clone()))
                .map(|family| TaskWeight { family, weight: 1 })
                .map_err(|_| format!("unknown task family `{name}`"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if !(1..=5).contains(&args.difficulty) {
        return Err(format!("difficulty {} is outside 1..=5", args.difficulty));
    }
    if args.group_size < 2 {
        return Err("a group needs at least 2 completions".into());
    }
    let mut training = LocalSwarm::training_defaults();
    training.questions_per_round = args.questions;
    training.completions_per_question = args.group_size;
    training.tasks = tasks;
    training.difficulty = args.difficulty;
    training.learning_rate = args.learning_rate;
    training.max_new_tokens = args.max_new_tokens;
    training.seed = Some(args.seed);
    Ok(LocalSwarm {
        anvil: None,
        members: shape.members,
        rounds: shape.rounds,
        round_seconds: shape.round_seconds,
        training,
        model: args.model.clone(),
        checkpoint_every: args.checkpoint_every,
        out,
        progress,
    })
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
    let shape = Shape {
        members: args.members,
        rounds: args.rounds,
        round_seconds: args.round_seconds,
    };
    let mut swarm = match swarm(shape, &args.swarm, args.out, true) {
        Ok(swarm) => swarm,
        Err(message) => return bad_input(&message),
    };
    if args.local + args.external == 0 {
        return bad_input("--local plus --external must be at least 1");
    }
    swarm.training.local_rollouts = args.local;
    swarm.training.external_rollouts = args.external;
    swarm.anvil = args.anvil.filter(|_| !args.no_ledger);
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
        "local swarm: {} members, {} rounds of {} s, I/J/G = {}/{}/{}, {ledger}, output in {}",
        swarm.members,
        swarm.rounds,
        swarm.round_seconds,
        args.local,
        args.external,
        swarm.training.completions_per_question,
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
    let shape = Shape {
        members: args.members,
        rounds: args.rounds,
        round_seconds: args.round_seconds,
    };
    let base = match swarm(shape, &args.swarm, args.out, false) {
        Ok(swarm) => swarm,
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
    let binary = match current_exe() {
        Ok(binary) => binary,
        Err(code) => return code,
    };
    match experiment::run(&base, &splits, &binary) {
        Ok(arms) => {
            println!(
                "\n{} members, {} rounds of {} s, {} questions x {} completions per member and round, \
                 tasks {}, difficulty {}, seed {}\n",
                base.members,
                base.rounds,
                base.round_seconds,
                base.training.questions_per_round,
                base.training.completions_per_question,
                args.swarm.tasks.join(","),
                base.training.difficulty,
                args.swarm.seed
            );
            print!("{}", experiment::table(&arms));
            println!(
                "results: {0}/experiment.csv, chart: {0}/cumulative-reward.png",
                base.out.display()
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("swarm-node: {err}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}
