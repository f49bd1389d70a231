//! The operator binary: admin server, optional leader election, the three controllers (Swarms,
//! members, ledgers), graceful shutdown.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use futures::FutureExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::client::ClientBuilder;
use kube::runtime::events::Reporter;
use kube::{Api, Config};
use swarm_operator::build::PodSettings;
use swarm_operator::controller::{self, Context};
use swarm_operator::leader::LeaseLock;
use swarm_operator::metrics::Metrics;
use swarm_telemetry::admin::{self, AdminState};
use swarm_telemetry::{LogFormat, Telemetry};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info};

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Kubernetes operator for reinforcement-learning swarms"
)]
struct Args {
    /// Node image for members whose Swarm names none.
    #[arg(long, env = "NODE_IMAGE", default_value = concat!("rl-swarm-operator/swarm-node:", env!("CARGO_PKG_VERSION")))]
    node_image: String,
    /// Address of the /healthz, /readyz and /metrics server.
    #[arg(long, env = "ADMIN_ADDR", default_value = "0.0.0.0:8080")]
    admin_addr: SocketAddr,
    /// Manage Swarms in this namespace only (namespace scope); every namespace when empty.
    #[arg(long, env = "WATCH_NAMESPACE")]
    watch_namespace: Option<String>,
    /// Hold a Lease before writing; needed when more than one replica runs.
    #[arg(long, env = "LEADER_ELECT", default_value_t = false)]
    leader_elect: bool,
    #[arg(long, env = "LEASE_NAME", default_value = "rl-swarm-operator")]
    lease_name: String,
    /// Namespace of the Lease; the client's default namespace when empty.
    #[arg(long, env = "POD_NAMESPACE")]
    lease_namespace: Option<String>,
    /// This replica's name in the Lease and in Events.
    #[arg(long, env = "POD_NAME")]
    pod_name: Option<String>,
    /// Log as JSON lines instead of text.
    #[arg(long, env = "LOG_JSON", default_value_t = false)]
    log_json: bool,
}

const LEASE_DURATION: Duration = Duration::from_secs(15);
const LEASE_RENEW_EVERY: Duration = Duration::from_secs(5);
const LEASE_RENEW_DEADLINE: Duration = Duration::from_secs(10);
const LEASE_RETRY: Duration = Duration::from_secs(2);

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Chosen explicitly: built together with other workspace crates (libp2p's QUIC), rustls also has
    // its aws-lc-rs provider, and with two it refuses to pick one. Nothing else installed one yet.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let format = if args.log_json {
        LogFormat::Json
    } else {
        LogFormat::Text {
            ansi: std::io::stderr().is_terminal(),
        }
    };
    // Before the runtime starts, and dropped after it ends, so the last spans are flushed.
    let telemetry = Telemetry::init("swarm-operator", format)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(run(args, &telemetry));
    drop(runtime);
    drop(telemetry);
    result
}

async fn run(args: Args, telemetry: &Telemetry) -> anyhow::Result<()> {
    let identity = args.pod_name.clone().unwrap_or_else(|| {
        std::env::var("HOSTNAME")
            .unwrap_or_else(|_| format!("swarm-operator-{}", std::process::id()))
    });

    let mut registry = swarm_telemetry::Metrics::new(telemetry.meter("swarm-operator"));
    let metrics = Metrics::register(&mut registry);
    let config = Config::infer()
        .await
        .context("cannot configure a Kubernetes client (in-cluster or kubeconfig)")?;
    let client = ClientBuilder::try_from(config)
        .context("cannot build a Kubernetes client")?
        .with_layer(&metrics.count_requests())
        .build();
    let ready = Arc::new(AtomicBool::new(false));
    let admin_state = AdminState {
        registry: Arc::new(registry.into_registry()),
        ready: ready.clone(),
    };
    let admin_addr = args.admin_addr;
    let listener = tokio::net::TcpListener::bind(admin_addr)
        .await
        .with_context(|| format!("cannot listen on {admin_addr}"))?;
    tokio::spawn(async move {
        if let Err(err) = admin::serve(listener, admin_state).await {
            error!(%err, %admin_addr, "admin server stopped");
        }
    });

    let mut terminate = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let shutdown = async move {
        tokio::select! {
            _ = terminate.recv() => info!("SIGTERM: shutting down"),
            _ = tokio::signal::ctrl_c() => info!("SIGINT: shutting down"),
        }
    }
    .shared();

    let lock = args.leader_elect.then(|| {
        let namespace = args
            .lease_namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_owned());
        Arc::new(LeaseLock::new(
            Api::<Lease>::namespaced(client.clone(), &namespace),
            &args.lease_name,
            &identity,
            LEASE_DURATION,
        ))
    });

    // Controllers run only once the Lease is held (or without leader election); renewals keep this
    // flag current for the writes only the holder may make.
    let leader = Arc::new(AtomicBool::new(true));
    // A standby replica is ready: it serves and takes over when the leader goes.
    ready.store(true, Ordering::Relaxed);
    let lost = match &lock {
        Some(lock) => {
            tokio::select! {
                () = lock.acquire(LEASE_RETRY) => {}
                () = shutdown.clone() => return Ok(()),
            }
            let (holder, holding) = (lock.clone(), leader.clone());
            async move {
                holder
                    .hold(LEASE_RENEW_EVERY, LEASE_RENEW_DEADLINE, &holding)
                    .await
            }
            .boxed()
            .shared()
        }
        None => futures::future::pending().boxed().shared(),
    };

    let ctx = Arc::new(
        Context::new(
            client,
            Reporter {
                controller: "rl-swarm-operator".into(),
                instance: Some(identity),
            },
            metrics,
            PodSettings {
                default_image: args.node_image,
            },
        )
        .with_leader_flag(leader),
    );
    let stop = {
        let lost = lost.clone();
        let shutdown = shutdown.clone();
        async move {
            tokio::select! {
                () = shutdown => {}
                () = lost => {}
            }
        }
    };
    controller::run(ctx, args.watch_namespace, stop).await;

    if lost.clone().now_or_never().is_some() {
        anyhow::bail!("lost leadership; exiting so that a fresh process competes again");
    }
    if let Some(lock) = lock
        && let Err(err) = lock.release().await
    {
        error!(%err, "cannot release the Lease; the next leader waits for it to expire");
    }
    Ok(())
}
