//! SwarmMember controller: reads the member's identity; its checkpoint volume, its pod and its
//! status (all but the ledger controller's fields).

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, LogParams};
use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};
use swarm_node_config::download::DownloadLine;
use tracing::{debug, info};

use super::identity::read_identity;
use super::{Context, apply, apply_status, delete, remove_finalizer};
use crate::api::{MemberPhase, SwarmMember, SwarmMemberStatus};
use crate::build::{
    FETCH_MODEL_CONTAINER, TEMPLATE_HASH_ANNOTATION, build_checkpoint_pvc, build_member_pod,
};
use crate::error::{Error, Result};
use crate::ledger::MEMBER_FINALIZER;
use crate::status::{MemberObservation, PodChange, PodSeen, downloading, member_status};

/// How soon to look again while the member waits for its identity Secret.
const WAIT_FOR_IDENTITY: Duration = Duration::from_secs(5);
/// The tail of the download's log read for its last progress line: the container prints one per
/// tenth of each file, so the last few lines hold one.
const DOWNLOAD_LOG_LINES: i64 = 20;
const DOWNLOAD_LOG_BYTES: i64 = 16 * 1024;
const DOWNLOAD_LOG_TIMEOUT: Duration = Duration::from_secs(3);

pub async fn reconcile(ctx: Arc<Context>, member: SwarmMember) -> Result<Action> {
    let namespace = member
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let name = member.name_any();
    let client = ctx.client.clone();
    let members_api: Api<SwarmMember> = Api::namespaced(client.clone(), &namespace);
    if member.metadata.deletion_timestamp.is_some()
        && !member.finalizers().iter().any(|f| f == MEMBER_FINALIZER)
    {
        return Ok(Action::await_change());
    }
    let swarm = ctx.swarm(&namespace, &member.spec.swarm).await?;
    if member.metadata.deletion_timestamp.is_some() {
        // The ledger controller deregisters a leaving member and removes its finalizer; only when
        // the Swarm, and with it the ledger settings, is gone (its own finalizer removed by hand)
        // is the member let go here, registered as it is.
        if swarm.is_none() {
            info!(member = %name, "member leaves without its Swarm; its registration stays");
            remove_finalizer(&members_api, &member, MEMBER_FINALIZER).await?;
        }
        return Ok(Action::await_change());
    }
    let Some(swarm) = swarm else {
        // The garbage collector removes members of a deleted Swarm.
        return Ok(Action::await_change());
    };

    let key = match read_identity(&ctx, &member).await {
        Ok(Some(key)) => key,
        Ok(None) => {
            // The Swarm controller creates it; the Secret's watch brings this member back then.
            // Without a PeerId in the status, the Swarm controller looks for the Secret again.
            let status = SwarmMemberStatus {
                phase: Some(MemberPhase::Pending),
                message: Some(format!(
                    "waiting for its identity Secret {}, which the Swarm controller creates",
                    member.identity_secret_name()
                )),
                peer_id: None,
                address: None,
                observed_generation: member.metadata.generation,
                ..member.status.clone().unwrap_or_default()
            };
            write_status(&ctx, &member, &status).await?;
            return Ok(Action::requeue(WAIT_FOR_IDENTITY));
        }
        Err(error) if error.is_identity_problem() => {
            // No pod runs without this member's own key; the status says why.
            let status = SwarmMemberStatus {
                phase: Some(MemberPhase::Failed),
                message: Some(error.to_string()),
                observed_generation: member.metadata.generation,
                ..member.status.clone().unwrap_or_default()
            };
            write_status(&ctx, &member, &status).await?;
            return Err(error);
        }
        Err(error) => return Err(error),
    };
    if let Some(checkpoints) = &swarm.spec.checkpoints {
        ctx.apply_checkpoint_claim(&build_checkpoint_pvc(&swarm, &member, checkpoints))
            .await?;
    }

    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let desired_pod = build_member_pod(&swarm, &member, &ctx.pod_settings);
    let pod = ctx.pod(&namespace, &name).await?;
    let download = match &pod {
        Some(pod) if owned_by(pod, &member) && downloading(pod) => {
            download_progress(&pods, &name).await
        }
        _ => None,
    };
    let seen = MemberObservation {
        peer_id: key.peer_id_string(),
        address: key.address(),
        pod: match &pod {
            None => PodSeen::Absent,
            Some(pod) if !owned_by(pod, &member) => PodSeen::Leaving { ours: false },
            Some(pod) if pod.metadata.deletion_timestamp.is_some() => {
                PodSeen::Leaving { ours: true }
            }
            Some(pod) => PodSeen::Present {
                pod,
                current: template_hash(pod) == template_hash(&desired_pod),
            },
        },
        download,
    };
    let plan = member_status(&member, &seen, Timestamp::now());
    match plan.pod {
        PodChange::Keep => {}
        PodChange::Create => {
            apply(&pods, &desired_pod).await?;
        }
        PodChange::Delete => delete(&pods, &name, &DeleteParams::default()).await?,
    }
    let reference = member.object_ref(&());
    for event in plan.events {
        ctx.event(&reference, event.type_, event.reason, event.note)
            .await;
    }
    if let Some(status) = &plan.status {
        write_status(&ctx, &member, status).await?;
    }
    Ok(Action::requeue(plan.requeue))
}

/// The last progress line in the log of the pod's running model download. A log that cannot be read
/// in time (the API server proxies it from the kubelet, which may be unreachable) only means no
/// progress to show: the reconcile never waits long for it.
async fn download_progress(pods: &Api<Pod>, name: &str) -> Option<DownloadLine> {
    let params = LogParams {
        container: Some(FETCH_MODEL_CONTAINER.into()),
        tail_lines: Some(DOWNLOAD_LOG_LINES),
        limit_bytes: Some(DOWNLOAD_LOG_BYTES),
        ..LogParams::default()
    };
    match tokio::time::timeout(DOWNLOAD_LOG_TIMEOUT, pods.logs(name, &params)).await {
        Ok(Ok(log)) => DownloadLine::last_in(&log),
        Ok(Err(error)) => {
            debug!(pod = name, %error, "cannot read the model download's log");
            None
        }
        Err(_) => {
            debug!(pod = name, "the model download's log took too long to read");
            None
        }
    }
}

/// Writes the member controller's part of `status` unless the member shows it already; the ledger
/// controller's fields are its own.
async fn write_status(
    ctx: &Context,
    member: &SwarmMember,
    status: &SwarmMemberStatus,
) -> Result<()> {
    let mine = status.without_ledger_part();
    let shown = member
        .status
        .as_ref()
        .map(SwarmMemberStatus::without_ledger_part);
    if shown.as_ref() != Some(&mine) {
        apply_status(member, &mine, ctx.client.clone()).await?;
    }
    Ok(())
}

fn owned_by(pod: &Pod, member: &SwarmMember) -> bool {
    pod.owner_references()
        .iter()
        .any(|o| o.controller == Some(true) && Some(&o.uid) == member.metadata.uid.as_ref())
}

fn template_hash(pod: &Pod) -> Option<&String> {
    pod.metadata
        .annotations
        .as_ref()?
        .get(TEMPLATE_HASH_ANNOTATION)
}
