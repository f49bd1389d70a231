//! SwarmMember controller: reads the member's identity; its checkpoint volume, its pod and its status.

use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::DeleteParams;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};
use swarm_identity::MemberKey;
use tracing::info;

use super::identity::read_identity;
use super::{Context, add_finalizer, apply, apply_status, delete, ledger, remove_finalizer};
use crate::api::{MemberPhase, Swarm, SwarmMember, SwarmMemberStatus, conditions};
use crate::build::{TEMPLATE_HASH_ANNOTATION, build_checkpoint_pvc, build_member_pod};
use crate::error::{Error, Result};
use crate::ledger::{
    MEMBER_FINALIZER, Removal, ledger_target, registered_on, registered_status, removal,
    retry_delay,
};
use crate::status::{ModelDownload, PodObservation, Readiness, condition, observe_pod};

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
        return leave_ledger(&ctx, swarm.as_ref(), &member, &members_api).await;
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

    let registered = if swarm.spec.ledger.is_some() {
        // Deregistration on removal depends on this finalizer, so it comes before registration.
        add_finalizer(&members_api, &member, MEMBER_FINALIZER).await?;
        let (registered, wait) = join_ledger(&ctx, &swarm, &member, &key, &mut status, now).await?;
        requeue = requeue.min(wait);
        Some(registered)
    } else {
        None
    };

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
    status.conditions.extend(registered);
    write_status(&ctx, &member, &status).await?;
    Ok(Action::requeue(requeue))
}

/// Writes `status` unless the member shows it already; the progress fields are left to the
/// Swarm's ledger pass.
async fn write_status(
    ctx: &Context,
    member: &SwarmMember,
    status: &SwarmMemberStatus,
) -> Result<()> {
    if member.status.as_ref() != Some(status) {
        apply_status(member, &status.without_progress(), ctx.client.clone()).await?;
    }
    Ok(())
}

/// Funds and registers the member on its Swarm's ledger unless its status shows it registered on the
/// Swarm's contract. Returns the `Registered` condition and when to look again.
async fn join_ledger(
    ctx: &Context,
    swarm: &Swarm,
    member: &SwarmMember,
    key: &MemberKey,
    status: &mut SwarmMemberStatus,
    now: Timestamp,
) -> Result<(Condition, Duration)> {
    let namespace = member.namespace().unwrap_or_default();
    let previous = member
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let contract = ledger_target(swarm).ok().flatten().and_then(|t| t.contract);
    if let Some(contract) = contract
        && registered_on(member, contract)
        && let Some(kept) = previous.iter().find(|c| c.type_ == conditions::REGISTERED)
    {
        return Ok((kept.clone(), RESYNC));
    }
    let outcome = ledger::register_member(ctx, swarm, &namespace, key).await?;
    let generation = member.metadata.generation;
    Ok(match outcome {
        Ok((contract, funding, registration)) => {
            let message = match &registration {
                Some(tx) => format!(
                    "account {} registered as {} on contract {} in transaction {tx}",
                    key.address(),
                    key.peer_id_string(),
                    contract.to_checksum(None)
                ),
                None => format!(
                    "account {} was already registered as {} on contract {}",
                    key.address(),
                    key.peer_id_string(),
                    contract.to_checksum(None)
                ),
            };
            status.ledger = Some(registered_status(
                status.ledger.as_ref(),
                contract,
                funding,
                registration,
            ));
            let registered = condition(
                previous,
                conditions::REGISTERED,
                true,
                "Registered",
                message,
                generation,
                now,
            );
            (registered, RESYNC)
        }
        Err(problem) => {
            let since = previous
                .iter()
                .find(|c| {
                    c.type_ == conditions::REGISTERED
                        && c.status == "False"
                        && c.reason == problem.reason
                })
                .map(|c| c.last_transition_time.0);
            let not_registered = condition(
                previous,
                conditions::REGISTERED,
                false,
                problem.reason,
                problem.message,
                generation,
                now,
            );
            (not_registered, retry_delay(since, now))
        }
    })
}

/// A member being deleted: deregisters its account when it is removed for good, then lets it go.
/// A failed deregistration keeps the finalizer and is retried, so no registration outlives its member
/// unnoticed.
async fn leave_ledger(
    ctx: &Context,
    swarm: Option<&Swarm>,
    member: &SwarmMember,
    members_api: &Api<SwarmMember>,
) -> Result<Action> {
    let namespace = member.namespace().unwrap_or_default();
    let reference = member.object_ref(&());
    let account = member
        .status
        .as_ref()
        .and_then(|s| s.address.as_deref())
        .and_then(|a| a.parse().ok());
    match (removal(swarm, member), swarm, account) {
        (Removal::Deregister, Some(swarm), Some(account)) => {
            match ledger::deregister_member(ctx, swarm, &namespace, account).await?? {
                Some(tx) => {
                    ctx.event(
                        &reference,
                        EventType::Normal,
                        "Deregistered",
                        format!("deregistered account {account} in transaction {tx}"),
                    )
                    .await;
                }
                None => {
                    info!(member = %member.name_any(), %account, "account already deregistered")
                }
            }
        }
        (Removal::KeepRegistered(why), _, Some(account)) => {
            info!(member = %member.name_any(), %account, why, "member leaves, its registration stays");
        }
        // Without an address the member never had an identity, so it was never registered.
        _ => {}
    }
    remove_finalizer(members_api, member, MEMBER_FINALIZER).await?;
    Ok(Action::await_change())
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
