use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use swarm_identity::{MemberKey, PRIVATE_KEY_FILE};

use super::{member_labels, owner_ref};
use crate::api::{IdentityRetention, Swarm, SwarmMember};

pub const PEER_ID_ANNOTATION: &str = "rlswarm.dev/peer-id";
pub const ADDRESS_ANNOTATION: &str = "rlswarm.dev/address";

/// The immutable Secret `<member>-identity` holding the member's key.
///
/// It is owned by the Swarm, not the member, so it outlives scale-down and a member that comes back
/// gets its identity back; with `identity.retention: Retain` it has no owner and outlives the Swarm.
/// The public PeerId and address are annotations, so anyone can check the binding without the key.
pub fn build_identity_secret(swarm: &Swarm, member: &SwarmMember, key: &MemberKey) -> Secret {
    let owner_references = match swarm.spec.identity.retention {
        IdentityRetention::Delete => Some(vec![owner_ref(swarm)]),
        IdentityRetention::Retain => None,
    };
    Secret {
        metadata: ObjectMeta {
            name: Some(member.identity_secret_name()),
            namespace: member.metadata.namespace.clone(),
            labels: Some(member_labels(swarm, member)),
            annotations: Some(BTreeMap::from([
                (PEER_ID_ANNOTATION.to_owned(), key.peer_id_string()),
                (ADDRESS_ANNOTATION.to_owned(), key.address()),
            ])),
            owner_references,
            ..Default::default()
        },
        immutable: Some(true),
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(
            PRIVATE_KEY_FILE.to_owned(),
            ByteString(key.secret_data().into_bytes()),
        )])),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixtures;

    const KEY: &str = "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318";

    #[test]
    fn identity_secret_is_immutable_and_owned_by_the_swarm() {
        let swarm = fixtures::swarm(2);
        let member = fixtures::member(&swarm, 1);
        let key = MemberKey::from_hex(KEY).unwrap();
        let secret = build_identity_secret(&swarm, &member, &key);

        assert_eq!(secret.metadata.name.as_deref(), Some("demo-1-identity"));
        assert_eq!(secret.immutable, Some(true));
        let data = secret.data.unwrap();
        assert_eq!(data[PRIVATE_KEY_FILE].0, KEY.as_bytes());
        let annotations = secret.metadata.annotations.unwrap();
        assert_eq!(annotations[PEER_ID_ANNOTATION], key.peer_id_string());
        assert_eq!(annotations[ADDRESS_ANNOTATION], key.address());
        let owners = secret.metadata.owner_references.unwrap();
        assert_eq!(owners.len(), 1);
        assert_eq!(
            (owners[0].kind.as_str(), owners[0].name.as_str()),
            ("Swarm", "demo")
        );
        assert_eq!(
            secret.metadata.labels.unwrap()["rlswarm.dev/member"],
            "demo-1"
        );
    }

    #[test]
    fn retained_identity_has_no_owner() {
        let mut swarm = fixtures::swarm(2);
        swarm.spec.identity.retention = IdentityRetention::Retain;
        let member = fixtures::member(&swarm, 0);
        let secret = build_identity_secret(&swarm, &member, &MemberKey::from_hex(KEY).unwrap());
        assert_eq!(secret.metadata.owner_references, None);
    }
}
