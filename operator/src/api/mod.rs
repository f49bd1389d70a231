//! The `rlswarm.dev/v1alpha1` API: `Swarm` and `SwarmMember`.

pub mod admission;
mod member;
mod swarm;

pub use member::*;
pub use swarm::*;

pub const API_GROUP: &str = "rlswarm.dev";

/// Field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "rl-swarm-operator";

/// Field manager of the ledger controller's status fields: the Swarm's `ledger` and `LedgerReady`
/// condition; a member's `ledger`, `Registered` condition, `round`, `lastReward` and `totalReward`.
/// Server-side apply merges them with the other controllers' fields (conditions are a list map
/// keyed by type), so neither writer turns the other's fields back.
pub const LEDGER_FIELD_MANAGER: &str = "rl-swarm-operator-ledger";

/// Labels every child carries.
pub mod labels {
    pub const NAME: &str = "app.kubernetes.io/name";
    pub const INSTANCE: &str = "app.kubernetes.io/instance";
    pub const COMPONENT: &str = "app.kubernetes.io/component";
    pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
    pub const SWARM: &str = "rlswarm.dev/swarm";
    pub const MEMBER: &str = "rlswarm.dev/member";
    pub const ORDINAL: &str = "rlswarm.dev/ordinal";

    pub const NAME_VALUE: &str = "swarm-node";
    pub const MANAGED_BY_VALUE: &str = "rl-swarm-operator";

    /// Selects every object the operator manages, so its watches never cache the rest of the cluster.
    pub fn managed_selector() -> String {
        format!("{MANAGED_BY}={MANAGED_BY_VALUE}")
    }

    /// Selects the children of one Swarm.
    pub fn swarm_selector(swarm: &str) -> String {
        format!("{SWARM}={swarm}")
    }
}

/// Condition types and reasons.
pub mod conditions {
    pub const AVAILABLE: &str = "Available";
    pub const PROGRESSING: &str = "Progressing";
    pub const DEGRADED: &str = "Degraded";
    pub const READY: &str = "Ready";
    pub const LEDGER_READY: &str = "LedgerReady";
    pub const REGISTERED: &str = "Registered";
}
