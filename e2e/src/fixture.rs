//! What every end-to-end scenario starts from: a fresh namespace with the chart installed, the
//! operator's ServiceAccount kubeconfig, and waits on the Swarm's state.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use swarm_operator::api::{Swarm, SwarmMember, SwarmPhase};

use crate::*;

/// Longest wait for the operator and the control plane to settle after a change.
pub const SETTLE: Duration = Duration::from_secs(90);

pub struct Fixture {
    pub env: Env,
    pub client: Client,
    pub ns: TestNamespace,
    pub dir: tempfile::TempDir,
    pub kubeconfig: std::path::PathBuf,
}

impl Fixture {
    pub async fn new(test: &str, release_values: &[&str]) -> Self {
        let env = Env::from_env();
        ensure_crds(&env).await;
        let client = env.admin_client().await;
        let ns = TestNamespace::create(&env, &client, test).await;
        let release = install_release(&env, &ns.name, release_values);
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = service_account_kubeconfig(&env, &client, &release, dir.path()).await;
        Self {
            env,
            client,
            ns,
            dir,
            kubeconfig,
        }
    }

    pub fn operator(&self, name: &str, lease: Option<&str>) -> OperatorProcess {
        OperatorProcess::start(
            &self.env,
            OperatorOptions {
                name,
                namespace: &self.ns.name,
                kubeconfig: &self.kubeconfig,
                leader_election: lease,
                log_dir: self.dir.path(),
                otlp_endpoint: None,
            },
        )
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.ns.name)
    }

    /// Waits until `name` exists under a uid other than `old`: replaced, not merely left in place.
    pub async fn wait_replaced<K>(
        &self,
        api: &Api<K>,
        name: &str,
        old: Option<String>,
        operators: &[&OperatorProcess],
    ) where
        K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        let what = format!("{name} to be replaced");
        wait_for(
            &self.env,
            &self.ns.name,
            operators,
            &what,
            SETTLE,
            || async {
                match api.get_opt(name).await {
                    Ok(Some(object)) if object.meta().uid != old => Ok(()),
                    other => Err(format!(
                        "{:?}",
                        other.map(|o| o.map(|o| o.meta().uid.clone()))
                    )),
                }
            },
        )
        .await;
    }

    /// How many objects of kind `K` match `selector` in the test namespace.
    pub async fn count<K>(&self, selector: &ListParams) -> Result<usize, String>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
        K::DynamicType: Default,
    {
        let list = self
            .api::<K>()
            .list(selector)
            .await
            .map_err(|e| e.to_string())?;
        Ok(list.items.len())
    }

    pub fn apply_file(&self, path: &str) {
        self.env
            .kubectl(&["apply", "-n", &self.ns.name, "-f", path]);
    }

    pub fn apply_yaml(&self, yaml: &str) {
        let path = self.dir.path().join("manifest.yaml");
        std::fs::write(&path, yaml).unwrap();
        self.apply_file(&path.to_string_lossy());
    }

    pub fn scale(&self, swarm: &str, replicas: u32) {
        self.env.kubectl(&[
            "scale",
            "-n",
            &self.ns.name,
            &format!("swarm/{swarm}"),
            &format!("--replicas={replicas}"),
        ]);
    }

    pub async fn members(&self) -> Vec<SwarmMember> {
        self.api::<SwarmMember>()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
    }

    /// Waits until the Swarm reports `ready` of `ready` members ready and Running, with exactly
    /// those members existing, each with a bound pod.
    pub async fn wait_ready(
        &self,
        swarm: &str,
        ready: i32,
        operators: &[&OperatorProcess],
    ) -> Swarm {
        let swarms = self.api::<Swarm>();
        let pods = self.api::<Pod>();
        wait_for(
            &self.env,
            &self.ns.name,
            operators,
            &format!("swarm {swarm} to have {ready} ready members"),
            SETTLE,
            || async {
                let current = swarms.get(swarm).await.map_err(|e| e.to_string())?;
                let status = current.status.clone().ok_or("no status yet")?;
                let members = self.members().await;
                let bound = pods
                    .list(&ListParams::default().labels(&format!("rlswarm.dev/swarm={swarm}")))
                    .await
                    .map_err(|e| e.to_string())?
                    .items
                    .iter()
                    .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some())
                    .count();
                let settled = status.ready_replicas == ready
                    && status.replicas == ready
                    && status.phase == Some(SwarmPhase::Running)
                    && status.observed_generation == current.metadata.generation
                    && members.len() == ready as usize
                    && bound == ready as usize;
                if settled {
                    Ok(current)
                } else {
                    Err(format!(
                        "status replicas={} ready={} phase={:?}; {} members, {bound} bound pods",
                        status.replicas,
                        status.ready_replicas,
                        status.phase,
                        members.len()
                    ))
                }
            },
        )
        .await
    }

    /// Member name → PeerId, from the members' status.
    pub async fn peer_ids(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .members()
            .await
            .into_iter()
            .map(|m| {
                let peer = m
                    .status
                    .as_ref()
                    .and_then(|s| s.peer_id.clone())
                    .unwrap_or_default();
                (m.name_any(), peer)
            })
            .collect();
        out.sort();
        out
    }
}
