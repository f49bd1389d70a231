use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use crate::api::{MemberPhase, SwarmMember, conditions};
use crate::build::FETCH_MODEL_CONTAINER;
use crate::status::condition;

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
}
