//! Member identities: the Swarm controller creates each member's Secret (never overwriting one), so
//! it knows every PeerId when it writes the ConfigMap; the member controller only reads its own.

use k8s_openapi::api::core::v1::Secret;
use kube::api::PostParams;
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};
use swarm_identity::{MemberKey, PRIVATE_KEY_FILE};
use tracing::info;

use super::Context;
use crate::api::{FIELD_MANAGER, Swarm, SwarmMember, labels};
use crate::build::build_identity_secret;
use crate::error::{Error, KubeContext, Result};

/// The key in `member`'s identity Secret, creating the Secret with a new key when there is none.
/// Creation (never apply) makes a concurrent or restarted operator lose the race instead of
/// overwriting a key already in use: the Secret created first wins and its key is read.
/// `member` need not exist yet: a new member's Secret is created before it, so that its
/// controller finds the Secret on its first pass. When this call created the Secret it also
/// returns the [`IdentityCreated`] to announce once the member exists.
pub async fn ensure_identity(
    ctx: &Context,
    swarm: &Swarm,
    member: &SwarmMember,
) -> Result<(MemberKey, Option<IdentityCreated>)> {
    if let Some(key) = read_identity(ctx, member).await? {
        return Ok((key, None));
    }
    let namespace = member.namespace().unwrap_or_default();
    let secret_name = member.identity_secret_name();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let key = MemberKey::generate();
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..Default::default()
    };
    match secrets
        .create(&params, &build_identity_secret(swarm, member, &key))
        .await
    {
        Ok(_) => {
            info!(member = %member.name_any(), peer_id = %key.peer_id_string(), "created member identity");
            let created = IdentityCreated {
                note: format!(
                    "peer id {}, address {}",
                    key.peer_id_string(),
                    key.address()
                ),
            };
            Ok((key, Some(created)))
        }
        Err(kube::Error::Api(status)) if status.is_already_exists() => {
            let secret = secrets
                .get(&secret_name)
                .await
                .context(|| format!("get identity secret {namespace}/{secret_name}"))?;
            Ok((identity_in(&secret, member)?, None))
        }
        Err(source) => Err(Error::Kube {
            action: format!("create identity secret {namespace}/{secret_name}"),
            source,
        }),
    }
}

/// An identity this operator created, to announce on its member.
#[derive(Debug)]
pub struct IdentityCreated {
    note: String,
}

impl IdentityCreated {
    /// The member's IdentityCreated Event, when there is an identity to announce.
    pub async fn announce(created: Option<Self>, ctx: &Context, member: &SwarmMember) {
        if let Some(created) = created {
            ctx.event(
                &member.object_ref(&()),
                EventType::Normal,
                "IdentityCreated",
                created.note,
            )
            .await;
        }
    }
}

/// The key in `member`'s identity Secret; `None` while the Secret does not exist.
pub async fn read_identity(ctx: &Context, member: &SwarmMember) -> Result<Option<MemberKey>> {
    let namespace = member.namespace().unwrap_or_default();
    let secret_name = member.identity_secret_name();
    ctx.secret(&namespace, &secret_name)
        .await?
        .map(|secret| identity_in(&secret, member))
        .transpose()
}

fn identity_in(secret: &Secret, member: &SwarmMember) -> Result<MemberKey> {
    let secret_name = secret.name_any();
    let belongs = secret.labels().get(labels::MEMBER) == Some(&member.name_any());
    let data = secret.data.as_ref().and_then(|d| d.get(PRIVATE_KEY_FILE));
    match (belongs, data) {
        (true, Some(bytes)) => {
            MemberKey::from_secret_data(&bytes.0).map_err(|source| Error::Identity {
                secret: secret_name,
                source,
            })
        }
        (false, _) => Err(Error::ForeignSecret(secret_name)),
        (true, None) => Err(Error::IdentityKeyMissing(secret_name)),
    }
}
