//! Swarm controller: members and their identities, the headless Service, the node ConfigMap and the
//! aggregated status.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::DeleteParams;
use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};

use super::identity::{IdentityCreated, ensure_identity};
use super::{Context, add_finalizer, apply, apply_status, delete, remove_finalizer};
use crate::api::{Swarm, SwarmMember, SwarmStatus};
use crate::build::{
    bootstrap_multiaddr, build_config_map, build_member, build_node_config, build_peers_service,
};
use crate::error::{Error, KubeContext, Result};
use crate::ledger::SWARM_FINALIZER;
use crate::status::{SpecProblem, plan, swarm_status};
use swarm_identity::MemberKey;

/// How soon to look again while a deleted Swarm's members are leaving.
const WAIT_FOR_MEMBERS: Duration = Duration::from_secs(5);

pub async fn reconcile(ctx: Arc<Context>, swarm: Swarm) -> Result<Action> {
    let namespace = swarm
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let name = swarm.name_any();
    let client = ctx.client.clone();
    let members_api: Api<SwarmMember> = Api::namespaced(client.clone(), &namespace);
    let swarms_api: Api<Swarm> = Api::namespaced(client.clone(), &namespace);
    if swarm.metadata.deletion_timestamp.is_some() {
        return finish_deletion(&ctx, &swarm, &swarms_api, &members_api).await;
    }
    if swarm.spec.ledger.is_some() {
        // Members must leave the ledger before the Swarm (and with it the ledger settings) is gone;
        // the ledger controller does all chain work, so this reconcile never waits on RPC.
        add_finalizer(&swarms_api, &swarm, SWARM_FINALIZER).await?;
    }

    let problem = check_model_source(&swarm, &ctx).await?;
    let listed = ctx.members_of(&namespace, &name).await?;

    let plan = plan(&swarm, &listed, problem.as_ref());
    for member_name in &plan.remove {
        delete(&members_api, member_name, &DeleteParams::background()).await?;
    }
    let mut members: Vec<SwarmMember> = listed
        .into_iter()
        .filter(|m| !plan.remove.contains(&m.name_any()))
        .collect();
    let mut known_peer_ids = HashMap::new();
    for &ordinal in &plan.create {
        let new_member = build_member(&swarm, ordinal);
        // The identity first, so the member's controller finds its Secret on its first pass.
        let identity = usable_identity(&ctx, &swarm, &new_member).await?;
        let member = apply(&members_api, &new_member).await?;
        if let Some((key, created)) = identity {
            known_peer_ids.insert(member.name_any(), key.peer_id_string());
            IdentityCreated::announce(created, &ctx, &member).await;
        }
        members.push(member);
    }
    members.sort_by_key(|m| m.spec.ordinal);
    let bootstrap_peers = bootstrap_peers(&ctx, &swarm, &members, &known_peer_ids).await?;

    ctx.apply_service(&build_peers_service(&swarm)).await?;
    let config = build_node_config(&swarm, bootstrap_peers.clone());
    ctx.apply_config_map(&build_config_map(&swarm, &config)?)
        .await?;

    let status = swarm_status(
        &swarm,
        &members,
        bootstrap_peers,
        problem.as_ref(),
        Timestamp::now(),
    );
    let shown = swarm.status.as_ref().map(SwarmStatus::without_ledger_part);
    if shown.as_ref() != Some(&status) {
        apply_status(&swarm, &status, client).await?;
    }

    let reference = swarm.object_ref(&());
    for event in plan.events {
        ctx.event(&reference, event.type_, event.reason, event.note)
            .await;
    }
    Ok(Action::requeue(plan.requeue))
}

/// Every live member's bootstrap multiaddr, so the ConfigMap lists them all in one pass: the PeerId
/// from the member's status once its controller has published it, else from `known` (the
/// identities this pass created), else from its identity Secret, created here if missing.
async fn bootstrap_peers(
    ctx: &Context,
    swarm: &Swarm,
    members: &[SwarmMember],
    known: &HashMap<String, String>,
) -> Result<Vec<String>> {
    let mut peers = Vec::with_capacity(members.len());
    for member in members
        .iter()
        .filter(|m| m.metadata.deletion_timestamp.is_none())
    {
        let name = member.name_any();
        let published = member
            .status
            .as_ref()
            .and_then(|s| s.peer_id.clone())
            .or_else(|| known.get(&name).cloned());
        let peer_id = match published {
            Some(peer_id) => peer_id,
            None => {
                let Some((key, created)) = usable_identity(ctx, swarm, member).await? else {
                    continue;
                };
                IdentityCreated::announce(created, ctx, member).await;
                key.peer_id_string()
            }
        };
        peers.push(bootstrap_multiaddr(swarm, &name, &peer_id));
    }
    Ok(peers)
}

/// [`ensure_identity`], with a Secret that cannot serve as the member's identity as `None`: the
/// member's own controller reports that in its status.
async fn usable_identity(
    ctx: &Context,
    swarm: &Swarm,
    member: &SwarmMember,
) -> Result<Option<(MemberKey, Option<IdentityCreated>)>> {
    match ensure_identity(ctx, swarm, member).await {
        Ok(identity) => Ok(Some(identity)),
        Err(error) if error.is_identity_problem() => Ok(None),
        Err(error) => Err(error),
    }
}

/// A Swarm being deleted with members on a ledger: its members are deleted first (the ledger
/// controller deregisters each and removes its finalizer, which needs the Swarm's ledger
/// settings); then the Swarm may go.
async fn finish_deletion(
    ctx: &Context,
    swarm: &Swarm,
    swarms_api: &Api<Swarm>,
    members_api: &Api<SwarmMember>,
) -> Result<Action> {
    if !swarm.finalizers().iter().any(|f| f == SWARM_FINALIZER) {
        // Owner references hand the children to the garbage collector.
        return Ok(Action::await_change());
    }
    let members = ctx
        .members_of(&swarm.namespace().unwrap_or_default(), &swarm.name_any())
        .await?;
    for member in members
        .iter()
        .filter(|m| m.metadata.deletion_timestamp.is_none())
    {
        delete(members_api, &member.name_any(), &DeleteParams::background()).await?;
    }
    if !members.is_empty() {
        // Each member's removal is an event on an owned object and brings the Swarm back sooner.
        return Ok(Action::requeue(WAIT_FOR_MEMBERS));
    }
    remove_finalizer(swarms_api, swarm, SWARM_FINALIZER).await?;
    Ok(Action::await_change())
}

/// A Swarm whose weights live on a claim that does not exist cannot start any member.
async fn check_model_source(swarm: &Swarm, ctx: &Context) -> Result<Option<SpecProblem>> {
    let Some(pvc) = &swarm.spec.model.source.pvc else {
        return Ok(None);
    };
    let namespace = swarm.namespace().unwrap_or_default();
    let found = Api::<PersistentVolumeClaim>::namespaced(ctx.client.clone(), &namespace)
        .get_opt(&pvc.claim_name)
        .await
        .context(|| format!("look up model claim {namespace}/{}", pvc.claim_name))?;
    Ok(found.is_none().then(|| SpecProblem {
        reason: "ModelSourceNotFound",
        message: format!(
            "model.source.pvc.claimName {namespace}/{} does not exist; members are not started until it does",
            pvc.claim_name
        ),
    }))
}
