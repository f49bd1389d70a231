//! Pure builders: each turns a Swarm (and a member) into the object the cluster should hold.
//! They do no I/O, so tests pin their output exactly.

mod config;
mod member;
mod pod;
mod pvc;
mod secret;
mod service;

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Resource;

pub use config::{bootstrap_multiaddr, build_config_map, build_node_config};
pub use member::build_member;
pub use pod::{
    FETCH_MODEL_CONTAINER, MODEL_MOUNT, PodSettings, TEMPLATE_HASH_ANNOTATION, build_member_pod,
};
pub use pvc::{build_checkpoint_pvc, checkpoint_pvc_name};
pub use secret::build_identity_secret;
pub use service::build_peers_service;

use crate::api::{Swarm, SwarmMember, labels};

/// Labels shared by every child of a Swarm.
pub fn swarm_labels(swarm: &Swarm) -> BTreeMap<String, String> {
    let name = swarm.metadata.name.clone().unwrap_or_default();
    BTreeMap::from([
        (labels::NAME.to_owned(), labels::NAME_VALUE.to_owned()),
        (labels::INSTANCE.to_owned(), name.clone()),
        (
            labels::MANAGED_BY.to_owned(),
            labels::MANAGED_BY_VALUE.to_owned(),
        ),
        (labels::SWARM.to_owned(), name),
    ])
}

/// Labels of one member's objects: the swarm's plus the member and its ordinal.
pub fn member_labels(swarm: &Swarm, member: &SwarmMember) -> BTreeMap<String, String> {
    let mut out = swarm_labels(swarm);
    out.insert(labels::COMPONENT.to_owned(), "member".to_owned());
    out.insert(
        labels::MEMBER.to_owned(),
        member.metadata.name.clone().unwrap_or_default(),
    );
    out.insert(labels::ORDINAL.to_owned(), member.spec.ordinal.to_string());
    out
}

/// Controller owner reference to `owner`; garbage collection removes the child with it.
/// Owners always come from the API server, so name and uid are set; an empty uid would be rejected
/// by the API server rather than silently orphan the child.
pub fn owner_ref<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: owner.meta().name.clone().unwrap_or_default(),
        uid: owner.meta().uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: None,
    }
}

#[cfg(test)]
pub(crate) mod fixtures {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use swarm_node_config::{Dtype, TrainingConfig};

    use crate::api::*;

    pub fn swarm(replicas: i32) -> Swarm {
        Swarm {
            metadata: ObjectMeta {
                name: Some("demo".into()),
                namespace: Some("research".into()),
                uid: Some("5f0c2c1e-0000-4000-8000-000000000001".into()),
                generation: Some(1),
                ..Default::default()
            },
            spec: SwarmSpec {
                replicas,
                member: MemberTemplate::default(),
                model: ModelSpec {
                    source: ModelSource {
                        pvc: Some(PvcModelSource {
                            claim_name: "models".into(),
                            path: Some("qwen2.5-0.5b".into()),
                        }),
                        ..Default::default()
                    },
                    dtype: Dtype::Bf16,
                },
                training: TrainingConfig::default(),
                rounds: RoundsSpec::default(),
                p2p: P2pSpec::default(),
                checkpoints: None,
                identity: IdentitySpec::default(),
                ledger: None,
                telemetry: None,
            },
            status: None,
        }
    }

    pub fn member(swarm: &Swarm, ordinal: i32) -> SwarmMember {
        let mut member = super::build_member(swarm, ordinal as u32);
        member.metadata.uid = Some(format!("00000000-0000-4000-8000-00000000010{ordinal}"));
        member.metadata.generation = Some(1);
        member
    }
}
