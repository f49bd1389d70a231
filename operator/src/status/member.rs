use k8s_openapi::api::core::v1::Pod;

use crate::api::MemberPhase;

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
}

pub fn observe_pod(pod: Option<&Pod>) -> PodObservation {
    let Some(pod) = pod else {
        return PodObservation {
            phase: MemberPhase::Pending,
            node: None,
            message: Some("pod not created yet".into()),
            failed: false,
            unschedulable: false,
        };
    };
    let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
    let status = pod.status.clone().unwrap_or_default();
    let conditions = status.conditions.unwrap_or_default();
    let condition = |type_: &str| conditions.iter().find(|c| c.type_ == type_);
    let observation = |phase, message: Option<String>| PodObservation {
        phase,
        node: node.clone(),
        message,
        failed: false,
        unschedulable: false,
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
        _ => {
            let waiting = status
                .container_statuses
                .unwrap_or_default()
                .into_iter()
                .find_map(|c| c.state.and_then(|s| s.waiting));
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

    #[test]
    fn missing_pod_is_pending() {
        let seen = observe_pod(None);
        assert_eq!(seen.phase, MemberPhase::Pending);
        assert!(!seen.failed);
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
