use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use swarm_node_config::{
    CONFIG_FILE, CONFIG_VERSION, CheckpointConfig, ConfigError, LedgerConfig, ModelConfig,
    NodeConfig, P2pConfig, RoundsConfig, SwarmRef,
};

use super::pod::{CHECKPOINT_DIR, MODEL_MOUNT};
use super::{owner_ref, swarm_labels};
use crate::api::Swarm;
use crate::ledger::ledger_target;

/// Checkpoint interval when the Swarm declares no checkpoint volume (the node still checkpoints to its
/// scratch volume, which survives container restarts).
const DEFAULT_CHECKPOINT_ROUNDS: u32 = 10;

/// The multiaddr under which a member is reachable inside the cluster.
pub fn bootstrap_multiaddr(swarm: &Swarm, member: &str, peer_id: &str) -> String {
    format!(
        "/dns4/{member}.{service}.{namespace}.svc/tcp/{port}/p2p/{peer_id}",
        service = swarm.peers_service_name(),
        namespace = swarm.metadata.namespace.as_deref().unwrap_or_default(),
        port = swarm.spec.p2p.port,
    )
}

/// The configuration every member's node reads.
pub fn build_node_config(swarm: &Swarm, bootstrap_peers: Vec<String>) -> NodeConfig {
    let source = &swarm.spec.model.source;
    let mounted_path = |sub: &Option<String>| match sub.as_deref() {
        Some(sub) if !sub.is_empty() => format!("{MODEL_MOUNT}/{}", sub.trim_matches('/')),
        _ => MODEL_MOUNT.to_owned(),
    };
    let path = source
        .pvc
        .as_ref()
        .map(|pvc| mounted_path(&pvc.path))
        .or_else(|| source.image.as_ref().map(|image| mounted_path(&image.path)));
    let hub = source.hub.as_ref();
    NodeConfig {
        version: CONFIG_VERSION,
        swarm: SwarmRef {
            name: swarm.metadata.name.clone().unwrap_or_default(),
            namespace: swarm.metadata.namespace.clone().unwrap_or_default(),
            uid: swarm.metadata.uid.clone().unwrap_or_default(),
        },
        p2p: P2pConfig {
            port: u16::try_from(swarm.spec.p2p.port).unwrap_or_default(),
            bootstrap_peers,
            external_peers: swarm.spec.p2p.bootstrap_peers.clone(),
        },
        model: ModelConfig {
            path,
            hub_id: hub.map(|h| h.id.clone()),
            revision: hub.and_then(|h| h.revision.clone()),
            dtype: swarm.spec.model.dtype,
        },
        training: swarm.spec.training.clone(),
        rounds: RoundsConfig {
            // The API server sets it on every stored object; only hand-built objects lack it.
            start_time: swarm
                .metadata
                .creation_timestamp
                .as_ref()
                .map_or(jiff::Timestamp::UNIX_EPOCH, |time| time.0),
            duration_seconds: u32::try_from(swarm.spec.rounds.duration_seconds).unwrap_or(1),
            max_rounds: swarm
                .spec
                .rounds
                .max_rounds
                .and_then(|r| u64::try_from(r).ok()),
        },
        checkpoints: Some(CheckpointConfig {
            dir: CHECKPOINT_DIR.to_owned(),
            every_rounds: swarm
                .spec
                .checkpoints
                .as_ref()
                .and_then(|c| u32::try_from(c.every_rounds).ok())
                .unwrap_or(DEFAULT_CHECKPOINT_ROUNDS),
        }),
        // Only once the contract is known: a node cannot submit before the operator has deployed it.
        ledger: ledger_target(swarm).ok().flatten().and_then(|target| {
            Some(LedgerConfig {
                contract_address: target.contract?.to_string(),
                rpc_url: target.rpc_url,
                chain_id: target.chain_id,
            })
        }),
    }
}

/// The ConfigMap `<swarm>-config` with the rendered node configuration.
pub fn build_config_map(swarm: &Swarm, config: &NodeConfig) -> Result<ConfigMap, ConfigError> {
    Ok(ConfigMap {
        metadata: ObjectMeta {
            name: Some(swarm.config_map_name()),
            namespace: swarm.metadata.namespace.clone(),
            labels: Some(swarm_labels(swarm)),
            owner_references: Some(vec![owner_ref(swarm)]),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            CONFIG_FILE.to_owned(),
            config.to_yaml()?,
        )])),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use swarm_node_config::Dtype;

    use super::*;
    use crate::api::{HubModelSource, ModelSource};
    use crate::build::fixtures;

    #[test]
    fn multiaddr_names_the_member_through_the_headless_service() {
        let swarm = fixtures::swarm(1);
        assert_eq!(
            bootstrap_multiaddr(&swarm, "demo-0", "16Uiu2HAmExample"),
            "/dns4/demo-0.demo-peers.research.svc/tcp/4001/p2p/16Uiu2HAmExample"
        );
    }

    #[test]
    fn config_map_carries_the_node_config_the_node_parses() {
        let mut swarm = fixtures::swarm(2);
        swarm.spec.training.local_rollouts = 6;
        swarm.spec.training.external_rollouts = 2;
        swarm.spec.rounds.max_rounds = Some(500);
        let created: jiff::Timestamp = "2026-11-25T01:02:03Z".parse().unwrap();
        swarm.metadata.creation_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(created),
        );
        let peers = vec![
            bootstrap_multiaddr(&swarm, "demo-0", "16Uiu2HAmA"),
            bootstrap_multiaddr(&swarm, "demo-1", "16Uiu2HAmB"),
        ];
        let config = build_node_config(&swarm, peers.clone());
        let map = build_config_map(&swarm, &config).unwrap();

        assert_eq!(map.metadata.name.as_deref(), Some("demo-config"));
        let text = &map.data.unwrap()[CONFIG_FILE];
        let parsed = NodeConfig::from_yaml(text, "configmap").unwrap();
        assert_eq!(parsed, config);
        assert_eq!(parsed.swarm.uid, "5f0c2c1e-0000-4000-8000-000000000001");
        assert_eq!(parsed.p2p.bootstrap_peers, peers);
        assert_eq!(parsed.model.path.as_deref(), Some("/models/qwen2.5-0.5b"));
        assert_eq!(parsed.model.dtype, Dtype::Bf16);
        assert_eq!(
            (
                parsed.training.local_rollouts,
                parsed.training.external_rollouts
            ),
            (6, 2)
        );
        assert_eq!(parsed.rounds.max_rounds, Some(500));
        assert_eq!(parsed.rounds.start_time, created);
        assert_eq!(parsed.checkpoints.unwrap().every_rounds, 10);
    }

    #[test]
    fn ledger_reaches_the_node_once_the_contract_is_known() {
        use crate::api::{DeployContract, LedgerContract, LedgerSpec, SecretKeyRef};
        let mut swarm = fixtures::swarm(1);
        swarm.spec.ledger = Some(LedgerSpec {
            rpc_url: "http://127.0.0.1:8545".into(),
            chain_id: 31337,
            contract: LedgerContract {
                address: None,
                deploy: Some(DeployContract {}),
            },
            operator_key_secret: SecretKeyRef {
                name: "ledger-operator".into(),
                key: "private-key".into(),
            },
            member_funding: None,
        });
        assert_eq!(build_node_config(&swarm, vec![]).ledger, None);
        let address = "0x5FbDB2315678afecb367f032d93F642f64180aa3";
        if let Some(ledger) = swarm.spec.ledger.as_mut() {
            ledger.contract = LedgerContract {
                address: Some(address.into()),
                deploy: None,
            };
        }
        assert_eq!(
            build_node_config(&swarm, vec![]).ledger,
            Some(LedgerConfig {
                rpc_url: "http://127.0.0.1:8545".into(),
                chain_id: 31337,
                contract_address: address.into(),
            })
        );
    }

    #[test]
    fn hub_model_goes_to_the_node_as_an_id() {
        let mut swarm = fixtures::swarm(1);
        swarm.spec.model.source = ModelSource {
            hub: Some(HubModelSource {
                id: "Qwen/Qwen2.5-0.5B-Instruct".into(),
                revision: Some("main".into()),
                token_secret: None,
            }),
            ..Default::default()
        };
        let config = build_node_config(&swarm, vec![]);
        assert_eq!(config.model.path, None);
        assert_eq!(
            config.model.hub_id.as_deref(),
            Some("Qwen/Qwen2.5-0.5B-Instruct")
        );
        assert_eq!(config.model.revision.as_deref(), Some("main"));
    }
}
