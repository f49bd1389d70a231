use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimSpec, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::{member_labels, owner_ref};
use crate::api::{CheckpointSpec, Swarm, SwarmMember};

pub fn checkpoint_pvc_name(member: &SwarmMember) -> String {
    format!(
        "{}-checkpoints",
        member.metadata.name.as_deref().unwrap_or_default()
    )
}

/// The member's checkpoint volume claim. Owned by the Swarm like the identity, so a member that comes
/// back after scale-down resumes from its checkpoints.
pub fn build_checkpoint_pvc(
    swarm: &Swarm,
    member: &SwarmMember,
    spec: &CheckpointSpec,
) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(checkpoint_pvc_name(member)),
            namespace: member.metadata.namespace.clone(),
            labels: Some(member_labels(swarm, member)),
            owner_references: Some(vec![owner_ref(swarm)]),
            ..Default::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: spec.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".to_owned(), spec.size.clone())])),
                ..Default::default()
            }),
            ..Default::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    use super::*;
    use crate::build::fixtures;

    #[test]
    fn checkpoint_claim_requests_the_configured_size_and_class() {
        let swarm = fixtures::swarm(1);
        let member = fixtures::member(&swarm, 0);
        let spec = CheckpointSpec {
            storage_class_name: Some("fast".into()),
            size: Quantity("20Gi".into()),
            every_rounds: 5,
        };
        let pvc = build_checkpoint_pvc(&swarm, &member, &spec);
        assert_eq!(pvc.metadata.name.as_deref(), Some("demo-0-checkpoints"));
        let spec = pvc.spec.unwrap();
        assert_eq!(spec.storage_class_name.as_deref(), Some("fast"));
        assert_eq!(spec.access_modes.unwrap(), ["ReadWriteOnce"]);
        assert_eq!(
            spec.resources.unwrap().requests.unwrap()["storage"],
            Quantity("20Gi".into())
        );
    }
}
