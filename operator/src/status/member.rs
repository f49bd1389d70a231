use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::runtime::events::EventType;

use swarm_node_config::download::DownloadLine;

use crate::api::{MemberPhase, SwarmMember, SwarmMemberStatus, conditions};
use crate::build::FETCH_MODEL_CONTAINER;
use crate::status::{PlannedEvent, condition};

/// Periodic re-check of a member even without changes.
const RESYNC: Duration = Duration::from_secs(300);
/// How soon to look again while a pod is terminating or a previous incarnation is being collected.
const WAIT_FOR_REMOVAL: Duration = Duration::from_secs(5);
/// How often a model download's progress is read while it runs: one log read per downloading
/// member per interval.
const DOWNLOAD_POLL: Duration = Duration::from_secs(10);

/// Delay before replacing a pod after `streak` consecutive failures: 10 s doubling to 5 min.
pub fn replacement_backoff(streak: i32) -> Duration {
    if streak <= 0 {
        return Duration::ZERO;
    }
    let doublings = u32::try_from(streak - 1).unwrap_or(0).min(5);
    Duration::from_secs(10 << doublings).min(Duration::from_secs(300))
}

/// What the member controller found of a member, besides the member itself.
#[derive(Clone, Debug)]
pub struct MemberObservation<'a> {
    /// The libp2p PeerId of its identity Secret's key.
    pub peer_id: String,
    /// The ledger account of the same key.
    pub address: String,
    pub pod: PodSeen<'a>,
    /// The last progress line of the pod's model download, read while it runs.
    pub download: Option<DownloadLine>,
}

/// The pod by the member's name, as observed.
#[derive(Clone, Copy, Debug)]
pub enum PodSeen<'a> {
    Absent,
    /// Going away, or not this member's (an earlier incarnation's, still collected): a new pod
    /// cannot be created yet.
    Leaving {
        ours: bool,
    },
    /// This member's pod; `current` when built from the Swarm's present member template.
    Present {
        pod: &'a Pod,
        current: bool,
    },
}

/// What the member's pod needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PodChange {
    Keep,
    Create,
    /// Delete it: failed, or outdated. Its replacement follows once it is gone.
    Delete,
}

/// The member controller's decisions for one pass: fetch, then this, then apply, then the status.
#[derive(Clone, Debug, PartialEq)]
pub struct MemberPlan {
    pub pod: PodChange,
    /// Published after the pod change, in order.
    pub events: Vec<PlannedEvent>,
    /// The status to write (all but the ledger controller's fields); `None` when a pod is created:
    /// its watch event brings the member back to show it, one write instead of two.
    pub status: Option<SwarmMemberStatus>,
    pub requeue: Duration,
}

/// The member's status and what its pod needs, from its prior status and what was observed.
pub fn member_status(member: &SwarmMember, seen: &MemberObservation, now: Timestamp) -> MemberPlan {
    let name = member.metadata.name.clone().unwrap_or_default();
    let prior = member.status.clone().unwrap_or_default();
    let mut status = SwarmMemberStatus {
        peer_id: Some(seen.peer_id.clone()),
        address: Some(seen.address.clone()),
        observed_generation: member.metadata.generation,
        ..prior.clone()
    };
    let mut plan = MemberPlan {
        pod: PodChange::Keep,
        events: Vec::new(),
        status: None,
        requeue: RESYNC,
    };
    let event = PlannedEvent::new;
    let mut unschedulable = false;
    match seen.pod {
        PodSeen::Leaving { ours } => {
            // What that pod shows is not this member's state: a previous incarnation's pod may
            // still run and be ready, and must neither make this member Running nor end its
            // failure streak. Our own pod deleted by someone else keeps `status.pod`, so that its
            // disappearance counts as a failure; one we deleted ourselves was already cleared.
            if !ours {
                status.pod = None;
            }
            status.phase = Some(MemberPhase::Pending);
            status.node = None;
            status.message = Some("waiting for the previous pod to be removed".into());
            plan.requeue = WAIT_FOR_REMOVAL;
        }
        PodSeen::Present { pod, current } => {
            let observed = show(&mut status, &observe_pod(Some(pod)));
            unschedulable = observed.unschedulable;
            status.pod = Some(name.clone());
            if observed.model == Some(ModelDownload::Running) {
                if let Some(line) = &seen.download
                    && observed.phase == MemberPhase::Starting
                {
                    status.message = Some(format!("downloading the model: {}", line.describe()));
                }
                plan.requeue = DOWNLOAD_POLL;
            }
            match &observed.model {
                Some(ModelDownload::Done { commit })
                    if prior.model_commit.as_ref() != Some(commit) =>
                {
                    status.model_commit = Some(commit.clone());
                    plan.events.push(event(
                        EventType::Normal,
                        "ModelDownloaded",
                        format!("the model is at commit {commit}"),
                    ));
                }
                // Once per failure: the message changes when the reason does.
                Some(ModelDownload::Failed { reason }) if prior.message != status.message => {
                    plan.events.push(event(
                        EventType::Warning,
                        "ModelDownloadFailed",
                        reason.clone(),
                    ));
                }
                _ => {}
            }
            if observed.failed {
                plan.pod = PodChange::Delete;
                status.pod = None;
                record_failure(&mut status, now);
                plan.requeue = replacement_backoff(status.failure_streak);
                plan.events.push(event(
                    EventType::Warning,
                    "PodFailed",
                    format!(
                        "{}; replacing it in {}s",
                        observed.message.unwrap_or_default(),
                        plan.requeue.as_secs()
                    ),
                ));
            } else if !current {
                plan.pod = PodChange::Delete;
                status.pod = None;
                plan.requeue = WAIT_FOR_REMOVAL;
                plan.events.push(event(
                    EventType::Normal,
                    "PodOutdated",
                    "the Swarm's member template changed; replacing the pod".into(),
                ));
            }
        }
        PodSeen::Absent => {
            if status.pod.is_some() {
                // The pod we created disappeared (deleted, evicted, its node removed).
                record_failure(&mut status, now);
                status.pod = None;
            }
            let wait = remaining_backoff(&status, now);
            if wait.is_zero() {
                // Only after a backoff has passed, or before any pod: a pod that vanished just
                // now starts a backoff. Nothing but the new pod would be recorded; its watch
                // event brings the member back at once to show it.
                plan.pod = PodChange::Create;
                plan.events.push(event(
                    EventType::Normal,
                    "PodCreated",
                    format!("created pod {name}"),
                ));
                plan.requeue = WAIT_FOR_REMOVAL;
                return plan;
            } else {
                status.phase = Some(MemberPhase::Failed);
                status.message = Some(format!(
                    "pod gone after {} failures in a row; replacing it in {}s",
                    status.failure_streak,
                    wait.as_secs()
                ));
                plan.requeue = wait;
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
    plan.status = Some(status);
    plan
}

/// Copies what the pod shows into the member's status; a ready node ends a failure streak.
fn show(status: &mut SwarmMemberStatus, observed: &PodObservation) -> PodObservation {
    if observed.phase == MemberPhase::Running {
        status.failure_streak = 0;
    }
    status.phase = Some(observed.phase);
    status.node = observed.node.clone();
    status.message = observed.message.clone();
    observed.clone()
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

/// Whether a member is ready and, if not, why: the reason of its `Ready` condition, which the
/// Swarm's status reads back (the message is for people; this is for code).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Readiness {
    NodeReady,
    /// No pod yet, or one not scheduled yet, or an earlier pod still going away.
    PodPending,
    /// The scheduler cannot place the pod; the Swarm is degraded until it can.
    Unschedulable,
    /// Scheduled; init containers, the image or the node itself still starting.
    NodeStarting,
    /// The pod failed or vanished; a replacement waits for its backoff.
    PodFailed,
}

impl Readiness {
    const ALL: [Readiness; 5] = [
        Readiness::NodeReady,
        Readiness::PodPending,
        Readiness::Unschedulable,
        Readiness::NodeStarting,
        Readiness::PodFailed,
    ];

    /// From the phase the member's status shows and whether the scheduler refused its pod.
    pub fn of(phase: Option<MemberPhase>, unschedulable: bool) -> Self {
        match phase {
            Some(MemberPhase::Running) => Readiness::NodeReady,
            Some(MemberPhase::Failed) => Readiness::PodFailed,
            Some(MemberPhase::Starting) => Readiness::NodeStarting,
            Some(MemberPhase::Pending) | None if unschedulable => Readiness::Unschedulable,
            Some(MemberPhase::Pending) | None => Readiness::PodPending,
        }
    }

    /// The `Ready` condition's reason.
    pub fn reason(self) -> &'static str {
        match self {
            Readiness::NodeReady => "NodeReady",
            Readiness::PodPending => "PodPending",
            Readiness::Unschedulable => "Unschedulable",
            Readiness::NodeStarting => "NodeStarting",
            Readiness::PodFailed => "PodFailed",
        }
    }

    /// The member's `Ready` condition saying this, keeping the transition time of `previous`'s.
    pub fn condition(
        self,
        previous: &[Condition],
        message: String,
        generation: Option<i64>,
        now: Timestamp,
    ) -> Condition {
        condition(
            previous,
            conditions::READY,
            self == Readiness::NodeReady,
            self.reason(),
            message,
            generation,
            now,
        )
    }

    /// What `member`'s `Ready` condition says, if it has one this operator wrote.
    pub fn of_member(member: &SwarmMember) -> Option<Self> {
        let ready = member
            .status
            .as_ref()?
            .conditions
            .iter()
            .find(|c| c.type_ == conditions::READY)?;
        Self::ALL.into_iter().find(|r| r.reason() == ready.reason)
    }
}

/// What the operator saw of a member's pod.
#[derive(Clone, Debug, PartialEq)]
pub struct PodObservation {
    pub phase: MemberPhase,
    pub node: Option<String>,
    /// Why the member is not running, in the words of the scheduler or kubelet where they gave any.
    pub message: Option<String>,
    /// The pod is gone for good (Failed/Succeeded) and must be replaced.
    pub failed: bool,
    /// The scheduler cannot place the pod; the swarm is degraded until it can.
    pub unschedulable: bool,
    /// The hub model's download, when the pod has one.
    pub model: Option<ModelDownload>,
}

/// How the pod's `fetch-model` init container is doing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelDownload {
    Running,
    /// It ended with the commit the revision resolved to.
    Done {
        commit: String,
    },
    /// Its last attempt failed, for this reason; the kubelet retries it.
    Failed {
        reason: String,
    },
}

/// Whether the pod's model download runs now, so that its progress is worth reading.
pub fn downloading(pod: &Pod) -> bool {
    observe_download(
        pod.status
            .as_ref()
            .and_then(|s| s.init_container_statuses.as_deref())
            .unwrap_or_default(),
    ) == Some(ModelDownload::Running)
}

/// What the `fetch-model` init container's state says.
fn observe_download(statuses: &[ContainerStatus]) -> Option<ModelDownload> {
    let status = statuses.iter().find(|s| s.name == FETCH_MODEL_CONTAINER)?;
    let state = status.state.clone().unwrap_or_default();
    if let Some(done) = &state.terminated
        && done.exit_code == 0
    {
        // Only `swarm-node fetch-model` writes this message; without it the commit is unknown.
        let message = done.message.as_deref().unwrap_or_default().trim();
        let commit = message.strip_prefix("commit ")?;
        return Some(ModelDownload::Done {
            commit: commit.to_owned(),
        });
    }
    if state.running.is_some() {
        return Some(ModelDownload::Running);
    }
    let failed = state
        .terminated
        .or_else(|| status.last_state.clone().and_then(|s| s.terminated))
        .filter(|t| t.exit_code != 0)?;
    let reason = failed
        .message
        .map(|m| m.trim().to_owned())
        .filter(|m| !m.is_empty())
        .or(failed.reason)
        .unwrap_or_else(|| format!("exit code {}", failed.exit_code));
    Some(ModelDownload::Failed { reason })
}

pub fn observe_pod(pod: Option<&Pod>) -> PodObservation {
    let Some(pod) = pod else {
        return PodObservation {
            phase: MemberPhase::Pending,
            node: None,
            message: Some("pod not created yet".into()),
            failed: false,
            unschedulable: false,
            model: None,
        };
    };
    let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
    let status = pod.status.clone().unwrap_or_default();
    let conditions = status.conditions.unwrap_or_default();
    let condition = |type_: &str| conditions.iter().find(|c| c.type_ == type_);
    let model = observe_download(
        status
            .init_container_statuses
            .as_deref()
            .unwrap_or_default(),
    );
    let download_message = match &model {
        Some(ModelDownload::Running) => Some(format!(
            "downloading the model (its progress: kubectl logs {} -c {FETCH_MODEL_CONTAINER})",
            pod.metadata.name.as_deref().unwrap_or_default()
        )),
        Some(ModelDownload::Failed { reason }) => {
            Some(format!("model download failed, retrying: {reason}"))
        }
        Some(ModelDownload::Done { .. }) | None => None,
    };
    let observation = |phase, message: Option<String>| PodObservation {
        phase,
        node: node.clone(),
        message,
        failed: false,
        unschedulable: false,
        model: model.clone(),
    };

    if pod.metadata.deletion_timestamp.is_some() {
        return observation(MemberPhase::Pending, Some("pod is terminating".into()));
    }
    match status.phase.as_deref() {
        Some("Failed" | "Succeeded") => {
            let why = [status.reason, status.message]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(": ");
            let message = if why.is_empty() {
                "pod exited".to_owned()
            } else {
                format!("pod failed: {why}")
            };
            PodObservation {
                failed: true,
                ..observation(MemberPhase::Failed, Some(message))
            }
        }
        Some("Running") if condition("Ready").is_some_and(|c| c.status == "True") => {
            observation(MemberPhase::Running, None)
        }
        Some("Unknown") => observation(
            MemberPhase::Pending,
            Some("pod state unknown: its node stopped reporting".into()),
        ),
        _ if node.is_none() => match condition("PodScheduled") {
            Some(c) if c.status == "False" && c.reason.as_deref() == Some("Unschedulable") => {
                PodObservation {
                    unschedulable: true,
                    ..observation(
                        MemberPhase::Pending,
                        Some(format!(
                            "unschedulable: {}",
                            c.message.as_deref().unwrap_or("no node fits the pod")
                        )),
                    )
                }
            }
            _ => observation(
                MemberPhase::Pending,
                Some("waiting for the scheduler".into()),
            ),
        },
        _ if download_message.is_some() => {
            observation(MemberPhase::Starting, download_message.clone())
        }
        _ => {
            // An init container that cannot start (its token Secret missing, its image not
            // pulled) holds the node container in PodInitializing: its reason is the one to show.
            let init_containers = status.init_container_statuses.unwrap_or_default();
            let waiting = init_containers
                .into_iter()
                .chain(status.container_statuses.unwrap_or_default())
                .filter_map(|c| c.state.and_then(|s| s.waiting))
                .find(|w| w.reason.as_deref() != Some("PodInitializing"));
            let message = match waiting {
                Some(w) => match (w.reason, w.message) {
                    (Some(reason), Some(message)) => format!("{reason}: {message}"),
                    (Some(reason), None) => reason,
                    (None, Some(message)) => message,
                    (None, None) => "container waiting".into(),
                },
                None => "waiting for the node to report ready".into(),
            };
            observation(MemberPhase::Starting, Some(message))
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateWaiting, ContainerStatus, PodCondition, PodSpec, PodStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    use super::*;

    fn pod(
        node: Option<&str>,
        phase: &str,
        conditions: &[(&str, &str, Option<&str>, Option<&str>)],
    ) -> Pod {
        Pod {
            metadata: ObjectMeta::default(),
            spec: Some(PodSpec {
                node_name: node.map(str::to_owned),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                conditions: Some(
                    conditions
                        .iter()
                        .map(|(type_, status, reason, message)| PodCondition {
                            type_: (*type_).into(),
                            status: (*status).into(),
                            reason: reason.map(str::to_owned),
                            message: message.map(str::to_owned),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
        }
    }

    fn waiting(mut pod: Pod, reason: &str, message: &str) -> Pod {
        pod.status.as_mut().unwrap().container_statuses = Some(vec![ContainerStatus {
            name: "node".into(),
            state: Some(ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(reason.into()),
                    message: Some(message.into()),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }]);
        pod
    }

    fn fetch_model(mut pod: Pod, state: ContainerState, last: Option<ContainerState>) -> Pod {
        pod.metadata.name = Some("demo-0".into());
        pod.status.as_mut().unwrap().init_container_statuses = Some(vec![ContainerStatus {
            name: FETCH_MODEL_CONTAINER.into(),
            state: Some(state),
            last_state: last,
            ..Default::default()
        }]);
        pod
    }

    fn terminated(exit_code: i32, message: &str) -> ContainerState {
        ContainerState {
            terminated: Some(k8s_openapi::api::core::v1::ContainerStateTerminated {
                exit_code,
                message: Some(message.into()),
                reason: Some(if exit_code == 0 { "Completed" } else { "Error" }.into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_model_download_shows_while_it_runs_fails_and_when_it_is_done() {
        let running = ContainerState {
            running: Some(Default::default()),
            ..Default::default()
        };
        let seen = observe_pod(Some(&fetch_model(
            pod(Some("gpu-0"), "Pending", &[]),
            running,
            None,
        )));
        assert_eq!(seen.phase, MemberPhase::Starting);
        assert_eq!(seen.model, Some(ModelDownload::Running));
        assert!(
            seen.message
                .unwrap()
                .contains("kubectl logs demo-0 -c fetch-model"),
        );

        let reason = "Qwen/Qwen2.5-0.5B at revision main is not on the hub at https://huggingface.co (HTTP 404): check the id and the revision";
        let backing_off = ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some("CrashLoopBackOff".into()),
                message: None,
            }),
            ..Default::default()
        };
        let seen = observe_pod(Some(&fetch_model(
            pod(Some("gpu-0"), "Pending", &[]),
            backing_off,
            Some(terminated(1, reason)),
        )));
        assert_eq!(seen.phase, MemberPhase::Starting);
        assert_eq!(
            seen.model,
            Some(ModelDownload::Failed {
                reason: reason.into()
            })
        );
        assert_eq!(
            seen.message.unwrap(),
            format!("model download failed, retrying: {reason}")
        );
        assert!(
            !seen.failed,
            "the kubelet retries the download; the pod stays"
        );

        let commit = "0123456789abcdef0123456789abcdef01234567";
        let seen = observe_pod(Some(&fetch_model(
            pod(Some("gpu-0"), "Running", &[("Ready", "True", None, None)]),
            terminated(0, &format!("commit {commit}")),
            None,
        )));
        assert_eq!(seen.phase, MemberPhase::Running);
        assert_eq!(
            seen.model,
            Some(ModelDownload::Done {
                commit: commit.into()
            })
        );
        assert_eq!(
            observe_pod(Some(&pod(Some("gpu-0"), "Running", &[]))).model,
            None
        );
    }

    #[test]
    fn an_init_container_that_cannot_start_names_its_reason() {
        let message = "secret \"hf-token\" not found";
        let waiting_init = ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some("CreateContainerConfigError".into()),
                message: Some(message.into()),
            }),
            ..Default::default()
        };
        let pod = waiting(
            fetch_model(pod(Some("gpu-0"), "Pending", &[]), waiting_init, None),
            "PodInitializing",
            "",
        );
        let seen = observe_pod(Some(&pod));
        assert_eq!(seen.phase, MemberPhase::Starting);
        assert_eq!(
            seen.message.unwrap(),
            format!("CreateContainerConfigError: {message}")
        );
        // A download that ended without fetch-model's message has no known commit.
        let quiet = fetch_model(pod.clone(), terminated(0, ""), None);
        assert_eq!(observe_pod(Some(&quiet)).model, None);
    }

    #[test]
    fn missing_pod_is_pending() {
        let seen = observe_pod(None);
        assert_eq!(seen.phase, MemberPhase::Pending);
        assert!(!seen.failed);
    }

    #[test]
    fn readiness_names_why_a_member_is_not_ready_and_reads_back_from_its_condition() {
        assert_eq!(
            Readiness::of(Some(MemberPhase::Pending), true),
            Readiness::Unschedulable
        );
        assert_eq!(Readiness::of(None, false), Readiness::PodPending);
        assert_eq!(
            Readiness::of(Some(MemberPhase::Running), false),
            Readiness::NodeReady
        );
        assert_eq!(
            Readiness::of(Some(MemberPhase::Failed), true),
            Readiness::PodFailed
        );
        for readiness in Readiness::ALL {
            let member = SwarmMember {
                status: Some(crate::api::SwarmMemberStatus {
                    conditions: vec![readiness.condition(
                        &[],
                        String::new(),
                        None,
                        Timestamp::UNIX_EPOCH,
                    )],
                    ..Default::default()
                }),
                ..crate::build::fixtures::member(&crate::build::fixtures::swarm(1), 0)
            };
            assert_eq!(Readiness::of_member(&member), Some(readiness));
        }
    }

    #[test]
    fn unschedulable_pod_carries_the_scheduler_reason() {
        let message = "0/6 nodes are available: 4 Insufficient nvidia.com/gpu, 2 node(s) didn't match Pod's node affinity/selector.";
        let seen = observe_pod(Some(&pod(
            None,
            "Pending",
            &[(
                "PodScheduled",
                "False",
                Some("Unschedulable"),
                Some(message),
            )],
        )));
        assert_eq!(seen.phase, MemberPhase::Pending);
        assert!(seen.unschedulable);
        assert_eq!(seen.message.unwrap(), format!("unschedulable: {message}"));
    }

    #[test]
    fn scheduled_but_pending_pod_is_not_ready() {
        let seen = observe_pod(Some(&waiting(
            pod(
                Some("gpu-0"),
                "Pending",
                &[("PodScheduled", "True", None, None)],
            ),
            "ImagePullBackOff",
            "Back-off pulling image \"swarm-node:missing\"",
        )));
        assert_eq!(seen.phase, MemberPhase::Starting);
        assert_eq!(seen.node.as_deref(), Some("gpu-0"));
        assert_eq!(
            seen.message.unwrap(),
            "ImagePullBackOff: Back-off pulling image \"swarm-node:missing\""
        );
    }

    #[test]
    fn crash_looping_container_is_reported() {
        let seen = observe_pod(Some(&waiting(
            pod(
                Some("gpu-1"),
                "Running",
                &[("Ready", "False", Some("ContainersNotReady"), None)],
            ),
            "CrashLoopBackOff",
            "back-off 40s restarting failed container=node",
        )));
        assert_eq!(seen.phase, MemberPhase::Starting);
        assert!(seen.message.unwrap().starts_with("CrashLoopBackOff"));
    }

    #[test]
    fn running_and_ready_pod_is_running() {
        let seen = observe_pod(Some(&pod(
            Some("gpu-1"),
            "Running",
            &[("Ready", "True", None, None)],
        )));
        assert_eq!(seen.phase, MemberPhase::Running);
        assert_eq!(seen.message, None);
    }

    #[test]
    fn failed_pod_must_be_replaced() {
        let mut failed = pod(Some("gpu-1"), "Failed", &[]);
        let status = failed.status.as_mut().unwrap();
        status.reason = Some("Evicted".into());
        status.message = Some("The node was low on resource: memory.".into());
        let seen = observe_pod(Some(&failed));
        assert!(seen.failed);
        assert_eq!(seen.phase, MemberPhase::Failed);
        assert_eq!(
            seen.message.unwrap(),
            "pod failed: Evicted: The node was low on resource: memory."
        );
    }

    #[test]
    fn terminating_pod_is_not_ready() {
        let mut terminating = pod(Some("gpu-1"), "Running", &[("Ready", "True", None, None)]);
        terminating.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
        assert_eq!(observe_pod(Some(&terminating)).phase, MemberPhase::Pending);
    }

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

    fn member_with(status: Option<SwarmMemberStatus>) -> SwarmMember {
        let mut member = crate::build::build_member(&crate::build::fixtures::swarm(1), 0);
        member.metadata.generation = Some(1);
        member.status = status;
        member
    }

    fn seen(pod: PodSeen<'_>) -> MemberObservation<'_> {
        MemberObservation {
            peer_id: "12D3KooWExample".into(),
            address: "0x2c7536e3605d9c16a7a3d7b1898e529396a65c23".into(),
            pod,
            download: None,
        }
    }

    #[test]
    fn a_first_pod_is_created_without_a_status_write() {
        let plan = member_status(
            &member_with(None),
            &seen(PodSeen::Absent),
            Timestamp::UNIX_EPOCH,
        );
        assert_eq!(plan.pod, PodChange::Create);
        assert_eq!(plan.status, None, "the new pod's watch event shows it");
        assert_eq!(plan.events[0].reason, "PodCreated");
        assert_eq!(plan.requeue, WAIT_FOR_REMOVAL);
    }

    #[test]
    fn a_vanished_pod_counts_as_a_failure_and_is_replaced_after_its_backoff() {
        let now = Timestamp::from_second(1_000).unwrap();
        let running = SwarmMemberStatus {
            pod: Some("demo-0".into()),
            phase: Some(MemberPhase::Running),
            ..Default::default()
        };
        let plan = member_status(&member_with(Some(running)), &seen(PodSeen::Absent), now);
        assert_eq!(plan.pod, PodChange::Keep);
        assert_eq!(plan.requeue, Duration::from_secs(10));
        let status = plan.status.unwrap();
        assert_eq!((status.restarts, status.failure_streak), (1, 1));
        assert_eq!(
            (status.pod, status.phase),
            (None, Some(MemberPhase::Failed))
        );
        assert_eq!(status.conditions[0].reason, "PodFailed");

        // Back 4 s later: 6 s left. Then, the backoff over, a new pod.
        let waiting = member_with(Some(SwarmMemberStatus {
            last_failure_time: Some(Time(now)),
            failure_streak: 1,
            ..Default::default()
        }));
        let plan = member_status(
            &waiting,
            &seen(PodSeen::Absent),
            Timestamp::from_second(1_004).unwrap(),
        );
        assert_eq!(
            (plan.pod, plan.requeue),
            (PodChange::Keep, Duration::from_secs(6))
        );
        let plan = member_status(
            &waiting,
            &seen(PodSeen::Absent),
            Timestamp::from_second(1_010).unwrap(),
        );
        assert_eq!((plan.pod, plan.status), (PodChange::Create, None));
    }

    #[test]
    fn a_failed_pod_is_deleted_and_an_outdated_one_replaced() {
        let failed = pod(Some("gpu-0"), "Failed", &[]);
        let plan = member_status(
            &member_with(None),
            &seen(PodSeen::Present {
                pod: &failed,
                current: true,
            }),
            Timestamp::UNIX_EPOCH,
        );
        assert_eq!(plan.pod, PodChange::Delete);
        assert_eq!(plan.requeue, Duration::from_secs(10));
        assert_eq!(plan.events[0].reason, "PodFailed");
        assert_eq!(plan.status.unwrap().pod, None);

        let ready = pod(Some("gpu-0"), "Running", &[("Ready", "True", None, None)]);
        let plan = member_status(
            &member_with(None),
            &seen(PodSeen::Present {
                pod: &ready,
                current: false,
            }),
            Timestamp::UNIX_EPOCH,
        );
        assert_eq!(plan.pod, PodChange::Delete);
        assert_eq!(plan.events[0].reason, "PodOutdated");
        assert_eq!(plan.requeue, WAIT_FOR_REMOVAL);
    }

    #[test]
    fn a_ready_pod_ends_the_failure_streak_and_a_leaving_one_shows_nothing_of_its_state() {
        let streak = SwarmMemberStatus {
            failure_streak: 3,
            pod: Some("demo-0".into()),
            ..Default::default()
        };
        let ready = pod(Some("gpu-0"), "Running", &[("Ready", "True", None, None)]);
        let plan = member_status(
            &member_with(Some(streak.clone())),
            &seen(PodSeen::Present {
                pod: &ready,
                current: true,
            }),
            Timestamp::UNIX_EPOCH,
        );
        let status = plan.status.unwrap();
        assert_eq!(
            (status.phase, status.failure_streak),
            (Some(MemberPhase::Running), 0)
        );
        assert_eq!(status.node.as_deref(), Some("gpu-0"));
        assert_eq!(status.peer_id.as_deref(), Some("12D3KooWExample"));
        assert_eq!(status.conditions[0].reason, "NodeReady");
        assert!(plan.events.is_empty());

        // An earlier incarnation's pod, still running: not this member's state.
        let plan = member_status(
            &member_with(Some(streak)),
            &seen(PodSeen::Leaving { ours: false }),
            Timestamp::UNIX_EPOCH,
        );
        let status = plan.status.unwrap();
        assert_eq!(
            (status.phase, status.failure_streak),
            (Some(MemberPhase::Pending), 3)
        );
        assert_eq!(status.pod, None);
        assert_eq!(plan.requeue, WAIT_FOR_REMOVAL);
    }

    #[test]
    fn a_running_download_shows_its_progress_and_is_read_again_soon() {
        let running = ContainerState {
            running: Some(Default::default()),
            ..Default::default()
        };
        let pod = fetch_model(pod(Some("gpu-0"), "Pending", &[]), running, None);
        assert!(downloading(&pod));
        let mut observation = seen(PodSeen::Present {
            pod: &pod,
            current: true,
        });
        observation.download = Some(DownloadLine {
            file: "model.safetensors".into(),
            bytes: 125_829_120,
            total: 283_115_520,
        });
        let plan = member_status(&member_with(None), &observation, Timestamp::UNIX_EPOCH);
        let status = plan.status.unwrap();
        assert_eq!(
            status.message.as_deref(),
            Some("downloading the model: model.safetensors 44 % (120.0 of 270.0 MiB)")
        );
        assert_eq!(status.conditions[0].reason, "NodeStarting");
        assert_eq!(plan.requeue, DOWNLOAD_POLL);

        // No line read (yet, or the log cannot be read): the message says where the log is.
        observation.download = None;
        let plan = member_status(&member_with(None), &observation, Timestamp::UNIX_EPOCH);
        let message = plan.status.unwrap().message.unwrap();
        assert!(
            message.contains("kubectl logs demo-0 -c fetch-model"),
            "{message}"
        );
        assert_eq!(plan.requeue, DOWNLOAD_POLL);

        let ready = pod_ready();
        assert!(!downloading(&ready));
    }

    fn pod_ready() -> Pod {
        pod(Some("gpu-0"), "Running", &[("Ready", "True", None, None)])
    }
}
