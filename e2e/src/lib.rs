//! Harness for end-to-end tests against the control plane `e2e/bin/cluster up` starts: the chart
//! installed with the real helm, the operator run as a local process under the chart's
//! ServiceAccount or as a pod of its image on the real node, each test in a fresh namespace, and
//! waits that explain themselves on timeout.

pub mod collector;
pub mod containers;
mod fixture;
pub mod provisioner;
pub mod testbed;

pub use fixture::{Fixture, SETTLE};

use std::fmt::Debug;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, PostParams};
use kube::config::{AuthInfo, KubeConfigOptions, Kubeconfig, NamedAuthInfo};
use kube::{Client, Config};
use serde::de::DeserializeOwned;
use tokio::sync::OnceCell;

/// Paths the test command hands to the tests.
pub struct Env {
    pub kubeconfig: PathBuf,
    pub helm: PathBuf,
    pub kubectl: PathBuf,
    pub root: PathBuf,
}

fn required(var: &str) -> PathBuf {
    match std::env::var_os(var) {
        Some(value) => PathBuf::from(value),
        None => panic!(
            "{var} is not set: run the end-to-end tests through scripts/test (or e2e/bin/test), which \
             brings the control plane up and sets E2E_KUBECONFIG, E2E_HELM, E2E_KUBECTL, E2E_OPERATOR_BIN, \
             E2E_OTELCOL and the real node's E2E_REAL_NODE, E2E_NODE_IMAGE and \
             E2E_REAL_NODE_SUBNET_PREFIX"
        ),
    }
}

impl Env {
    pub fn from_env() -> Self {
        // The harness links libp2p (through the node's report types), whose QUIC enables rustls's
        // aws-lc-rs provider beside kube's ring; with two, rustls wants one chosen. A second call
        // finds it installed, which is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        Self {
            kubeconfig: required("E2E_KUBECONFIG"),
            helm: required("E2E_HELM"),
            kubectl: required("E2E_KUBECTL"),
            root: Path::new(env!("CARGO_MANIFEST_DIR")).join(".."),
        }
    }

    /// The operator binary the scenarios run as a local process.
    pub fn operator_binary(&self) -> PathBuf {
        required("E2E_OPERATOR_BIN")
    }

    /// The OpenTelemetry Collector built from `e2e/tools/otelcol`.
    pub fn otelcol(&self) -> PathBuf {
        required("E2E_OTELCOL")
    }

    pub fn chart(&self) -> PathBuf {
        self.root.join("charts/swarm-operator")
    }

    pub async fn admin_client(&self) -> Client {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig).expect("admin kubeconfig");
        let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .expect("client config from the admin kubeconfig");
        Client::try_from(config).expect("admin client")
    }

    /// Runs a command with the cluster's kubeconfig; panics with its output if it fails.
    pub fn run(&self, program: &Path, args: &[&str]) -> String {
        let output = self.try_run(program, args);
        assert!(
            output.status.success(),
            "{} {} failed:\n{}{}",
            program.display(),
            args.join(" "),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// [`Env::run`], and panics too when the command printed a warning (the API server's warnings
    /// reach kubectl's and helm's stderr as `Warning: ...`).
    pub fn run_without_warnings(&self, program: &Path, args: &[&str]) -> String {
        let output = self.try_run(program, args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success() && !stderr.contains("Warning"),
            "{} {}: {stderr}",
            program.display(),
            args.join(" ")
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    pub fn try_run(&self, program: &Path, args: &[&str]) -> Output {
        Command::new(program)
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .current_dir(&self.root)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()))
    }

    pub fn helm(&self, args: &[&str]) -> String {
        self.run(&self.helm, args)
    }

    pub fn kubectl(&self, args: &[&str]) -> String {
        self.run(&self.kubectl, args)
    }
}

/// The taint of `e2e/bin/cluster`'s real node: only pods that tolerate it run as containers there.
pub const REAL_NODE_TAINT: &str = "rlswarm.dev/real-node";

/// The real node (kubelet, containerd, runc, CNI bridge, CoreDNS) that `e2e/bin/cluster` brings up
/// next to the kwok nodes, as `e2e/bin/test` describes it.
pub struct RealNode {
    /// Its Node name.
    pub node: String,
    /// The node image (cpu variant) imported into its containerd.
    pub node_image: String,
    /// The first three octets of its pod subnet, with the trailing dot: `198.18.7.`.
    pub subnet_prefix: String,
}

impl RealNode {
    /// The host's address on the node's bridge: what its pods can reach of the host.
    pub fn host_ip(&self) -> std::net::IpAddr {
        format!("{}1", self.subnet_prefix)
            .parse()
            .expect("the bridge's host address")
    }

    /// Chart values (helm arguments) that run the operator as a pod of its image on this node: one
    /// replica, the image imported into containerd (no registry), scheduled there.
    pub fn operator_release_values(&self) -> Vec<String> {
        vec![
            "--set".into(),
            "replicaCount=1".into(),
            "--set".into(),
            "image.pullPolicy=Never".into(),
            "--set".into(),
            format!("nodeSelector.kubernetes\\.io/hostname={}", self.node),
            "--set-json".into(),
            format!(
                r#"tolerations=[{{"key":"{REAL_NODE_TAINT}","operator":"Exists","effect":"NoSchedule"}}]"#
            ),
        ]
    }

    pub fn from_env() -> Self {
        let text = |var: &str| required(var).to_string_lossy().into_owned();
        Self {
            node: text("E2E_REAL_NODE"),
            node_image: text("E2E_NODE_IMAGE"),
            subnet_prefix: text("E2E_REAL_NODE_SUBNET_PREFIX"),
        }
    }
}

static CRDS: OnceCell<()> = OnceCell::const_new();

/// The CRDs and cluster-wide objects, installed once per test binary by a cluster-scope release
/// that runs no operator replica; the install must print no warning.
pub async fn ensure_crds(env: &Env) {
    CRDS.get_or_init(|| async {
        env.run_without_warnings(
            &env.helm,
            &[
                "upgrade",
                "--install",
                "rl-swarm-crds",
                &env.chart().to_string_lossy(),
                "--namespace",
                "rl-swarm-system",
                "--create-namespace",
                "--set",
                "replicaCount=0",
                "--wait",
            ],
        );
    })
    .await;
}

/// A namespace of one test, deleted (with everything in it) when dropped.
pub struct TestNamespace {
    pub name: String,
    kubectl: PathBuf,
    kubeconfig: PathBuf,
}

impl TestNamespace {
    pub async fn create(env: &Env, client: &Client, test: &str) -> Self {
        let suffix = jiff::Timestamp::now().as_millisecond() % 1_000_000;
        let name = format!("e2e-{test}-{suffix}");
        let namespace: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {"rlswarm.dev/e2e": "true"}}
        }))
        .expect("namespace object");
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .unwrap_or_else(|e| panic!("create namespace {name}: {e}"));
        Self {
            name,
            kubectl: env.kubectl.clone(),
            kubeconfig: env.kubeconfig.clone(),
        }
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        let _ = Command::new(&self.kubectl)
            .args(["delete", "namespace", &self.name, "--wait=false"])
            .env("KUBECONFIG", &self.kubeconfig)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// What a namespace-scope release of the chart gives the operator.
pub struct Release {
    pub name: String,
    pub namespace: String,
    pub service_account: String,
}

/// Installs the chart in namespace scope into `namespace` with no in-cluster replica: the operator
/// runs as a local process under the release's ServiceAccount instead.
pub fn install_release(env: &Env, namespace: &str, extra: &[&str]) -> Release {
    let name = "swarm-operator".to_owned();
    let mut args = vec![
        "install",
        &name,
        "charts/swarm-operator",
        "--namespace",
        namespace,
        "--set",
        "scope=namespace",
        "--set",
        "crds.install=false",
        "--set",
        "replicaCount=0",
        "--wait",
    ];
    args.extend_from_slice(extra);
    env.helm(&args);
    Release {
        service_account: name.clone(),
        name,
        namespace: namespace.to_owned(),
    }
}

/// A kubeconfig that authenticates as the release's ServiceAccount with a token from the
/// TokenRequest API, so that the chart's RBAC is exactly what the operator gets.
pub async fn service_account_kubeconfig(
    env: &Env,
    client: &Client,
    release: &Release,
    dir: &Path,
) -> PathBuf {
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(3600),
            ..Default::default()
        }),
        ..Default::default()
    };
    let token = Api::<ServiceAccount>::namespaced(client.clone(), &release.namespace)
        .create_token_request(&release.service_account, &PostParams::default(), &request)
        .await
        .expect("token for the release's ServiceAccount")
        .status
        .and_then(|s| s.token)
        .expect("the TokenRequest returns a token");

    let mut kubeconfig = Kubeconfig::read_from(&env.kubeconfig).expect("admin kubeconfig");
    let user = format!(
        "system:serviceaccount:{}:{}",
        release.namespace, release.service_account
    );
    kubeconfig.auth_infos = vec![NamedAuthInfo {
        name: user.clone(),
        auth_info: Some(AuthInfo {
            token: Some(token.into()),
            ..Default::default()
        }),
        ..Default::default()
    }];
    for context in kubeconfig.contexts.iter_mut() {
        if let Some(context) = context.context.as_mut() {
            context.user = Some(user.clone());
            context.namespace = Some(release.namespace.clone());
        }
    }
    let path = dir.join(format!("{}.kubeconfig", release.namespace));
    let text = serde_yaml_ng::to_string(&kubeconfig).expect("kubeconfig yaml");
    std::fs::write(&path, text).expect("write kubeconfig");
    path
}

/// The operator binary running as a local process; killed when dropped.
pub struct OperatorProcess {
    child: Child,
    pub admin_port: u16,
    pub log: PathBuf,
    pub name: String,
}

pub struct OperatorOptions<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    pub kubeconfig: &'a Path,
    pub leader_election: Option<&'a str>,
    pub log_dir: &'a Path,
    /// An OTLP/HTTP endpoint to export traces and metrics to (every second, so tests see them soon).
    pub otlp_endpoint: Option<&'a str>,
}

impl OperatorProcess {
    pub fn start(env: &Env, options: OperatorOptions<'_>) -> Self {
        let admin_port = free_port();
        let log = options.log_dir.join(format!("{}.log", options.name));
        let file = std::fs::File::create(&log).expect("operator log file");
        let binary = env.operator_binary();
        let mut command = Command::new(&binary);
        command
            .arg(format!("--watch-namespace={}", options.namespace))
            .arg(format!("--admin-addr=127.0.0.1:{admin_port}"))
            .arg("--node-image=rl-swarm-operator/swarm-node:e2e")
            .env("KUBECONFIG", options.kubeconfig)
            .env("POD_NAME", options.name)
            .env("POD_NAMESPACE", options.namespace)
            .env("RUST_LOG", "info,kube=warn")
            .stdout(file.try_clone().expect("log file handle"))
            .stderr(file);
        if let Some(endpoint) = options.otlp_endpoint {
            command
                .env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
                .env("OTEL_METRIC_EXPORT_INTERVAL", "1000")
                .env("OTEL_BSP_SCHEDULE_DELAY", "500");
        }
        if let Some(lease) = options.leader_election {
            command
                .arg("--leader-elect")
                .arg(format!("--lease-name={lease}"));
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        Self {
            child,
            admin_port,
            log,
            name: options.name.to_owned(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Peak resident memory of the process so far, in KiB (Linux `VmHWM`).
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// Kills the process at once, as a node failure would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The process's `/metrics`, or None while it does not serve yet.
    pub async fn metrics(&self) -> Option<String> {
        http_get(&format!("127.0.0.1:{}", self.admin_port), "/metrics").await
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The local swarm's free loopback port, as a test's.
fn free_port() -> u16 {
    swarm_node::local::free_port().expect("a free loopback port")
}

/// The response to a GET of `path` at `addr` (`host:port`), status line first; `None` unless it
/// answers 200.
pub async fn http_get(addr: &str, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    response.starts_with("HTTP/1.1 200").then_some(response)
}

/// Polls `check` until it yields a value; on timeout, panics with `what`, the last observation and
/// what the namespace looked like (objects, events, operator logs), so a red run explains itself.
pub async fn wait_for<T, O, F, Fut>(
    env: &Env,
    namespace: &str,
    operators: &[&OperatorProcess],
    what: &str,
    timeout: Duration,
    check: F,
) -> T
where
    O: Debug,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, O>>,
{
    wait_for_explained(
        env,
        namespace,
        operators,
        &String::new,
        what,
        timeout,
        check,
    )
    .await
}

/// [`wait_for`], with `more` adding to the diagnostics (e.g. the member processes' logs).
pub async fn wait_for_explained<T, O, F, Fut>(
    env: &Env,
    namespace: &str,
    operators: &[&OperatorProcess],
    more: &dyn Fn() -> String,
    what: &str,
    timeout: Duration,
    mut check: F,
) -> T
where
    O: Debug,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, O>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let last = match check().await {
            Ok(value) => return value,
            Err(observed) => observed,
        };
        if tokio::time::Instant::now() >= deadline {
            panic!(
                "timed out after {timeout:?} waiting for {what}\nlast observed: {last:?}\n{}{}",
                diagnostics(env, namespace, operators),
                more()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

pub fn diagnostics(env: &Env, namespace: &str, operators: &[&OperatorProcess]) -> String {
    let get = |args: &[&str]| {
        let output = env.try_run(&env.kubectl, args);
        format!(
            "$ kubectl {}\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    };
    let mut out = String::new();
    out += &get(&[
        "-n",
        namespace,
        "get",
        "swarms,swarmmembers,pods,secrets,services,configmaps",
        "-o",
        "wide",
    ]);
    out += &get(&["-n", namespace, "get", "swarms,swarmmembers", "-o", "yaml"]);
    out += &get(&["-n", namespace, "get", "events", "--sort-by=.lastTimestamp"]);
    for operator in operators {
        out += &format!(
            "--- operator {} log (last lines) ---\n{}\n",
            operator.name,
            operator.log_tail()
        );
    }
    out
}

/// Reads a Kubernetes list through kubectl as typed objects (handy for resources in any namespace).
pub fn kubectl_list<K: DeserializeOwned>(env: &Env, args: &[&str]) -> Vec<K> {
    #[derive(serde::Deserialize)]
    struct List<K> {
        items: Vec<K>,
    }
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json"]);
    let text = env.kubectl(&all);
    serde_json::from_str::<List<K>>(&text)
        .unwrap_or_else(|e| panic!("kubectl {}: {e}", all.join(" ")))
        .items
}
