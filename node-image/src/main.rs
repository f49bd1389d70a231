use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use swarm_node::Startup;

/// Exit status for a missing or malformed mounted file: the pod's configuration is wrong.
const EXIT_BAD_INPUT: u8 = 2;

/// A swarm member's training node.
#[derive(Parser)]
#[command(version)]
struct Args {
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
    /// The member's name (its pod name).
    #[arg(long, env = "SWARM_MEMBER")]
    member: String,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match Startup::load(args.member, &args.identity_dir, &args.config) {
        Ok(startup) => {
            print!("{}", startup.summary());
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("swarm-node: {err}");
            ExitCode::from(EXIT_BAD_INPUT)
        }
    }
}
