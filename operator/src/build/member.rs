use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::{owner_ref, swarm_labels};
use crate::api::{Swarm, SwarmMember, SwarmMemberSpec, labels};

/// The SwarmMember `<swarm>-<ordinal>`, owned by its Swarm.
pub fn build_member(swarm: &Swarm, ordinal: u32) -> SwarmMember {
    let name = swarm.member_name(ordinal);
    let mut member_labels = swarm_labels(swarm);
    member_labels.insert(labels::MEMBER.to_owned(), name.clone());
    member_labels.insert(labels::ORDINAL.to_owned(), ordinal.to_string());
    SwarmMember {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: swarm.metadata.namespace.clone(),
            labels: Some(member_labels),
            owner_references: Some(vec![owner_ref(swarm)]),
            ..Default::default()
        },
        spec: SwarmMemberSpec {
            swarm: swarm.metadata.name.clone().unwrap_or_default(),
            ordinal: i32::try_from(ordinal).unwrap_or(i32::MAX),
        },
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixtures;

    #[test]
    fn member_is_named_by_ordinal_and_owned_by_the_swarm() {
        let member = build_member(&fixtures::swarm(3), 2);
        assert_eq!(member.metadata.name.as_deref(), Some("demo-2"));
        assert_eq!(member.metadata.namespace.as_deref(), Some("research"));
        assert_eq!(member.spec.swarm, "demo");
        assert_eq!(member.spec.ordinal, 2);
        let labels = member.metadata.labels.unwrap();
        assert_eq!(labels["rlswarm.dev/member"], "demo-2");
        assert_eq!(labels["rlswarm.dev/ordinal"], "2");
        assert_eq!(labels["rlswarm.dev/swarm"], "demo");
        let owner = &member.metadata.owner_references.unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str()),
            ("Swarm", "demo")
        );
        assert_eq!(owner.controller, Some(true));
    }
}
