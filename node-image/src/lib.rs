//! The swarm node: a member's training loop over libp2p ([`member`]), and the local swarm and SAPO
//! experiment that run several members on one machine ([`local`], [`experiment`]). A member starts
//! from what the operator mounts into its pod: the identity key (from the member's Secret) and the
//! node config (from the swarm's ConfigMap).

pub mod clock;
pub mod exchange;
pub mod experiment;
pub mod learner;
pub mod ledger;
pub mod local;
pub mod local_chain;
pub mod member;
pub mod metrics;
pub mod report;

use std::path::Path;

use swarm_identity::{IdentityError, MemberKey};
use swarm_node_config::{ConfigError, Dtype, NodeConfig};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// Everything a member's node starts from.
#[derive(Debug)]
pub struct Startup {
    pub member: String,
    pub key: MemberKey,
    pub config: NodeConfig,
    /// Where the config was read: the node reads it again for peers and a ledger added later.
    pub config_path: std::path::PathBuf,
}

impl Startup {
    /// Reads the key from `identity_dir` and the config from `config_path`.
    pub fn load(
        member: String,
        identity_dir: &Path,
        config_path: &Path,
    ) -> Result<Startup, StartupError> {
        let key = MemberKey::load(identity_dir)?;
        let config = NodeConfig::load(config_path)?;
        Ok(Startup {
            member,
            key,
            config,
            config_path: config_path.to_path_buf(),
        })
    }

    /// Who this node is and what it will train, one `name: value` per line.
    pub fn summary(&self) -> String {
        let config = &self.config;
        let model = &config.model;
        let training = &config.training;
        let source = match (&model.path, &model.hub_id) {
            (Some(path), _) => format!("path {path}"),
            (None, Some(hub_id)) => format!("hub {hub_id}"),
            // NodeConfig::load rejects a model with neither.
            (None, None) => "none".to_owned(),
        };
        let dtype = match model.dtype {
            Dtype::Bf16 => "bf16",
            Dtype::F16 => "f16",
            Dtype::F32 => "f32",
        };
        format!(
            "member: {member}\n\
             peer id: {peer_id}\n\
             address: {address}\n\
             swarm: {namespace}/{name}\n\
             p2p: port {port}, {peers} bootstrap peers\n\
             model: {source}, dtype {dtype}\n\
             training: I={i} J={j} G={g}\n",
            member = self.member,
            peer_id = self.key.peer_id_string(),
            address = self.key.address(),
            namespace = config.swarm.namespace,
            name = config.swarm.name,
            port = config.p2p.port,
            peers = config.p2p.bootstrap_peers.len(),
            i = training.local_rollouts,
            j = training.external_rollouts,
            g = training.completions_per_question,
        )
    }
}
