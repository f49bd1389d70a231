use std::collections::BTreeSet;
use std::time::Duration;

use jiff::Timestamp;
use kube::runtime::events::EventType;

use super::{PlannedEvent, Readiness, condition};
use crate::api::{MemberPhase, Swarm, SwarmMember, SwarmPhase, SwarmStatus, conditions, labels};

/// Why a Swarm that passed admission cannot be realised.
#[derive(Clone, Debug, PartialEq)]
pub struct SpecProblem {
    pub reason: &'static str,
    pub message: String,
}

/// Periodic re-check of a Swarm even without changes, e.g. for a model volume created after it.
const RESYNC: Duration = Duration::from_secs(300);
/// How soon a Swarm whose spec cannot be realised is looked at again.
const RECHECK_PROBLEM: Duration = Duration::from_secs(30);

/// What the Swarm controller does about the members it observed: fetch, then this, then apply
/// (identities, members, Service, ConfigMap), then the status.
#[derive(Clone, Debug, PartialEq)]
pub struct SwarmPlan {
    /// Members to delete, highest ordinals first: scale-down removes them in that order.
    pub remove: Vec<String>,
    /// Ordinals of the members to create, lowest first; none while a spec problem blocks them.
    pub create: Vec<u32>,
    /// Published once applied, in order.
    pub events: Vec<PlannedEvent>,
    pub requeue: Duration,
}

/// Plans the Swarm's members: those beyond `replicas` go (not those already going), missing
/// ordinals below it come (a member deleted by hand too), unless `problem` blocks every member.
pub fn plan(swarm: &Swarm, members: &[SwarmMember], problem: Option<&SpecProblem>) -> SwarmPlan {
    let desired = swarm.desired_replicas();
    let wanted = |m: &SwarmMember| u32::try_from(m.spec.ordinal).is_ok_and(|o| o < desired);
    let mut surplus: Vec<&SwarmMember> = members
        .iter()
        .filter(|m| m.metadata.deletion_timestamp.is_none() && !wanted(m))
        .collect();
    surplus.sort_by_key(|m| std::cmp::Reverse(m.spec.ordinal));
    let remove: Vec<String> = surplus
        .iter()
        .map(|m| m.metadata.name.clone().unwrap_or_default())
        .collect();
    let present: BTreeSet<u32> = members
        .iter()
        .filter_map(|m| u32::try_from(m.spec.ordinal).ok())
        .collect();
    let create: Vec<u32> = match problem {
        Some(_) => Vec::new(),
        None => (0..desired).filter(|o| !present.contains(o)).collect(),
    };

    let mut events = Vec::new();
    if !create.is_empty() {
        let names: Vec<String> = create.iter().map(|&o| swarm.member_name(o)).collect();
        events.push(PlannedEvent::new(
            EventType::Normal,
            "MembersCreated",
            format!("created {}", names.join(", ")),
        ));
    }
    if !remove.is_empty() {
        events.push(PlannedEvent::new(
            EventType::Normal,
            "MembersRemoved",
            format!("removed {}", remove.join(", ")),
        ));
    }
    let Some(problem) = problem else {
        return SwarmPlan {
            remove,
            create,
            events,
            requeue: RESYNC,
        };
    };
    // Once per problem: a Swarm already degraded for this reason has said so.
    let said = swarm.status.as_ref().is_some_and(|s| {
        s.conditions.iter().any(|c| {
            c.type_ == conditions::DEGRADED && c.status == "True" && c.reason == problem.reason
        })
    });
    if !said {
        events.push(PlannedEvent::new(
            EventType::Warning,
            problem.reason,
            problem.message.clone(),
        ));
    }
    SwarmPlan {
        remove,
        create,
        events,
        requeue: RECHECK_PROBLEM,
    }
}

/// The Swarm's status, computed only from the members that exist and what their status says; all
/// but the ledger controller's fields ([`crate::api::SwarmLedgerPart`]).
pub fn swarm_status(
    swarm: &Swarm,
    members: &[SwarmMember],
    bootstrap_peers: Vec<String>,
    problem: Option<&SpecProblem>,
    now: Timestamp,
) -> SwarmStatus {
    let name = swarm.metadata.name.as_deref().unwrap_or_default();
    let desired = i32::try_from(swarm.desired_replicas()).unwrap_or(i32::MAX);
    let live: Vec<&SwarmMember> = members
        .iter()
        .filter(|m| m.metadata.deletion_timestamp.is_none())
        .collect();
    let existing = i32::try_from(live.len()).unwrap_or(i32::MAX);
    let ready = i32::try_from(live.iter().filter(|m| m.is_ready()).count()).unwrap_or(i32::MAX);
    let previous = swarm
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let generation = swarm.metadata.generation;

    let troubled: Vec<String> = live
        .iter()
        .filter_map(|m| {
            let status = m.status.as_ref()?;
            let stuck = status.phase == Some(MemberPhase::Failed)
                || Readiness::of_member(m) == Some(Readiness::Unschedulable);
            stuck.then(|| {
                format!(
                    "{}: {}",
                    m.metadata.name.as_deref().unwrap_or_default(),
                    status.message.as_deref().unwrap_or("failed")
                )
            })
        })
        .collect();

    let available = ready >= desired;
    let settled = existing == desired && ready == desired;
    let (degraded, degraded_reason, degraded_message) = match problem {
        Some(p) => (true, p.reason, p.message.clone()),
        None if !troubled.is_empty() => (true, "MembersNotRunning", troubled.join("; ")),
        None => (false, "AsExpected", "no problems observed".to_owned()),
    };
    let (progress_reason, progress_message) = if existing < desired {
        (
            "ScalingUp",
            format!("{existing} of {desired} members exist"),
        )
    } else if existing > desired {
        (
            "ScalingDown",
            format!("removing {} members", existing - desired),
        )
    } else if ready < desired {
        (
            "MembersStarting",
            format!("{ready} of {desired} members ready"),
        )
    } else {
        ("Settled", format!("{desired} members ready"))
    };

    let phase = if degraded {
        SwarmPhase::Degraded
    } else if settled {
        SwarmPhase::Running
    } else if ready == 0 {
        SwarmPhase::Pending
    } else {
        SwarmPhase::Progressing
    };

    SwarmStatus {
        replicas: existing,
        ready_replicas: ready,
        selector: labels::swarm_selector(name),
        phase: Some(phase),
        round: live.iter().filter_map(|m| m.status.as_ref()?.round).max(),
        observed_generation: generation,
        conditions: vec![
            condition(
                previous,
                conditions::AVAILABLE,
                available,
                if available {
                    "MembersReady"
                } else {
                    "MembersNotReady"
                },
                format!("{ready} of {desired} members ready"),
                generation,
                now,
            ),
            condition(
                previous,
                conditions::PROGRESSING,
                !settled,
                progress_reason,
                progress_message,
                generation,
                now,
            ),
            condition(
                previous,
                conditions::DEGRADED,
                degraded,
                degraded_reason,
                degraded_message,
                generation,
                now,
            ),
        ],
        bootstrap_peers,
        ledger: None,
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;
    use crate::api::SwarmMemberStatus;
    use crate::build::fixtures;

    fn with_phase(
        mut member: SwarmMember,
        phase: MemberPhase,
        message: Option<&str>,
    ) -> SwarmMember {
        member.status = Some(SwarmMemberStatus {
            phase: Some(phase),
            message: message.map(str::to_owned),
            ..Default::default()
        });
        member
    }

    fn with_readiness(mut member: SwarmMember, readiness: Readiness) -> SwarmMember {
        let status = member.status.get_or_insert_with(Default::default);
        status.conditions =
            vec![readiness.condition(&[], String::new(), None, Timestamp::UNIX_EPOCH)];
        member
    }

    /// The Swarm reads why a member waits from its Ready condition's reason, never from its
    /// message: a message that merely starts like the scheduler's words degrades nothing.
    #[test]
    fn only_the_unschedulable_reason_degrades_a_pending_member() {
        let swarm = fixtures::swarm(1);
        let waiting = with_phase(
            fixtures::member(&swarm, 0),
            MemberPhase::Pending,
            Some("unschedulable: said the message"),
        );
        let pending = with_readiness(waiting.clone(), Readiness::PodPending);
        assert_eq!(
            condition_status(&status_of(&swarm, &[pending]), "Degraded"),
            ("False", "AsExpected")
        );
        let refused = with_readiness(waiting, Readiness::Unschedulable);
        assert_eq!(
            condition_status(&status_of(&swarm, &[refused]), "Degraded"),
            ("True", "MembersNotRunning")
        );
    }

    fn status_of(swarm: &Swarm, members: &[SwarmMember]) -> SwarmStatus {
        swarm_status(swarm, members, vec![], None, Timestamp::UNIX_EPOCH)
    }

    fn condition_status<'a>(status: &'a SwarmStatus, type_: &str) -> (&'a str, &'a str) {
        let c = status.conditions.iter().find(|c| c.type_ == type_).unwrap();
        (c.status.as_str(), c.reason.as_str())
    }

    #[test]
    fn all_members_ready_is_running() {
        let swarm = fixtures::swarm(2);
        let members: Vec<_> = (0..2)
            .map(|i| with_phase(fixtures::member(&swarm, i), MemberPhase::Running, None))
            .collect();
        let status = status_of(&swarm, &members);
        assert_eq!((status.replicas, status.ready_replicas), (2, 2));
        assert_eq!(status.selector, "rlswarm.dev/swarm=demo");
        assert_eq!(status.phase, Some(SwarmPhase::Running));
        assert_eq!(
            condition_status(&status, "Available"),
            ("True", "MembersReady")
        );
        assert_eq!(
            condition_status(&status, "Progressing"),
            ("False", "Settled")
        );
        assert_eq!(
            condition_status(&status, "Degraded"),
            ("False", "AsExpected")
        );
        assert_eq!(status.observed_generation, Some(1));
    }

    #[test]
    fn pending_and_starting_members_are_not_ready() {
        let swarm = fixtures::swarm(3);
        let members = vec![
            with_phase(fixtures::member(&swarm, 0), MemberPhase::Running, None),
            with_phase(
                fixtures::member(&swarm, 1),
                MemberPhase::Pending,
                Some("waiting for the scheduler"),
            ),
            with_phase(
                fixtures::member(&swarm, 2),
                MemberPhase::Starting,
                Some("ContainerCreating"),
            ),
        ];
        let status = status_of(&swarm, &members);
        assert_eq!((status.replicas, status.ready_replicas), (3, 1));
        assert_eq!(status.phase, Some(SwarmPhase::Progressing));
        assert_eq!(
            condition_status(&status, "Available"),
            ("False", "MembersNotReady")
        );
        assert_eq!(
            condition_status(&status, "Progressing"),
            ("True", "MembersStarting")
        );
    }

    #[test]
    fn unschedulable_members_degrade_the_swarm_and_say_why() {
        let swarm = fixtures::swarm(2);
        let members = vec![
            with_phase(fixtures::member(&swarm, 0), MemberPhase::Running, None),
            with_readiness(
                with_phase(
                    fixtures::member(&swarm, 1),
                    MemberPhase::Pending,
                    Some("unschedulable: 0/4 nodes are available: 4 Insufficient nvidia.com/gpu."),
                ),
                Readiness::Unschedulable,
            ),
        ];
        let status = status_of(&swarm, &members);
        assert_eq!(status.phase, Some(SwarmPhase::Degraded));
        let degraded = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Degraded")
            .unwrap();
        assert_eq!(degraded.status, "True");
        assert!(
            degraded
                .message
                .contains("demo-1: unschedulable: 0/4 nodes"),
            "{}",
            degraded.message
        );
    }

    #[test]
    fn missing_members_mean_scaling_up() {
        let swarm = fixtures::swarm(4);
        let members = vec![fixtures::member(&swarm, 0)];
        let status = status_of(&swarm, &members);
        assert_eq!((status.replicas, status.ready_replicas), (1, 0));
        assert_eq!(status.phase, Some(SwarmPhase::Pending));
        assert_eq!(
            condition_status(&status, "Progressing"),
            ("True", "ScalingUp")
        );
    }

    #[test]
    fn members_being_deleted_do_not_count() {
        let swarm = fixtures::swarm(1);
        let mut leaving = with_phase(fixtures::member(&swarm, 1), MemberPhase::Running, None);
        leaving.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
        let members = vec![
            with_phase(fixtures::member(&swarm, 0), MemberPhase::Running, None),
            leaving,
        ];
        let status = status_of(&swarm, &members);
        assert_eq!((status.replicas, status.ready_replicas), (1, 1));
        assert_eq!(status.phase, Some(SwarmPhase::Running));
    }

    #[test]
    fn spec_problem_wins_over_everything() {
        let swarm = fixtures::swarm(1);
        let problem = SpecProblem {
            reason: "ModelSourceNotFound",
            message: "PersistentVolumeClaim research/models does not exist".into(),
        };
        let status = swarm_status(&swarm, &[], vec![], Some(&problem), Timestamp::UNIX_EPOCH);
        assert_eq!(status.phase, Some(SwarmPhase::Degraded));
        assert_eq!(
            condition_status(&status, "Degraded"),
            ("True", "ModelSourceNotFound")
        );
    }

    #[test]
    fn transition_time_is_kept_while_a_condition_holds() {
        let mut swarm = fixtures::swarm(0);
        let first = swarm_status(&swarm, &[], vec![], None, Timestamp::UNIX_EPOCH);
        swarm.status = Some(first.clone());
        let later = Timestamp::from_second(1_000).unwrap();
        let second = swarm_status(&swarm, &[], vec![], None, later);
        assert_eq!(first.conditions, second.conditions);
    }

    fn names(plan: &SwarmPlan) -> Vec<(&str, &str)> {
        plan.events
            .iter()
            .map(|e| (e.reason, e.note.as_str()))
            .collect()
    }

    #[test]
    fn scale_down_removes_the_highest_ordinals_and_scale_up_fills_the_gaps() {
        let swarm = fixtures::swarm(2);
        let mut leaving = fixtures::member(&swarm, 4);
        leaving.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
        let members = vec![
            fixtures::member(&swarm, 0),
            fixtures::member(&swarm, 3),
            fixtures::member(&swarm, 2),
            leaving,
        ];
        let plan = plan(&swarm, &members, None);
        assert_eq!(
            plan.remove,
            ["demo-3", "demo-2"],
            "highest first, not the leaving one"
        );
        assert_eq!(plan.create, [1], "the gap below replicas");
        assert_eq!(
            names(&plan),
            [
                ("MembersCreated", "created demo-1"),
                ("MembersRemoved", "removed demo-3, demo-2")
            ]
        );
        assert_eq!(plan.requeue, RESYNC);
    }

    #[test]
    fn a_spec_problem_creates_no_member_and_is_said_once() {
        let mut swarm = fixtures::swarm(2);
        let problem = SpecProblem {
            reason: "ModelSourceNotFound",
            message: "research/models does not exist".into(),
        };
        let plan = plan(&swarm, &[], Some(&problem));
        assert!(plan.create.is_empty());
        assert_eq!(
            names(&plan),
            [("ModelSourceNotFound", "research/models does not exist")]
        );
        assert_eq!(plan.requeue, RECHECK_PROBLEM);

        swarm.status = Some(swarm_status(
            &swarm,
            &[],
            vec![],
            Some(&problem),
            Timestamp::UNIX_EPOCH,
        ));
        let again = super::plan(&swarm, &[], Some(&problem));
        assert!(again.events.is_empty(), "already degraded for that reason");
    }
}
