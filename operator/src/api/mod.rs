//! The `rlswarm.dev/v1alpha1` API: `Swarm` and `SwarmMember`.

pub mod admission;
mod member;
mod swarm;

pub use member::*;
pub use swarm::*;

pub const API_GROUP: &str = "rlswarm.dev";

/// Field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "rl-swarm-operator";

/// Field manager of the members' `round`, `lastReward` and `totalReward`, which the Swarm's ledger
/// pass writes from the ledger's records.
pub const PROGRESS_FIELD_MANAGER: &str = "rl-swarm-operator-progress";

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
