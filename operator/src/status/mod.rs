//! Pure status computation: what a pod tells about its member, what the members tell about their
//! Swarm, and what the chain tells about both. Status never claims more than what was observed.

mod ledger;
mod member;
mod swarm;

pub use ledger::{Registration, member_ledger_part, swarm_ledger_part};
pub use member::{
    MemberObservation, MemberPlan, ModelDownload, PodChange, PodObservation, PodSeen, Readiness,
    downloading, member_status, observe_pod,
};
pub use swarm::{SpecProblem, SwarmPlan, plan, swarm_status};

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::runtime::events::EventType;

/// An Event a plan publishes once it is applied.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedEvent {
    pub type_: EventType,
    pub reason: &'static str,
    pub note: String,
}

impl PlannedEvent {
    pub fn new(type_: EventType, reason: &'static str, note: String) -> Self {
        Self {
            type_,
            reason,
            note,
        }
    }
}

/// A condition, keeping the previous transition time when its status did not change.
pub fn condition(
    previous: &[Condition],
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    let status = if status { "True" } else { "False" };
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message,
        last_transition_time,
        observed_generation: generation,
    }
}
