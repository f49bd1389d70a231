//! What the controllers' watches already hold, read instead of asking the API server again.
//!
//! Each store is filled by a watch the controllers run anyway (the Swarms, their members, the
//! members' pods, the identity Secrets, the Services and ConfigMaps), and one that only fills its
//! store (the members' checkpoint claims, which trigger nothing). Until a store has listed
//! once, reads go to the API server, so a reconcile that runs early never mistakes an unfilled
//! store for a missing object. A store may lag a write by one watch event; every decision taken on
//! a stale object is revisited by that event (applies are idempotent, a create that loses a race
//! reads the winner, a pod still shown after its deletion is waited for). For that to hold, a
//! controller reads a kind from the same watch that triggers it for that kind: the reflector
//! updates its store before it passes the event on.

use std::fmt::Debug;

use futures::FutureExt;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret, Service};
use kube::core::DeserializeGuard;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{Context, apply};
use crate::api::{Swarm, SwarmMember, labels};
use crate::error::{KubeContext, Result};

/// The stores of the operator's watches.
#[derive(Clone)]
pub struct Caches {
    pub swarms: Store<DeserializeGuard<Swarm>>,
    pub members: Store<DeserializeGuard<SwarmMember>>,
    pub pods: Store<Pod>,
    pub secrets: Store<Secret>,
    pub services: Store<Service>,
    pub config_maps: Store<ConfigMap>,
    /// The members' checkpoint claims.
    pub claims: Store<PersistentVolumeClaim>,
}

/// Whether `store` has listed once: only then does a missing object mean one that does not exist.
fn ready<K: Resource + Clone + 'static>(store: &Store<K>) -> bool
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    store
        .wait_until_ready()
        .now_or_never()
        .is_some_and(|ready| ready.is_ok())
}

/// `namespace/name` from `store` once it is ready (`Some(found)`), else `None`: ask the server.
fn lookup<K>(store: Option<&Store<K>>, namespace: &str, name: &str) -> Option<Option<K>>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    let store = store.filter(|store| ready(store))?;
    Some(
        store
            .get(&ObjectRef::new(name).within(namespace))
            .map(|object| object.as_ref().clone()),
    )
}

/// `namespace/name` from the cache `pick` chooses, or from the API server without one.
async fn get<K>(
    ctx: &Context,
    pick: impl FnOnce(&Caches) -> &Store<K>,
    namespace: &str,
    name: &str,
) -> Result<Option<K>>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug
        + 'static,
{
    if let Some(found) = lookup(ctx.caches.get().map(pick), namespace, name) {
        return Ok(found);
    }
    Api::<K>::namespaced(ctx.client.clone(), namespace)
        .get_opt(name)
        .await
        .context(|| format!("get {} {namespace}/{name}", K::kind(&())))
}

impl Context {
    /// The Swarm `namespace/name`; `None` when it does not exist (or cannot be read: its own
    /// controller reports that).
    pub async fn swarm(&self, namespace: &str, name: &str) -> Result<Option<Swarm>> {
        let cached = self.caches.get().map(|c| &c.swarms);
        if let Some(found) = lookup(cached, namespace, name) {
            return Ok(found.and_then(|guarded| guarded.0.ok()));
        }
        Api::<Swarm>::namespaced(self.client.clone(), namespace)
            .get_opt(name)
            .await
            .context(|| format!("get swarm {namespace}/{name}"))
    }

    pub async fn pod(&self, namespace: &str, name: &str) -> Result<Option<Pod>> {
        get(self, |c| &c.pods, namespace, name).await
    }

    pub async fn secret(&self, namespace: &str, name: &str) -> Result<Option<Secret>> {
        get(self, |c| &c.secrets, namespace, name).await
    }

    /// The members of `swarm` (by label), readable ones only.
    pub async fn members_of(&self, namespace: &str, swarm: &str) -> Result<Vec<SwarmMember>> {
        if let Some(store) = self.caches.get().map(|c| &c.members).filter(|s| ready(s)) {
            return Ok(store
                .state()
                .into_iter()
                .filter(|m| {
                    m.namespace().as_deref() == Some(namespace)
                        && m.labels().get(labels::SWARM).map(String::as_str) == Some(swarm)
                })
                .filter_map(|m| m.0.as_ref().ok().cloned())
                .collect());
        }
        Ok(
            Api::<SwarmMember>::namespaced(self.client.clone(), namespace)
                .list(&kube::api::ListParams::default().labels(&labels::swarm_selector(swarm)))
                .await
                .context(|| format!("list members of {namespace}/{swarm}"))?
                .items,
        )
    }

    /// Applies the Service unless the cache shows it as desired already.
    pub async fn apply_service(&self, service: &Service) -> Result<()> {
        let cached = self.caches.get().map(|c| &c.services);
        apply_if_changed(self, cached, service).await
    }

    /// Applies a member's checkpoint claim unless the cache shows it as desired already.
    pub async fn apply_checkpoint_claim(&self, claim: &PersistentVolumeClaim) -> Result<()> {
        let cached = self.caches.get().map(|c| &c.claims);
        apply_if_changed(self, cached, claim).await
    }

    /// Applies the ConfigMap unless the cache shows it as desired already.
    pub async fn apply_config_map(&self, config_map: &ConfigMap) -> Result<()> {
        let cached = self.caches.get().map(|c| &c.config_maps);
        apply_if_changed(self, cached, config_map).await
    }
}

async fn apply_if_changed<K>(ctx: &Context, cached: Option<&Store<K>>, desired: &K) -> Result<()>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Serialize
        + DeserializeOwned
        + Debug
        + 'static,
{
    let namespace = desired.namespace().unwrap_or_default();
    let name = desired.name_any();
    // An object that does not serialize (never seen) counts as changed: it is applied.
    if let Some(Some(current)) = lookup(cached, &namespace, &name)
        && let (Ok(current), Ok(wanted)) = (
            serde_json::to_value(&current),
            serde_json::to_value(desired),
        )
        && holds(&current, &wanted)
    {
        return Ok(());
    }
    apply(&Api::namespaced(ctx.client.clone(), &namespace), desired).await?;
    Ok(())
}

/// Whether `current` holds everything `desired` says: every field of `desired` present with the
/// same value, lists element by element with the same length. Fields only `current` has (the
/// server's defaults, status, other managers' fields) do not matter.
pub fn holds(current: &Value, desired: &Value) -> bool {
    match (current, desired) {
        (Value::Object(current), Value::Object(desired)) => desired.iter().all(|(key, value)| {
            current
                .get(key)
                .is_some_and(|present| holds(present, value))
        }),
        (Value::Array(current), Value::Array(desired)) => {
            current.len() == desired.len() && current.iter().zip(desired).all(|(c, d)| holds(c, d))
        }
        (current, desired) => current == desired,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::holds;

    #[test]
    fn a_current_object_holds_what_is_desired_whatever_it_adds() {
        let desired = json!({
            "metadata": {"name": "demo-peers", "labels": {"app": "x"}},
            "spec": {"clusterIP": "None", "ports": [{"name": "p2p", "port": 4001}]},
        });
        let current = json!({
            "metadata": {"name": "demo-peers", "labels": {"app": "x", "extra": "y"}, "uid": "u"},
            "spec": {"clusterIP": "None", "ports": [{"name": "p2p", "port": 4001, "protocol": "TCP"}]},
            "status": {},
        });
        assert!(holds(&current, &desired));
        let changed = json!({"spec": {"ports": [{"name": "p2p", "port": 4002}]}});
        assert!(!holds(&current, &changed));
        let more_ports = json!({"spec": {"ports": [{"port": 4001}, {"port": 4002}]}});
        assert!(!holds(&current, &more_ports));
        assert!(!holds(
            &current,
            &json!({"metadata": {"labels": {"new": "z"}}})
        ));
        assert!(!holds(&json!({}), &json!({"data": {"node.yaml": ""}})));
    }
}
