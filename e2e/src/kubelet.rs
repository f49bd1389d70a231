//! The kubelet's part for our pods on the test control plane. kwok marks pods Running but runs
//! nothing; this harness runs them: for every pod of the namespace that is bound to a node and
//! Running, it starts the `swarm-node` binary (the image's entrypoint) as a local process with the
//! pod's args and env, and with its mounted Secrets, ConfigMaps and volumes placed under a private
//! root for that pod; it stops the process when the pod goes away and restarts it when it exits
//! (`restartPolicy: Always`).
//!
//! What a real node provides, and how this harness stands in for it:
//! - **Pod network**: each pod gets its own loopback address (127.0.x.y; all of 127/8 is local on
//!   Linux), so every member listens on the same ports as in a cluster. The address is stable per
//!   pod name, as a member's DNS name is.
//! - **Cluster DNS**: a pod's `<hostname>.<subdomain>.<namespace>.svc` name is that pod's address.
//!   There is no resolver the node would ask, so mounted files have `/dns4/<name>` rewritten to
//!   `/ip4/<address>` when they are written.
//! - **Mounts**: the process has no mount namespace, so a file mounted at `/etc/rlswarm/node.yaml`
//!   lives at `<root>/etc/rlswarm/node.yaml`, and mount paths in env values and mounted files are
//!   rewritten to where the mounts really are.
//! - **Volumes**: a claim is bound the way a local-path provisioner would do it: a `hostPath`
//!   PersistentVolume on a folder of its own, pre-bound to the claim.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{
    ConfigMap, Container, EnvVar, HostPathVolumeSource, KeyToPath, ObjectReference,
    PersistentVolume, PersistentVolumeClaim, PersistentVolumeSpec, Pod, Secret, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams, PostParams};
use kube::{Client, ResourceExt};
use swarm_node::report::NodeEvent;

/// How often the harness compares the pods with its processes.
const SYNC_EVERY: Duration = Duration::from_millis(300);
/// Passes between updates of running pods' Secret and ConfigMap files (the kubelet's sync period
/// is a minute; 3 s keeps the tests quick).
const REFRESH_PASSES: u64 = 10;
/// Longest wait for a stopped process to exit before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Restart delay after an exit, doubling up to the cap, as the kubelet's crash-loop backoff does.
const RESTART_DELAY: Duration = Duration::from_secs(1);
const RESTART_DELAY_CAP: Duration = Duration::from_secs(10);

/// Loopback addresses handed out, process-wide, so no two pods of one test run ever share one.
static NEXT_ADDRESS: AtomicU32 = AtomicU32::new(0);

/// The harness; stops every process it started when dropped.
pub struct Kubelet {
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

/// Everything known about one pod instance (one uid) the harness ran.
#[derive(Debug, Clone)]
pub struct Instance {
    pub pod: String,
    pub uid: String,
    pub address: Ipv4Addr,
    pub root: PathBuf,
    /// Times the process exited and was started again.
    pub restarts: u32,
    /// Whether the process is running now (false once the pod is gone).
    pub running: bool,
    /// What the node printed on stdout, over every start of this instance.
    pub events: Vec<NodeEvent>,
}

impl Instance {
    /// The `started` events, one per process start.
    pub fn starts(&self) -> Vec<&swarm_node::report::Started> {
        self.events
            .iter()
            .filter_map(|e| match e {
                NodeEvent::Started(started) => Some(started),
                _ => None,
            })
            .collect()
    }

    pub fn rounds(&self) -> Vec<&swarm_node::report::RoundReport> {
        self.events
            .iter()
            .filter_map(|e| match e {
                NodeEvent::Round(report) => Some(report),
                _ => None,
            })
            .collect()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.root.join("node.log"), lines)
    }
}

struct State {
    client: Client,
    namespace: String,
    node_binary: PathBuf,
    dir: PathBuf,
    /// Live processes by pod uid.
    running: BTreeMap<String, Running>,
    /// Every instance ever started, in order.
    instances: Vec<Instance>,
    addresses: BTreeMap<String, Ipv4Addr>,
    /// What happened, for diagnostics.
    journal: Vec<String>,
    last_note: Option<String>,
    passes: u64,
}

struct Running {
    child: Child,
    launch: Launch,
    /// Which process runs: init container `stage`, or the pod's container once past them.
    stage: usize,
    /// When an exited process may start again, and the delay after the next exit.
    restart_at: Option<Instant>,
    restart_delay: Duration,
}

/// What starts a pod's process, kept to restart it.
#[derive(Clone)]
struct Launch {
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    root: PathBuf,
    /// The pod network's address of the pod.
    address: Ipv4Addr,
    files: Files,
    /// Files in `root` the process's stdout and stderr go to.
    stdout: String,
    stderr: String,
    /// The pod's init containers, run to completion in order before this one starts (a failed
    /// one is run again after the restart delay, as the kubelet does).
    init: Vec<Launch>,
}

impl Launch {
    /// The process of `stage`: an init container, or this (the pod's) container after them.
    fn stage(&self, stage: usize) -> &Launch {
        self.init.get(stage).unwrap_or(self)
    }
}

/// A pod's Secret and ConfigMap volumes, which the kubelet keeps up to date as the objects change.
#[derive(Clone)]
struct Files {
    namespace: String,
    /// Each volume and the folder it is written to.
    projected: Vec<(Volume, PathBuf)>,
    /// Every mount path and where it really is, longest first.
    mounts: Vec<(String, PathBuf)>,
}

impl Files {
    /// Writes every file whose contents (after rewriting) differ from what is there.
    async fn write(&self, state: &Mutex<State>, client: &Client) -> Result<(), PodError> {
        for (volume, dir) in &self.projected {
            for (path, text, mode) in projected_files(client, &self.namespace, volume).await? {
                let text = rewrite_dns(
                    &rewrite_paths(&text, &self.mounts),
                    &self.namespace,
                    &mut |pod| address_of(&mut lock(state).addresses, pod),
                );
                let path = dir.join(path);
                if fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
                    write_file(&path, &text, mode)?;
                }
            }
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
enum PodError {
    #[error("{0}")]
    Unsupported(String),
    #[error("waiting: {0}")]
    NotYet(String),
    #[error("{what}: {source}")]
    Api { what: String, source: kube::Error },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl Kubelet {
    /// Starts running the pods of `namespace` with `node_binary`; per-pod files go under `dir`.
    pub fn start(client: Client, namespace: &str, node_binary: &Path, dir: &Path) -> Kubelet {
        let state = Arc::new(Mutex::new(State {
            client,
            namespace: namespace.to_owned(),
            node_binary: node_binary.to_path_buf(),
            dir: dir.to_path_buf(),
            running: BTreeMap::new(),
            instances: Vec::new(),
            addresses: BTreeMap::new(),
            journal: Vec::new(),
            last_note: None,
            passes: 0,
        }));
        let task = tokio::spawn(sync_forever(Arc::clone(&state)));
        Kubelet { state, task }
    }

    /// Every instance of pod `name`, oldest first, with its events read now.
    pub fn instances(&self, name: &str) -> Vec<Instance> {
        self.all_instances()
            .into_iter()
            .filter(|i| i.pod == name)
            .collect()
    }

    /// Every instance ever started, oldest first, with its events read now.
    pub fn all_instances(&self) -> Vec<Instance> {
        let state = self.lock();
        state
            .instances
            .iter()
            .map(|instance| {
                let mut instance = instance.clone();
                instance.running = state.running.contains_key(&instance.uid);
                instance.events = read_events(&instance.root.join("stdout.jsonl"));
                instance
            })
            .collect()
    }

    /// The newest instance of each pod that has a process now, by pod name.
    pub fn running(&self) -> BTreeMap<String, Instance> {
        self.all_instances()
            .into_iter()
            .filter(|i| i.running)
            .map(|i| (i.pod.clone(), i))
            .collect()
    }

    /// What the harness did, and the end of every instance's log.
    pub fn diagnostics(&self) -> String {
        let mut out = String::from("--- kubelet harness ---\n");
        for line in &self.lock().journal {
            let _ = writeln!(out, "{line}");
        }
        for instance in self.all_instances() {
            let _ = writeln!(
                out,
                "--- {} ({}, {}, running {}, restarts {}) node.log ---\n{}",
                instance.pod,
                instance.uid,
                instance.address,
                instance.running,
                instance.restarts,
                instance.log_tail(15)
            );
        }
        out
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.task.abort();
        let mut state = self.lock();
        for running in state.running.values_mut() {
            let _ = running.child.kill();
            let _ = running.child.wait();
        }
        state.running.clear();
    }
}

async fn sync_forever(state: Arc<Mutex<State>>) {
    loop {
        sync(&state).await;
        tokio::time::sleep(SYNC_EVERY).await;
    }
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Adds a line to the journal, unless it repeats the line before (a pod waiting for its claim
/// would otherwise fill it, one line every pass).
fn note(state: &Mutex<State>, line: String) {
    let mut state = lock(state);
    if state.last_note.as_deref() == Some(line.as_str()) {
        return;
    }
    let stamp = jiff::Timestamp::now().strftime("%H:%M:%S%.3f");
    state.journal.push(format!("{stamp} {line}"));
    state.last_note = Some(line);
}

/// One pass: bind claims, stop processes of pods that are gone, start those of new Running pods,
/// restart exited ones.
async fn sync(state: &Arc<Mutex<State>>) {
    let (client, namespace) = {
        let state = lock(state);
        (state.client.clone(), state.namespace.clone())
    };
    if let Err(err) = bind_claims(state, &client, &namespace).await {
        note(state, format!("binding claims: {err}"));
    }
    let pods = match Api::<Pod>::namespaced(client.clone(), &namespace)
        .list(&ListParams::default())
        .await
    {
        Ok(list) => list.items,
        Err(err) => {
            note(state, format!("listing pods: {err}"));
            return;
        }
    };
    let live: BTreeMap<String, &Pod> = pods
        .iter()
        .filter(|pod| pod.metadata.deletion_timestamp.is_none())
        .filter_map(|pod| Some((pod.uid()?, pod)))
        .collect();

    // Stops first: a replacement pod has the same name and address as the one it replaces.
    let gone: Vec<String> = lock(state)
        .running
        .keys()
        .filter(|uid| !live.contains_key(*uid))
        .cloned()
        .collect();
    for uid in gone {
        stop(state, &uid).await;
    }

    for (uid, pod) in &live {
        let runs = pod.spec.as_ref().is_some_and(|s| s.node_name.is_some())
            && pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
        if runs && !lock(state).running.contains_key(uid) {
            match prepare(state, &client, pod).await {
                Ok(launch) => launch_new(state, pod, launch),
                Err(PodError::NotYet(why)) => {
                    note(state, format!("{}: {why}", pod.name_any()));
                }
                Err(err) => note(state, format!("{}: cannot run: {err}", pod.name_any())),
            }
        }
    }
    restart_exited(state);

    let refresh = {
        let mut guard = lock(state);
        guard.passes += 1;
        guard.passes.is_multiple_of(REFRESH_PASSES)
    };
    if refresh {
        let files: Vec<(String, Files)> = lock(state)
            .running
            .iter()
            .map(|(uid, running)| (uid.clone(), running.launch.files.clone()))
            .collect();
        for (uid, files) in files {
            if let Err(err) = files.write(state, &client).await {
                note(
                    state,
                    format!("{uid}: updating its Secret and ConfigMap files: {err}"),
                );
            }
        }
    }
}

fn launch_new(state: &Arc<Mutex<State>>, pod: &Pod, launch: Launch) {
    let name = pod.name_any();
    let uid = pod.uid().unwrap_or_default();
    match spawn(launch.stage(0)) {
        Ok(child) => {
            let mut guard = lock(state);
            guard.instances.push(Instance {
                pod: name.clone(),
                uid: uid.clone(),
                address: launch.address,
                root: launch.root.clone(),
                restarts: 0,
                running: true,
                events: Vec::new(),
            });
            guard.running.insert(
                uid.clone(),
                Running {
                    child,
                    launch,
                    stage: 0,
                    restart_at: None,
                    restart_delay: RESTART_DELAY,
                },
            );
            drop(guard);
            note(state, format!("{name} ({uid}): started"));
        }
        Err(err) => note(state, format!("{name}: cannot start: {err}")),
    }
}

/// Stops the process of pod `uid`: SIGTERM, then SIGKILL after the grace period.
async fn stop(state: &Arc<Mutex<State>>, uid: &str) {
    let Some(mut running) = lock(state).running.remove(uid) else {
        return;
    };
    let _ = Command::new("kill")
        .args(["-TERM", &running.child.id().to_string()])
        .status();
    let deadline = Instant::now() + STOP_GRACE;
    while Instant::now() < deadline {
        if matches!(running.child.try_wait(), Ok(Some(_))) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = running.child.kill();
    let _ = running.child.wait();
    note(state, format!("{uid}: pod gone, process stopped"));
}

/// Starts exited processes again after their backoff.
fn restart_exited(state: &Arc<Mutex<State>>) {
    let mut notes = Vec::new();
    {
        let mut guard = lock(state);
        let State {
            running, instances, ..
        } = &mut *guard;
        for (uid, process) in running.iter_mut() {
            if let Some(at) = process.restart_at {
                if Instant::now() < at {
                    continue;
                }
                process.restart_at = None;
                match spawn(process.launch.stage(process.stage)) {
                    Ok(child) => {
                        process.child = child;
                        if let Some(instance) = instances.iter_mut().rev().find(|i| &i.uid == uid) {
                            instance.restarts += 1;
                        }
                        notes.push(format!("{uid}: restarted"));
                    }
                    Err(err) => notes.push(format!("{uid}: cannot restart: {err}")),
                }
            } else if let Ok(Some(status)) = process.child.try_wait() {
                if process.stage < process.launch.init.len() && status.success() {
                    // An init container is done: the next one, or the pod's container, starts now.
                    process.stage += 1;
                    match spawn(process.launch.stage(process.stage)) {
                        Ok(child) => process.child = child,
                        Err(err) => notes.push(format!("{uid}: cannot start: {err}")),
                    }
                    notes.push(format!("{uid}: init container done"));
                    continue;
                }
                process.restart_at = Some(Instant::now() + process.restart_delay);
                process.restart_delay = (process.restart_delay * 2).min(RESTART_DELAY_CAP);
                notes.push(format!("{uid}: exited with {status}"));
            }
        }
    }
    for line in notes {
        note(state, line);
    }
}

fn spawn(launch: &Launch) -> std::io::Result<Child> {
    let open = |name: &str| {
        fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(launch.root.join(name))
    };
    Command::new(&launch.program)
        .args(&launch.args)
        .env_clear()
        .envs(inherited_env())
        .envs(offline_hub(&launch.root))
        .envs(launch.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&launch.root)
        .stdin(Stdio::null())
        .stdout(open(&launch.stdout)?)
        .stderr(open(&launch.stderr)?)
        .spawn()
}

/// No test reaches the internet: a member whose model is on the Hub finds a closed loopback port
/// (the discard port) where the Hub would be, unless its pod names a mirror, and keeps the Hub's
/// cache in its own root.
fn offline_hub(root: &Path) -> [(String, String); 2] {
    [
        ("HF_ENDPOINT".to_owned(), "http://127.0.0.1:9".to_owned()),
        ("HF_HOME".to_owned(), root.join("hf").display().to_string()),
    ]
}

/// What a container image would provide: the library path (libtorch) and a PATH.
fn inherited_env() -> Vec<(String, String)> {
    ["PATH", "LD_LIBRARY_PATH", "HOME"]
        .iter()
        .filter_map(|name| Some(((*name).to_owned(), std::env::var(name).ok()?)))
        .collect()
}

/// Resolves everything the pod's container and its init containers need: mounts, env, command.
async fn prepare(
    state: &Arc<Mutex<State>>,
    client: &Client,
    pod: &Pod,
) -> Result<Launch, PodError> {
    let name = pod.name_any();
    let uid = pod.uid().unwrap_or_default();
    let spec = pod
        .spec
        .as_ref()
        .ok_or_else(|| PodError::Unsupported("no spec".into()))?;
    let [container] = spec.containers.as_slice() else {
        return Err(PodError::Unsupported(format!(
            "{} containers; the harness runs pods of one",
            spec.containers.len()
        )));
    };
    let (root, node_binary, address) = {
        let mut guard = lock(state);
        let root = guard
            .dir
            .join("pods")
            .join(format!("{name}-{}", &uid[..uid.len().min(8)]));
        let address = address_of(&mut guard.addresses, &name);
        (root, guard.node_binary.clone(), address)
    };
    create_dir(&root)?;
    let mut main = container_launch(
        client,
        state,
        pod,
        container,
        (&root, address, &node_binary),
        ("stdout.jsonl", "node.log"),
    )
    .await?;
    for init in spec.init_containers.iter().flatten() {
        let mut launch = container_launch(
            client,
            state,
            pod,
            init,
            (&root, address, &node_binary),
            (
                &format!("{}.stdout", init.name),
                &format!("{}.log", init.name),
            ),
        )
        .await?;
        // The termination message goes to a file of the pod's, not to the host's /dev.
        if let Some(path) = &init.termination_message_path {
            let message = root.join(format!("{}.termination-log", init.name));
            for arg in &mut launch.args {
                if arg == path {
                    *arg = message.display().to_string();
                }
            }
        }
        main.init.push(launch);
    }
    Ok(main)
}

fn create_dir(path: &Path) -> Result<(), PodError> {
    fs::create_dir_all(path).map_err(|source| PodError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// One container's process: its mounts (Secret and ConfigMap files written), env, command.
async fn container_launch(
    client: &Client,
    state: &Arc<Mutex<State>>,
    pod: &Pod,
    container: &Container,
    (root, address, node_binary): (&Path, Ipv4Addr, &Path),
    (stdout, stderr): (&str, &str),
) -> Result<Launch, PodError> {
    let namespace = pod.namespace().unwrap_or_default();
    let spec = pod
        .spec
        .as_ref()
        .ok_or_else(|| PodError::Unsupported("no spec".into()))?;

    // Where each mount really is; Secret and ConfigMap files are written once all mounts are
    // known, since their contents may name other mounts' paths.
    let mut mounts: Vec<(String, PathBuf)> = Vec::new();
    let mut projected: Vec<(Volume, PathBuf)> = Vec::new();
    for mount in container.volume_mounts.iter().flatten() {
        let volume = spec
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == mount.name)
            .ok_or_else(|| PodError::Unsupported(format!("no volume {}", mount.name)))?;
        let local = root.join(mount.mount_path.trim_start_matches('/'));
        let target = if volume.secret.is_some() || volume.config_map.is_some() {
            create_dir(&local)?;
            projected.push((volume.clone(), local.clone()));
            local
        } else if volume.empty_dir.is_some() {
            create_dir(&local)?;
            local
        } else if let Some(claim) = &volume.persistent_volume_claim {
            claim_path(client, &namespace, &claim.claim_name).await?
        } else {
            return Err(PodError::Unsupported(format!(
                "volume {} is of a kind the harness does not run",
                volume.name
            )));
        };
        mounts.push((mount.mount_path.clone(), target));
    }
    // Longest first, so that a mount inside another wins.
    mounts.sort_by_key(|(path, _)| std::cmp::Reverse(path.len()));
    let files = Files {
        namespace,
        projected,
        mounts,
    };
    files.write(state, client).await?;
    let env = container_env(container, pod, address, &files.mounts)?;
    Ok(Launch {
        program: container
            .command
            .as_ref()
            .and_then(|c| c.first())
            .map_or_else(|| node_binary.to_owned(), PathBuf::from),
        args: container
            .command
            .iter()
            .flatten()
            .skip(1)
            .chain(container.args.iter().flatten())
            .cloned()
            .collect(),
        env,
        root: root.to_owned(),
        address,
        files,
        stdout: stdout.to_owned(),
        stderr: stderr.to_owned(),
        init: Vec::new(),
    })
}

/// The pod network's address of pod `name`, handed out on first use.
fn address_of(addresses: &mut BTreeMap<String, Ipv4Addr>, name: &str) -> Ipv4Addr {
    *addresses.entry(name.to_owned()).or_insert_with(|| {
        // 127.0.10.1 onwards: clear of 127.0.0.1, where the control plane, anvil and tests listen.
        let n = NEXT_ADDRESS.fetch_add(1, Ordering::Relaxed);
        Ipv4Addr::new(127, 0, 10 + (n / 250) as u8, 1 + (n % 250) as u8)
    })
}

/// The files of a Secret or ConfigMap volume: path inside the mount, contents, mode.
async fn projected_files(
    client: &Client,
    namespace: &str,
    volume: &Volume,
) -> Result<Vec<(String, String, u32)>, PodError> {
    let api_error = |what: String| move |source| PodError::Api { what, source };
    if let Some(secret) = &volume.secret {
        let name = secret.secret_name.clone().unwrap_or_default();
        let found = Api::<Secret>::namespaced(client.clone(), namespace)
            .get_opt(&name)
            .await
            .map_err(api_error(format!("get secret {name}")))?
            .ok_or_else(|| PodError::NotYet(format!("secret {name} does not exist")))?;
        let data: BTreeMap<String, String> = found
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
            .collect();
        let mode = secret.default_mode.unwrap_or(0o644);
        return select(data, secret.items.as_deref(), mode as u32);
    }
    let Some(config_map) = &volume.config_map else {
        return Ok(Vec::new());
    };
    let name = config_map.name.clone();
    let found = Api::<ConfigMap>::namespaced(client.clone(), namespace)
        .get_opt(&name)
        .await
        .map_err(api_error(format!("get configmap {name}")))?
        .ok_or_else(|| PodError::NotYet(format!("configmap {name} does not exist")))?;
    let mode = config_map.default_mode.unwrap_or(0o644);
    select(
        found.data.unwrap_or_default(),
        config_map.items.as_deref(),
        mode as u32,
    )
}

/// The folder of the hostPath volume bound to claim `name`.
async fn claim_path(client: &Client, namespace: &str, name: &str) -> Result<PathBuf, PodError> {
    let api_error = |what: String| move |source| PodError::Api { what, source };
    let found = Api::<PersistentVolumeClaim>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .map_err(api_error(format!("get claim {name}")))?
        .ok_or_else(|| PodError::NotYet(format!("claim {name} does not exist")))?;
    let volume_name = found
        .spec
        .and_then(|s| s.volume_name)
        .ok_or_else(|| PodError::NotYet(format!("claim {name} is not bound")))?;
    let volume = Api::<PersistentVolume>::all(client.clone())
        .get(&volume_name)
        .await
        .map_err(api_error(format!("get volume {volume_name}")))?;
    volume
        .spec
        .and_then(|s| s.host_path)
        .map(|h| PathBuf::from(h.path))
        .ok_or_else(|| {
            PodError::Unsupported(format!("volume {volume_name} is not a hostPath volume"))
        })
}

/// The entries of a Secret or ConfigMap a volume projects: the listed items, or every key.
fn select(
    data: BTreeMap<String, String>,
    items: Option<&[KeyToPath]>,
    mode: u32,
) -> Result<Vec<(String, String, u32)>, PodError> {
    match items {
        None => Ok(data.into_iter().map(|(k, v)| (k, v, mode)).collect()),
        Some(items) => items
            .iter()
            .map(|item| {
                let text = data.get(&item.key).cloned().ok_or_else(|| {
                    PodError::NotYet(format!("key {} is not there yet", item.key))
                })?;
                Ok((
                    item.path.clone(),
                    text,
                    item.mode.map_or(mode, |m| m as u32),
                ))
            })
            .collect(),
    }
}

fn write_file(path: &Path, text: &str, mode: u32) -> Result<(), PodError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |source| PodError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(io)?;
    }
    // Owner-writable while writing, then the mode the pod asked for (a restarted pod rewrites it).
    if path.exists() {
        fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(io)?;
    }
    fs::write(path, text).map_err(io)?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io)
}

/// The container's env as the kubelet resolves it: plain values (with `$(VAR)` expanded from the
/// variables before), the downward API fields our pods use, and the pod network's address for the
/// node to listen on.
fn container_env(
    container: &Container,
    pod: &Pod,
    address: Ipv4Addr,
    mounts: &[(String, PathBuf)],
) -> Result<Vec<(String, String)>, PodError> {
    let mut env: Vec<(String, String)> = Vec::new();
    for EnvVar {
        name,
        value,
        value_from,
    } in container.env.iter().flatten()
    {
        let resolved = match (value, value_from) {
            (Some(value), _) => expand(&rewrite_paths(value, mounts), &env),
            (None, Some(source)) => {
                let field = source
                    .field_ref
                    .as_ref()
                    .map(|f| f.field_path.as_str())
                    .ok_or_else(|| {
                        PodError::Unsupported(format!("env {name} comes from other than a field"))
                    })?;
                match field {
                    "metadata.name" => pod.name_any(),
                    "metadata.namespace" => pod.namespace().unwrap_or_default(),
                    "metadata.uid" => pod.uid().unwrap_or_default(),
                    "status.podIP" => address.to_string(),
                    other => {
                        return Err(PodError::Unsupported(format!(
                            "env {name} from field {other}"
                        )));
                    }
                }
            }
            (None, None) => String::new(),
        };
        env.push((name.clone(), resolved));
    }
    env.extend([
        ("SWARM_LISTEN_HOST".to_owned(), address.to_string()),
        // Several members share two cores here; libtorch would start a thread per core in each.
        ("SWARM_TORCH_THREADS".to_owned(), "1".to_owned()),
        ("RUST_LOG".to_owned(), "info".to_owned()),
    ]);
    Ok(env)
}

/// Expands `$(NAME)` from variables defined earlier; `$$(NAME)` stays literal, unknown names stay.
fn expand(value: &str, earlier: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("$(") {
        if rest[..start].ends_with('$') {
            out.push_str(&rest[..start - 1]);
            out.push_str("$(");
            rest = &rest[start + 2..];
            continue;
        }
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find(')') {
            Some(end) => {
                let name = &after[..end];
                match earlier.iter().rev().find(|(k, _)| k == name) {
                    Some((_, v)) => out.push_str(v),
                    None => {
                        out.push_str("$(");
                        out.push_str(name);
                        out.push(')');
                    }
                }
                rest = &after[end + 1..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// Replaces mount paths in `text` with where the mounts really are; a path counts only where it
/// starts (after a non-path character) and ends (at `/` or a non-path character).
fn rewrite_paths(text: &str, mounts: &[(String, PathBuf)]) -> String {
    let is_path_char = |c: char| c.is_ascii_alphanumeric() || "/._-".contains(c);
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    'scan: while i < text.len() {
        let at_start = text[..i]
            .chars()
            .next_back()
            .is_none_or(|c| !is_path_char(c));
        if at_start {
            for (mount, target) in mounts {
                if let Some(after) = text[i..].strip_prefix(mount.as_str())
                    && after
                        .chars()
                        .next()
                        .is_none_or(|c| c == '/' || !is_path_char(c))
                {
                    out.push_str(&target.to_string_lossy());
                    i += mount.len();
                    continue 'scan;
                }
            }
        }
        let c = text[i..].chars().next().unwrap_or_default();
        out.push(c);
        i += c.len_utf8();
    }
    out
}

/// Replaces `/dns4/<pod>.<subdomain>.<namespace>.svc[.cluster.local]` multiaddr components of
/// pods in `namespace` with `/ip4/<that pod's address>`.
fn rewrite_dns(text: &str, namespace: &str, address: &mut dyn FnMut(&str) -> Ipv4Addr) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("/dns4/") {
        out.push_str(&rest[..start]);
        let after = &rest[start + "/dns4/".len()..];
        let end = after.find('/').unwrap_or(after.len());
        let host = &after[..end];
        let name = host.trim_end_matches(".cluster.local");
        let parts: Vec<&str> = name.split('.').collect();
        match parts.as_slice() {
            [pod, _subdomain, ns, "svc"] if *ns == namespace => {
                let _ = write!(out, "/ip4/{}", address(pod));
            }
            _ => {
                out.push_str("/dns4/");
                out.push_str(host);
            }
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// Binds every pending claim of `namespace` that no volume is meant for to a new hostPath volume.
async fn bind_claims(
    state: &Arc<Mutex<State>>,
    client: &Client,
    namespace: &str,
) -> Result<(), kube::Error> {
    let claims = Api::<PersistentVolumeClaim>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await?
        .items;
    let pending: Vec<&PersistentVolumeClaim> = claims
        .iter()
        .filter(|c| c.spec.as_ref().is_none_or(|s| s.volume_name.is_none()))
        .collect();
    if pending.is_empty() {
        return Ok(());
    }
    let volumes = Api::<PersistentVolume>::all(client.clone());
    let existing = volumes.list(&ListParams::default()).await?.items;
    for claim in pending {
        let name = claim.name_any();
        let claimed = existing.iter().any(|v| {
            v.spec
                .as_ref()
                .and_then(|s| s.claim_ref.as_ref())
                .is_some_and(|r| {
                    r.namespace.as_deref() == Some(namespace) && r.name.as_deref() == Some(&name)
                })
        });
        if claimed {
            continue;
        }
        let uid = claim.uid().unwrap_or_default();
        let dir = lock(state).dir.join("volumes").join(&uid);
        if let Err(err) = fs::create_dir_all(&dir) {
            note(state, format!("claim {name}: {}: {err}", dir.display()));
            continue;
        }
        let volume = host_path_volume(&format!("e2e-{uid}"), &dir, claim);
        volumes.create(&PostParams::default(), &volume).await?;
        note(
            state,
            format!("claim {name}: bound a hostPath volume at {}", dir.display()),
        );
    }
    Ok(())
}

/// A hostPath volume at `dir` pre-bound to `claim`, with the class, size and access it asks for.
pub fn host_path_volume(name: &str, dir: &Path, claim: &PersistentVolumeClaim) -> PersistentVolume {
    let spec = claim.spec.clone().unwrap_or_default();
    PersistentVolume {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(BTreeMap::from([(
                "rlswarm.dev/e2e".to_owned(),
                "true".to_owned(),
            )])),
            ..Default::default()
        },
        spec: Some(PersistentVolumeSpec {
            capacity: spec.resources.and_then(|r| r.requests),
            access_modes: spec.access_modes,
            storage_class_name: spec.storage_class_name,
            host_path: Some(HostPathVolumeSource {
                path: dir.to_string_lossy().into_owned(),
                type_: Some("Directory".into()),
            }),
            claim_ref: Some(ObjectReference {
                namespace: claim.namespace(),
                name: Some(claim.name_any()),
                uid: claim.uid(),
                ..Default::default()
            }),
            persistent_volume_reclaim_policy: Some("Retain".into()),
            ..Default::default()
        }),
        status: None,
    }
}

fn read_events(path: &Path) -> Vec<NodeEvent> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(NodeEvent::parse)
        .collect()
}

fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_paths_are_rewritten_where_they_start_and_end() {
        let mounts = vec![
            ("/var/lib/swarm-node".to_owned(), PathBuf::from("/pv/1")),
            (
                "/etc/rlswarm".to_owned(),
                PathBuf::from("/root/etc/rlswarm"),
            ),
            ("/tmp".to_owned(), PathBuf::from("/root/tmp")),
        ];
        assert_eq!(
            rewrite_paths(
                "dir: /var/lib/swarm-node/checkpoints\nconfig=/etc/rlswarm/node.yaml /tmp /var/tmp /tmpfoo \"/tmp\"",
                &mounts
            ),
            "dir: /pv/1/checkpoints\nconfig=/root/etc/rlswarm/node.yaml /root/tmp /var/tmp /tmpfoo \"/root/tmp\""
        );
    }

    #[test]
    fn member_dns_names_of_the_namespace_become_pod_addresses() {
        let mut addresses = BTreeMap::new();
        let mut lookup = |pod: &str| address_of(&mut addresses, pod);
        let text = "- /dns4/demo-0.demo-peers.ns.svc/tcp/4001/p2p/16Uiu\n\
                    - /dns4/demo-1.demo-peers.ns.svc.cluster.local/tcp/4001/p2p/16Uiv\n\
                    - /dns4/demo-0.demo-peers.other.svc/tcp/4001/p2p/16Uiw\n\
                    - /dns4/example.com/tcp/4001";
        let rewritten = rewrite_dns(text, "ns", &mut lookup);
        let zero = address_of(&mut addresses, "demo-0");
        let one = address_of(&mut addresses, "demo-1");
        assert_ne!(zero, one);
        assert_eq!(
            rewritten,
            format!(
                "- /ip4/{zero}/tcp/4001/p2p/16Uiu\n\
                 - /ip4/{one}/tcp/4001/p2p/16Uiv\n\
                 - /dns4/demo-0.demo-peers.other.svc/tcp/4001/p2p/16Uiw\n\
                 - /dns4/example.com/tcp/4001"
            )
        );
    }

    #[test]
    fn env_references_expand_from_earlier_variables_only() {
        let earlier = vec![
            ("POD_NAMESPACE".to_owned(), "ns".to_owned()),
            ("SWARM_MEMBER".to_owned(), "demo-0".to_owned()),
        ];
        assert_eq!(
            expand(
                "k8s.namespace.name=$(POD_NAMESPACE),k8s.pod.name=$(SWARM_MEMBER),x=$(LATER),y=$$(POD_NAMESPACE)",
                &earlier
            ),
            "k8s.namespace.name=ns,k8s.pod.name=demo-0,x=$(LATER),y=$(POD_NAMESPACE)"
        );
    }
}
