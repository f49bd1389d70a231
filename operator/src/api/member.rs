//! The `SwarmMember` custom resource: one training node of a Swarm, with its identity.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

// Printer columns repeat `type_` values, which clippy mistakes for duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "rlswarm.dev",
    version = "v1alpha1",
    kind = "SwarmMember",
    namespaced,
    status = "SwarmMemberStatus",
    shortname = "swm",
    category = "rlswarm",
    derive = "PartialEq",
    doc = "One member of a Swarm: a training node with its own identity; created and owned by the Swarm",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "PeerID", type_ = "string", json_path = ".status.peerId"),
    printcolumn(name = "Node", type_ = "string", json_path = ".status.node"),
    printcolumn(name = "Round", type_ = "integer", json_path = ".status.round"),
    printcolumn(name = "Reward", type_ = "number", json_path = ".status.totalReward"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    cel
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self == oldSelf").message("a SwarmMember's swarm and ordinal are immutable"))]
pub struct SwarmMemberSpec {
    /// Name of the owning Swarm.
    #[schemars(length(max = 63))]
    pub swarm: String,
    /// Position in the Swarm; scale-down removes the highest ordinals first.
    #[x_kube(validation = Rule::new("self >= 0 && self < 1000").message("ordinal must be between 0 and 999"))]
    pub ordinal: i32,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SwarmMemberStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<MemberPhase>,
    /// libp2p PeerId derived from the member's identity key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_id: Option<String>,
    /// Ledger account address derived from the same key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Latest round the member recorded on the Swarm's ledger (empty without a ledger).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reward: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_reward: Option<f64>,
    /// The commit of a hub model the member's download resolved its revision to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_commit: Option<String>,
    /// Pods the operator replaced after they failed or disappeared.
    #[serde(default)]
    pub restarts: i32,
    /// Replacements since the member was last ready; drives the replacement backoff.
    #[serde(default)]
    pub failure_streak: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure_time: Option<Time>,
    /// Why the member is not running, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// One per type; the operator's controllers each own their types.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The member's account on the Swarm's ledger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ledger: Option<MemberLedgerStatus>,
}

impl SwarmMemberStatus {
    /// The fields the member controller writes: all but the ledger controller's
    /// ([`MemberLedgerPart`]), so neither writer turns the other's fields back.
    pub fn without_ledger_part(&self) -> Self {
        SwarmMemberStatus {
            round: None,
            last_reward: None,
            total_reward: None,
            ledger: None,
            conditions: self
                .conditions
                .iter()
                .filter(|c| c.type_ != super::conditions::REGISTERED)
                .cloned()
                .collect(),
            ..self.clone()
        }
    }

    /// The ledger controller's fields, as the status shows them.
    pub fn ledger_part(&self) -> MemberLedgerPart {
        MemberLedgerPart {
            round: self.round,
            last_reward: self.last_reward,
            total_reward: self.total_reward,
            ledger: self.ledger.clone(),
            conditions: self
                .conditions
                .iter()
                .filter(|c| c.type_ == super::conditions::REGISTERED)
                .cloned()
                .collect(),
        }
    }
}

/// The fields of a member's status that the ledger controller writes, under its own field manager
/// ([`super::LEDGER_FIELD_MANAGER`]): what the member recorded on the ledger and its registration.
#[derive(Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MemberLedgerPart {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub round: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_reward: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_reward: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ledger: Option<MemberLedgerStatus>,
    /// The `Registered` condition.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MemberLedgerStatus {
    /// The contract the member is registered on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contract_address: Option<String>,
    /// The transfer that funded the member's account, when the operator sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub funding_transaction: Option<String>,
    /// The transaction that registered the member's account with its PeerId; empty when the ledger
    /// already had the registration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration_transaction: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum MemberPhase {
    /// The pod does not exist yet or is waiting for a node.
    Pending,
    /// The pod is on a node and its container is starting.
    Starting,
    /// The node process runs and reports ready.
    Running,
    /// The pod failed and waits for replacement.
    Failed,
}

impl SwarmMember {
    /// Name of the immutable Secret holding this member's key.
    pub fn identity_secret_name(&self) -> String {
        identity_secret_name(self.metadata.name.as_deref().unwrap_or_default())
    }

    /// Whether the member counts as ready: its pod is running and ready, never merely scheduled.
    pub fn is_ready(&self) -> bool {
        self.status
            .as_ref()
            .is_some_and(|s| s.phase == Some(MemberPhase::Running))
    }
}

pub fn identity_secret_name(member: &str) -> String {
    format!("{member}-identity")
}
