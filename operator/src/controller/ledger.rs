//! Ledger controller: all the chain work of a Swarm with `spec.ledger`, so that the Swarm and member
//! reconciles never wait on RPC. Per Swarm, on the Lease holder: the operator's key, the contract
//! (deployed once, at an address that follows from the Swarm's UID), its ownership, its round
//! (advanced at each round boundary); each member's funding and registration, its deregistration
//! when it leaves for good (then its finalizer goes), and the rounds and rewards it recorded. It
//! writes only its own status fields, under [`LEDGER_FIELD_MANAGER`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};
use swarm_ledger::{Address, RecordedReward};
use tracing::info;

use super::chain::{self, ChainAccess, Writer};
use super::identity::read_identity;
use super::{Context, add_finalizer, apply_status_as, remove_finalizer};
use crate::api::{LEDGER_FIELD_MANAGER, Swarm, SwarmMember, conditions};
use crate::error::{Error, Result};
use crate::ledger::{
    LedgerProblem, LedgerState, MEMBER_FINALIZER, Removal, ledger_target, member_funding,
    registered_on, removal, retry_delay, until_next_round,
};
use crate::status::{Registration, member_ledger_part, swarm_ledger_part};

/// Periodic re-check even without changes.
const RESYNC: Duration = Duration::from_secs(300);
/// Shortest wait for the next round, so that very short rounds do not turn into a busy loop.
const MIN_ROUND_WAIT: Duration = Duration::from_secs(1);
/// Registrations one pass sends at most, so that a large scale-up on a slow chain never holds the
/// round back: the rest follow in the next pass, at once.
const REGISTRATIONS_PER_PASS: usize = 8;
/// How soon a replica that no longer holds the Lease looks again (it exits once it knows).
const NOT_LEADER_WAIT: Duration = Duration::from_secs(5);

pub async fn reconcile(ctx: Arc<Context>, swarm: Swarm) -> Result<Action> {
    if swarm.spec.ledger.is_none() {
        return Ok(Action::await_change());
    }
    if !ctx.is_leader() {
        return Ok(Action::requeue(NOT_LEADER_WAIT));
    }
    let namespace = swarm
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let members = ctx.members_of(&namespace, &swarm.name_any()).await?;
    let deleting = swarm.metadata.deletion_timestamp.is_some();
    if deleting {
        ctx.rewards
            .forget(swarm.metadata.uid.as_deref().unwrap_or_default());
    }
    let now = Timestamp::now();
    let mut writer = match chain::writer(&ctx, &swarm, &namespace).await? {
        ChainAccess::Granted(writer) => *writer,
        ChainAccess::Refused(problem) => {
            return report_outage(&ctx, &swarm, &members, problem, now).await;
        }
    };

    // Leaving members first: their finalizers hold their deletion (and the Swarm's) up.
    let mut requeue = RESYNC;
    for member in members.iter().filter(|m| {
        m.metadata.deletion_timestamp.is_some()
            && m.finalizers().iter().any(|f| f == MEMBER_FINALIZER)
    }) {
        requeue = requeue.min(leave(&ctx, &swarm, member, &mut writer, now).await?);
    }
    if deleting {
        // Nothing more is deployed, advanced or registered for a Swarm that goes.
        return Ok(Action::requeue(requeue));
    }

    let state = match writer.state(&swarm, &ctx.rewards, now).await {
        Ok(state) => state,
        Err(problem) => {
            drop(writer);
            return report_outage(&ctx, &swarm, &members, problem, now).await;
        }
    };
    show_swarm(&ctx, &swarm, Ok(&state), now).await?;
    if state.deployed {
        ctx.event(
            &swarm.object_ref(&()),
            EventType::Normal,
            "ContractDeployed",
            format!(
                "deployed the coordinator contract {} through {}",
                state.contract.to_checksum(None),
                chain::endpoint(&swarm)
            ),
        )
        .await;
    }
    requeue = requeue.min(until_next_round(&swarm, now).max(MIN_ROUND_WAIT));
    let mut registrations = 0;
    for member in members
        .iter()
        .filter(|m| m.metadata.deletion_timestamp.is_none())
    {
        let registration = if registered_on(member, state.contract) {
            Registration::AsShown
        } else if registrations < REGISTRATIONS_PER_PASS {
            let Some(registration) = join(&ctx, &swarm, member, &state, &mut writer).await? else {
                continue;
            };
            registrations += 1;
            if let Registration::Failed(problem) = &registration {
                let shown = member.status.as_ref().map(|s| s.conditions.as_slice());
                let since = failing_since(shown, conditions::REGISTERED, problem);
                requeue = requeue.min(retry_delay(since, now));
            }
            registration
        } else {
            requeue = MIN_ROUND_WAIT;
            continue;
        };
        show_member(&ctx, member, &registration, &state.rewards, now).await?;
    }
    Ok(Action::requeue(requeue))
}

/// The chain cannot be used: the Swarm and every member not registered yet say why; the next try
/// waits as long as the problem has lasted (5 s to 5 min).
async fn report_outage(
    ctx: &Context,
    swarm: &Swarm,
    members: &[SwarmMember],
    problem: LedgerProblem,
    now: Timestamp,
) -> Result<Action> {
    show_swarm(ctx, swarm, Err(&problem), now).await?;
    let known = ledger_target(swarm).ok().flatten().and_then(|t| t.contract);
    let unregistered = members.iter().filter(|m| {
        m.metadata.deletion_timestamp.is_none()
            && m.status.as_ref().is_some_and(|s| s.address.is_some())
            && !known.is_some_and(|contract| registered_on(m, contract))
    });
    let failed = Registration::Failed(problem.clone());
    for member in unregistered {
        show_member(ctx, member, &failed, &HashMap::new(), now).await?;
    }
    let shown = swarm.status.as_ref().map(|s| s.conditions.as_slice());
    let since = failing_since(shown, conditions::LEDGER_READY, &problem);
    Ok(Action::requeue(retry_delay(since, now)))
}

/// Writes the Swarm's ledger fields when they changed; a new problem is also an Event.
async fn show_swarm(
    ctx: &Context,
    swarm: &Swarm,
    found: std::result::Result<&LedgerState, &LedgerProblem>,
    now: Timestamp,
) -> Result<()> {
    let shown = swarm
        .status
        .as_ref()
        .map(|s| s.ledger_part())
        .unwrap_or_default();
    let part = swarm_ledger_part(swarm, found, now);
    if part == shown {
        return Ok(());
    }
    apply_status_as(LEDGER_FIELD_MANAGER, swarm, &part, ctx.client.clone()).await?;
    let new_problem = part.conditions.iter().find(|c| {
        c.status == "False"
            && !shown
                .conditions
                .iter()
                .any(|s| s.status == "False" && s.reason == c.reason)
    });
    if let Some(problem) = new_problem {
        ctx.event(
            &swarm.object_ref(&()),
            EventType::Warning,
            &problem.reason,
            problem.message.clone(),
        )
        .await;
    }
    Ok(())
}

/// Writes the member's ledger fields when they changed.
async fn show_member(
    ctx: &Context,
    member: &SwarmMember,
    registration: &Registration,
    rewards: &HashMap<Address, RecordedReward>,
    now: Timestamp,
) -> Result<()> {
    let shown = member
        .status
        .as_ref()
        .map(|s| s.ledger_part())
        .unwrap_or_default();
    let part = member_ledger_part(member, registration, rewards, now);
    if part != shown {
        apply_status_as(LEDGER_FIELD_MANAGER, member, &part, ctx.client.clone()).await?;
    }
    Ok(())
}

/// Funds and registers a member whose identity exists; `None` while it does not (the member's
/// own status says why). The finalizer comes first: deregistration on removal depends on it.
async fn join(
    ctx: &Context,
    swarm: &Swarm,
    member: &SwarmMember,
    state: &LedgerState,
    writer: &mut Writer<'_>,
) -> Result<Option<Registration>> {
    let key = match read_identity(ctx, member).await {
        Ok(Some(key)) => key,
        Ok(None) => return Ok(None),
        Err(error) if error.is_identity_problem() => return Ok(None),
        Err(error) => return Err(error),
    };
    let members_api: Api<SwarmMember> =
        Api::namespaced(ctx.client.clone(), &member.namespace().unwrap_or_default());
    add_finalizer(&members_api, member, MEMBER_FINALIZER).await?;
    let amount = match swarm.spec.ledger.as_ref().map(member_funding) {
        Some(Ok(amount)) => amount,
        Some(Err(problem)) => return Ok(Some(Registration::Failed(problem))),
        None => return Ok(None),
    };
    let account: Address = match key.address().parse() {
        Ok(account) => account,
        Err(_) => {
            return Ok(Some(Registration::Failed(LedgerProblem::new(
                "InvalidAccount",
                format!("{} is not an account address", key.address()),
            ))));
        }
    };
    Ok(Some(
        match writer
            .join(state.contract, account, &key.peer_id_string(), amount)
            .await
        {
            Ok((funding, registration)) => Registration::Done {
                contract: state.contract,
                account: key.address(),
                peer_id: key.peer_id_string(),
                funding,
                registration,
            },
            Err(problem) => Registration::Failed(problem),
        },
    ))
}

/// A member being deleted: deregisters its account when it is removed for good, then lets it go. A
/// failed deregistration keeps the finalizer and is retried, so no registration outlives its member
/// unnoticed. Returns when to look again.
async fn leave(
    ctx: &Context,
    swarm: &Swarm,
    member: &SwarmMember,
    writer: &mut Writer<'_>,
    now: Timestamp,
) -> Result<Duration> {
    let reference = member.object_ref(&());
    let account = member
        .status
        .as_ref()
        .and_then(|s| s.address.as_deref())
        .and_then(|a| a.parse::<Address>().ok());
    // A contract never deployed or recorded holds no registration.
    match (
        removal(Some(swarm), member),
        account,
        writer.known_contract(),
    ) {
        (Removal::Deregister, Some(account), Some(contract)) => {
            match writer.deregister(contract, account).await {
                Ok(Some(tx)) => {
                    ctx.event(
                        &reference,
                        EventType::Normal,
                        "Deregistered",
                        format!("deregistered account {account} in transaction {tx}"),
                    )
                    .await;
                }
                Ok(None) => {
                    info!(member = %member.name_any(), %account, "account already deregistered")
                }
                Err(problem) => {
                    ctx.event(
                        &reference,
                        EventType::Warning,
                        problem.reason,
                        format!(
                            "cannot deregister account {account} through {}: {}; retrying",
                            chain::endpoint(swarm),
                            problem.message
                        ),
                    )
                    .await;
                    return Ok(retry_delay(None, now));
                }
            }
        }
        (Removal::KeepRegistered(why), Some(account), _) => {
            info!(member = %member.name_any(), %account, why, "member leaves, its registration stays");
        }
        // Without an address the member never had an identity, so it was never registered.
        _ => {}
    }
    let members_api: Api<SwarmMember> =
        Api::namespaced(ctx.client.clone(), &member.namespace().unwrap_or_default());
    remove_finalizer(&members_api, member, MEMBER_FINALIZER).await?;
    Ok(RESYNC)
}

/// Since when the condition `type_` has been False for the problem's reason, as the status shows.
fn failing_since(
    shown: Option<&[Condition]>,
    type_: &str,
    problem: &LedgerProblem,
) -> Option<Timestamp> {
    shown?
        .iter()
        .find(|c| c.type_ == type_ && c.status == "False" && c.reason == problem.reason)
        .map(|c| c.last_transition_time.0)
}
