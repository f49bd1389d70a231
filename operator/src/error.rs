use swarm_identity::IdentityError;
use swarm_node_config::ConfigError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{action}: {source}")]
    Kube {
        action: String,
        #[source]
        source: kube::Error,
    },
    #[error("object has no {0}")]
    MissingField(&'static str),
    #[error("identity Secret {secret} is unusable: {source}")]
    Identity {
        secret: String,
        #[source]
        source: IdentityError,
    },
    #[error("Secret {0} is in the way of a member identity: it is not labelled as this member's")]
    ForeignSecret(String),
    #[error("identity Secret {0} has no key {key}", key = swarm_identity::PRIVATE_KEY_FILE)]
    IdentityKeyMissing(String),
    #[error(transparent)]
    NodeConfig(#[from] ConfigError),
    #[error("lost the leader Lease {0}")]
    LeadershipLost(String),
    #[error(transparent)]
    Ledger(#[from] crate::ledger::LedgerProblem),
}

impl Error {
    /// The member's identity Secret exists but cannot serve as its identity.
    pub fn is_identity_problem(&self) -> bool {
        matches!(
            self,
            Error::Identity { .. } | Error::ForeignSecret(_) | Error::IdentityKeyMissing(_)
        )
    }

    /// Stable label for the failure metric and Event reasons.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Kube { source, .. } => match source {
                kube::Error::Api(status) if status.is_conflict() => "Conflict",
                kube::Error::Api(status) if status.is_forbidden() => "Forbidden",
                kube::Error::Api(status) if status.is_not_found() => "NotFound",
                kube::Error::Api(_) => "ApiError",
                _ => "ApiUnreachable",
            },
            Error::MissingField(_) => "MalformedObject",
            Error::Identity { .. } | Error::IdentityKeyMissing(_) => "IdentityUnusable",
            Error::ForeignSecret(_) => "ForeignSecret",
            Error::NodeConfig(_) => "ConfigRenderFailed",
            Error::LeadershipLost(_) => "LeadershipLost",
            Error::Ledger(problem) => problem.reason,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attaches what the operator was doing to a Kubernetes API error.
pub trait KubeContext<T> {
    fn context(self, action: impl FnOnce() -> String) -> Result<T>;
}

impl<T> KubeContext<T> for Result<T, kube::Error> {
    fn context(self, action: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Kube {
            action: action(),
            source,
        })
    }
}
