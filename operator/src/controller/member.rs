//! SwarmMember controller: reads the member's identity; its checkpoint volume, its pod and its
//! status (all but the ledger controller's fields).

use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::DeleteParams;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};
use tracing::info;

use super::identity::read_identity;
use super::{Context, apply, apply_status, delete, remove_finalizer};
use crate::api::{MemberPhase, SwarmMember, SwarmMemberStatus};
use crate::build::{TEMPLATE_HASH_ANNOTATION, build_checkpoint_pvc, build_member_pod};
use crate::error::{Error, Result};
use crate::ledger::MEMBER_FINALIZER;
use crate::status::{ModelDownload, PodObservation, Readiness, observe_pod};

const RESYNC: Duration = Duration::from_secs(300);
/// How soon to look again while a pod is terminating or a previous incarnation is being collected.
const WAIT_FOR_REMOVAL: Duration = Duration::from_secs(5);

/// Delay before replacing a pod after `streak` consecutive failures: 10 s doubling to 5 min.
pub fn replacement_backoff(streak: i32) -> Duration {
    if streak <= 0 {
        return Duration::ZERO;
    }
    let doublings = u32::try_from(streak - 1).unwrap_or(0).min(5);
    Duration::from_secs(10 << doublings).min(Duration::from_secs(300))
}

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
    let reference = member.object_ref(&());

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
            return Ok(Action::requeue(WAIT_FOR_REMOVAL));
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
        apply(
            &Api::<PersistentVolumeClaim>::namespaced(client.clone(), &namespace),
            &build_checkpoint_pvc(&swarm, &member, checkpoints),
        )
        .await?;
    }

    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let desired_pod = build_member_pod(&swarm, &member, &ctx.pod_settings);
    let pod = ctx.pod(&namespace, &name).await?;
    let now = Timestamp::now();
    let prior = member.status.clone().unwrap_or_default();
    let mut status = SwarmMemberStatus {
        peer_id: Some(key.peer_id_string()),
        address: Some(key.address()),
        observed_generation: member.metadata.generation,
        ..prior.clone()
    };
    let mut requeue = RESYNC;
    let mut unschedulable = false;

    match pod {
        Some(pod) if !owned_by(&pod, &member) || pod.metadata.deletion_timestamp.is_some() => {
            // An earlier pod under this name is still going away; a new one cannot be created yet.
            // What that pod shows is not this member's state: a previous incarnation's pod may still
            // run and be ready, and must neither make this member Running nor end its failure streak.
            // Our own pod deleted by someone else keeps `status.pod`, so that its disappearance counts
            // as a failure; one we deleted ourselves was already cleared and counted.
            if !owned_by(&pod, &member) {
                status.pod = None;
            }
            status.phase = Some(MemberPhase::Pending);
            status.node = None;
            status.message = Some("waiting for the previous pod to be removed".into());
            requeue = WAIT_FOR_REMOVAL;
        }
        Some(pod) => {
            let seen = apply_observation(&mut status, &pod);
            unschedulable = seen.unschedulable;
            status.pod = Some(name.clone());
            match &seen.model {
                Some(ModelDownload::Done { commit })
                    if prior.model_commit.as_ref() != Some(commit) =>
                {
                    status.model_commit = Some(commit.clone());
                    ctx.event(
                        &reference,
                        EventType::Normal,
                        "ModelDownloaded",
                        format!("the model is at commit {commit}"),
                    )
                    .await;
                }
                // Once per failure: the message changes when the reason does.
                Some(ModelDownload::Failed { reason }) if prior.message != status.message => {
                    ctx.event(
                        &reference,
                        EventType::Warning,
                        "ModelDownloadFailed",
                        reason.clone(),
                    )
                    .await;
                }
                _ => {}
            }
            if seen.failed {
                delete(&pods, &name, &DeleteParams::default()).await?;
                status.pod = None;
                record_failure(&mut status, now);
                requeue = replacement_backoff(status.failure_streak);
                ctx.event(
                    &reference,
                    EventType::Warning,
                    "PodFailed",
                    format!(
                        "{}; replacing it in {}s",
                        seen.message.unwrap_or_default(),
                        requeue.as_secs()
                    ),
                )
                .await;
            } else if template_hash(&pod) != template_hash(&desired_pod) {
                delete(&pods, &name, &DeleteParams::default()).await?;
                status.pod = None;
                requeue = WAIT_FOR_REMOVAL;
                ctx.event(
                    &reference,
                    EventType::Normal,
                    "PodOutdated",
                    "the Swarm's member template changed; replacing the pod".into(),
                )
                .await;
            }
        }
        None => {
            if status.pod.is_some() {
                // The pod we created disappeared (deleted, evicted, its node removed).
                record_failure(&mut status, now);
                status.pod = None;
            }
            let wait = remaining_backoff(&status, now);
            if wait.is_zero() {
                let created = apply(&pods, &desired_pod).await?;
                ctx.event(
                    &reference,
                    EventType::Normal,
                    "PodCreated",
                    format!("created pod {name}"),
                )
                .await;
                if prior.pod.is_none() {
                    // Nothing to record but the new pod, whose watch event brings this member
                    // back at once to show it: one status write instead of two. (A vanished pod's
                    // failure, just counted above, is written now.)
                    return Ok(Action::requeue(WAIT_FOR_REMOVAL));
                }
                apply_observation(&mut status, &created);
                status.pod = Some(name.clone());
            } else {
                status.phase = Some(MemberPhase::Failed);
                status.message = Some(format!(
                    "pod gone after {} failures in a row; replacing it in {}s",
                    status.failure_streak,
                    wait.as_secs()
                ));
                requeue = wait;
            }
        }
    }

    let readiness = Readiness::of(status.phase, unschedulable);
    status.conditions = vec![
        readiness.condition(
            &prior.conditions,
            status
                .message
                .clone()
                .unwrap_or_else(|| "node is ready".into()),
            member.metadata.generation,
            now,
        ),
    ];
    write_status(&ctx, &member, &status).await?;
    Ok(Action::requeue(requeue))
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

/// Copies what the pod shows into the member's status; a ready node ends a failure streak.
fn apply_observation(status: &mut SwarmMemberStatus, pod: &Pod) -> PodObservation {
    let seen = observe_pod(Some(pod));
    if seen.phase == MemberPhase::Running {
        status.failure_streak = 0;
    }
    status.phase = Some(seen.phase);
    status.node = seen.node.clone();
    status.message = seen.message.clone();
    seen
}

fn record_failure(status: &mut SwarmMemberStatus, now: Timestamp) {
    status.restarts = status.restarts.saturating_add(1);
    status.failure_streak = status.failure_streak.saturating_add(1);
    status.last_failure_time = Some(Time(now));
}

fn remaining_backoff(status: &SwarmMemberStatus, now: Timestamp) -> Duration {
    let Some(Time(failed_at)) = status.last_failure_time else {
        return Duration::ZERO;
    };
    let backoff = SignedDuration::try_from(replacement_backoff(status.failure_streak))
        .unwrap_or(SignedDuration::ZERO);
    let ready_at = failed_at.saturating_add(backoff).unwrap_or(failed_at);
    Duration::try_from(ready_at.duration_since(now)).unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_ten_seconds_to_five_minutes() {
        let secs: Vec<u64> = (0..9).map(|s| replacement_backoff(s).as_secs()).collect();
        assert_eq!(secs, [0, 10, 20, 40, 80, 160, 300, 300, 300]);
    }

    #[test]
    fn remaining_backoff_counts_from_the_last_failure() {
        let failed_at = Timestamp::from_second(1_000).unwrap();
        let status = SwarmMemberStatus {
            failure_streak: 2,
            last_failure_time: Some(Time(failed_at)),
            ..Default::default()
        };
        let later = Timestamp::from_second(1_005).unwrap();
        assert_eq!(remaining_backoff(&status, later), Duration::from_secs(15));
        let much_later = Timestamp::from_second(1_100).unwrap();
        assert_eq!(remaining_backoff(&status, much_later), Duration::ZERO);
    }
}
