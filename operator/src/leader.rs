//! Leader election through a `coordination.k8s.io/v1` Lease, so that only one operator replica writes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Api;
use kube::api::PostParams;
use tracing::{info, warn};

use crate::api::FIELD_MANAGER;
use crate::error::{KubeContext, Result};

pub struct LeaseLock {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
}

impl LeaseLock {
    pub fn new(api: Api<Lease>, name: &str, identity: &str, duration: Duration) -> Self {
        Self {
            api,
            name: name.to_owned(),
            identity: identity.to_owned(),
            duration,
        }
    }

    /// Takes the Lease if it is free or expired, renews it if we hold it. Returns whether we hold it now.
    /// Losing a race to another replica (a conflict) is an answer, not an error.
    pub async fn try_acquire_or_renew(&self) -> Result<bool> {
        let now = Timestamp::now();
        let existing = self
            .api
            .get_opt(&self.name)
            .await
            .context(|| format!("get lease {}", self.name))?;
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..Default::default()
        };
        let result = match existing {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..Default::default()
                    },
                    spec: Some(self.spec(now, now, 0)),
                };
                self.api.create(&params, &lease).await
            }
            Some(mut lease) => {
                let spec = lease.spec.clone().unwrap_or_default();
                let mine = spec.holder_identity.as_deref() == Some(self.identity.as_str());
                if !mine && !expired(&spec, now) {
                    return Ok(false);
                }
                let (acquired, transitions) = if mine {
                    (
                        spec.acquire_time.map_or(now, |t| t.0),
                        spec.lease_transitions.unwrap_or(0),
                    )
                } else {
                    (now, spec.lease_transitions.unwrap_or(0) + 1)
                };
                lease.spec = Some(self.spec(now, acquired, transitions));
                self.api.replace(&self.name, &params, &lease).await
            }
        };
        match result {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.is_conflict() || status.is_already_exists() => {
                Ok(false)
            }
            Err(source) => Err(source).context(|| format!("write lease {}", self.name)),
        }
    }

    /// Gives the Lease up on shutdown so a standby replica takes over at once.
    pub async fn release(&self) -> Result<()> {
        let Some(mut lease) = self
            .api
            .get_opt(&self.name)
            .await
            .context(|| format!("get lease {}", self.name))?
        else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..Default::default()
        };
        self.api
            .replace(&self.name, &params, &lease)
            .await
            .context(|| format!("release lease {}", self.name))?;
        Ok(())
    }

    fn spec(&self, now: Timestamp, acquired: Timestamp, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(
                i32::try_from(self.duration.as_secs()).unwrap_or(i32::MAX),
            ),
            acquire_time: Some(MicroTime(acquired)),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    /// Blocks until this replica holds the Lease.
    pub async fn acquire(&self, retry: Duration) {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    info!(lease = %self.name, identity = %self.identity, "acquired leadership");
                    return;
                }
                Ok(false) => {}
                Err(error) => warn!(%error, "cannot reach the Lease; retrying"),
            }
            tokio::time::sleep(retry).await;
        }
    }

    /// Renews the Lease until a renewal is refused or none succeeded for `deadline`; then returns,
    /// and the caller must stop writing. `holding` is true only while the last renewal succeeded, so
    /// writes that must come from the Lease holder alone (ledger rounds) pause while it is in doubt.
    pub async fn hold(&self, every: Duration, deadline: Duration, holding: &AtomicBool) {
        let mut last_success = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(every).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    last_success = tokio::time::Instant::now();
                    holding.store(true, Ordering::Relaxed);
                }
                Ok(false) => {
                    holding.store(false, Ordering::Relaxed);
                    warn!(lease = %self.name, "another replica took the Lease");
                    return;
                }
                Err(error) => {
                    holding.store(false, Ordering::Relaxed);
                    warn!(%error, "cannot renew the Lease");
                    if last_success.elapsed() >= deadline {
                        return;
                    }
                }
            }
        }
    }
}

fn expired(spec: &LeaseSpec, now: Timestamp) -> bool {
    if spec.holder_identity.as_deref().is_none_or(str::is_empty) {
        return true;
    }
    let Some(MicroTime(renewed)) = spec.renew_time else {
        return true;
    };
    let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(0)));
    renewed
        .saturating_add(duration)
        .map_or(true, |until| until < now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: Option<&str>, renewed_secs_ago: i64, duration: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_owned),
            renew_time: Some(MicroTime(
                Timestamp::now() - SignedDuration::from_secs(renewed_secs_ago),
            )),
            lease_duration_seconds: Some(duration),
            ..Default::default()
        }
    }

    #[test]
    fn fresh_lease_is_held() {
        assert!(!expired(&spec(Some("a"), 5, 15), Timestamp::now()));
    }

    #[test]
    fn lease_past_its_duration_is_free() {
        assert!(expired(&spec(Some("a"), 20, 15), Timestamp::now()));
    }

    #[test]
    fn released_lease_is_free() {
        assert!(expired(&spec(None, 0, 15), Timestamp::now()));
        assert!(expired(&spec(Some(""), 0, 15), Timestamp::now()));
    }
}
