//! The three controllers (Swarms, members, ledgers) and what they share. Reconcilers fetch, call
//! the pure builders, apply with server-side apply and write status; nothing else.

pub mod cache;
pub mod chain;
pub mod identity;
pub mod ledger;
pub mod member;
pub mod swarm;

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    ConfigMap, ObjectReference, PersistentVolumeClaim, Pod, Secret, Service,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::runtime::controller::{self, Action};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, reflector};
use kube::runtime::{Controller, PredicateConfig, WatchStreamExt, predicates, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{Instrument, info, warn};

use crate::api::{FIELD_MANAGER, Swarm, SwarmMember, labels};
use crate::build::PodSettings;
use crate::error::{Error, KubeContext, Result};
use crate::metrics::Metrics;

/// How long the member controller waits after a member's last trigger before reconciling it.
const MEMBER_DEBOUNCE: Duration = Duration::from_secs(1);
/// How long the ledger controller waits after a Swarm's last trigger: a scale-up changes members
/// many times a second, and each pass asks the chain.
const LEDGER_DEBOUNCE: Duration = Duration::from_secs(2);
/// Member events waiting for the ledger controller; the member watch waits when it is full.
const LEDGER_TRIGGER_BUFFER: usize = 1024;

/// What every reconciliation needs.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Metrics,
    pub pod_settings: PodSettings,
    pub ledgers: chain::Ledgers,
    pub rewards: chain::Rewards,
    /// Whether this replica may write to ledgers now: it holds the leader Lease, or runs alone.
    pub leader: Arc<AtomicBool>,
    /// The watches' stores, once [`run`] has started them; reads go to the API server without.
    caches: OnceLock<cache::Caches>,
    retries: RetryBackoff,
}

impl Context {
    pub fn new(
        client: Client,
        reporter: Reporter,
        metrics: Metrics,
        pod_settings: PodSettings,
    ) -> Self {
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            pod_settings,
            ledgers: chain::Ledgers::default(),
            rewards: chain::Rewards::default(),
            leader: Arc::new(AtomicBool::new(true)),
            caches: OnceLock::new(),
            retries: RetryBackoff::default(),
        }
    }

    /// Reads from now on come from these stores once they have listed. Set once; later calls
    /// change nothing.
    pub fn use_caches(&self, caches: cache::Caches) {
        let _ = self.caches.set(caches);
    }

    /// The same context with other ledger timeouts and retries (tests use short ones).
    pub fn with_ledger_options(mut self, options: swarm_ledger::LedgerOptions) -> Self {
        self.ledgers = chain::Ledgers::new(options);
        self
    }

    /// The same context following a leadership flag that the Lease renewals keep up to date.
    pub fn with_leader_flag(mut self, leader: Arc<AtomicBool>) -> Self {
        self.leader = leader;
        self
    }

    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::Relaxed)
    }

    /// Publishes an Event; a failure to publish is logged, never fatal to the reconciliation.
    pub async fn event(&self, on: &ObjectReference, type_: EventType, reason: &str, note: String) {
        let event = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(note),
            action: reason.to_owned(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&event, on).await {
            warn!(%error, reason, "cannot publish event");
        }
    }
}

/// Per-object exponential backoff for failed reconciliations, reset by a success.
#[derive(Default)]
struct RetryBackoff {
    failures: Mutex<HashMap<String, u32>>,
}

impl RetryBackoff {
    const BASE: Duration = Duration::from_secs(2);
    const MAX: Duration = Duration::from_secs(300);

    fn failed(&self, key: String) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let count = failures.entry(key).or_default();
        *count = count.saturating_add(1);
        Self::BASE
            .saturating_mul(2u32.saturating_pow(*count - 1))
            .min(Self::MAX)
    }

    fn succeeded(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
}

/// Creates or updates `object` with server-side apply under the operator's field manager.
pub async fn apply<K>(api: &Api<K>, object: &K) -> Result<K>
where
    K: Resource<DynamicType = ()> + Serialize + DeserializeOwned + Clone + Debug,
{
    let name = object
        .meta()
        .name
        .clone()
        .ok_or(Error::MissingField("metadata.name"))?;
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(object),
    )
    .await
    .context(|| format!("apply {} {name}", K::kind(&())))
}

/// Deletes the object `name`; one already gone counts as deleted (a watch cache may still show it).
pub async fn delete<K>(api: &Api<K>, name: &str, params: &DeleteParams) -> Result<()>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    match api.delete(name, params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.is_not_found() => Ok(()),
        Err(source) => Err(Error::Kube {
            action: format!("delete {} {name}", K::kind(&())),
            source,
        }),
    }
}

/// Writes `status` of the object with server-side apply on the status subresource.
pub async fn apply_status<K>(object: &K, status: &impl Serialize, client: Client) -> Result<()>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug,
{
    apply_status_as(FIELD_MANAGER, object, status, client).await
}

/// [`apply_status`] under another field manager, which then owns the fields `status` sets.
pub async fn apply_status_as<K>(
    field_manager: &str,
    object: &K,
    status: &impl Serialize,
    client: Client,
) -> Result<()>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug,
{
    let namespace = object.namespace().unwrap_or_default();
    let name = object.name_any();
    Api::<K>::namespaced(client, &namespace)
        .patch_status(
            &name,
            &PatchParams::apply(field_manager).force(),
            &Patch::Apply(serde_json::json!({
                "apiVersion": K::api_version(&()),
                "kind": K::kind(&()),
                "status": status,
            })),
        )
        .await
        .context(|| format!("write status of {} {namespace}/{name}", K::kind(&())))?;
    Ok(())
}

/// Adds `finalizer` to the object, unless it has it. The patch names the object's resourceVersion, so
/// it never overwrites finalizers someone else changed meanwhile (a conflict retries the reconcile).
pub async fn add_finalizer<K>(api: &Api<K>, object: &K, finalizer: &str) -> Result<()>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    if object.finalizers().iter().any(|f| f == finalizer) {
        return Ok(());
    }
    let mut finalizers = object.finalizers().to_vec();
    finalizers.push(finalizer.to_owned());
    patch_finalizers(api, object, finalizers).await
}

/// Removes `finalizer` from the object, if it has it; same concurrency rule as [`add_finalizer`].
pub async fn remove_finalizer<K>(api: &Api<K>, object: &K, finalizer: &str) -> Result<()>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    if !object.finalizers().iter().any(|f| f == finalizer) {
        return Ok(());
    }
    let finalizers = object
        .finalizers()
        .iter()
        .filter(|f| *f != finalizer)
        .cloned()
        .collect();
    patch_finalizers(api, object, finalizers).await
}

async fn patch_finalizers<K>(api: &Api<K>, object: &K, finalizers: Vec<String>) -> Result<()>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    let name = object.name_any();
    let patch = serde_json::json!({
        "metadata": {
            "finalizers": finalizers,
            "resourceVersion": object.resource_version(),
        }
    });
    api.patch(
        &name,
        &PatchParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..Default::default()
        },
        &Patch::Merge(&patch),
    )
    .await
    .context(|| format!("update the finalizers of {} {name}", K::kind(&())))?;
    Ok(())
}

fn object_key<K: Resource>(object: &K) -> String {
    format!(
        "{}/{}",
        object.namespace().unwrap_or_default(),
        object.name_any()
    )
}

/// The retry key of an object in one controller: two controllers of one Swarm back off apart.
fn retry_key(controller: &str, object_key: &str) -> String {
    format!("{controller}:{object_key}")
}

/// Runs a reconciler over a guarded object: a malformed object gets a Warning Event and is skipped,
/// so it can neither crash the operator nor stop the watch that delivered it.
pub async fn guarded<K, F, Fut>(
    object: Arc<DeserializeGuard<K>>,
    ctx: Arc<Context>,
    controller: &'static str,
    reconcile: F,
) -> Result<Action>
where
    K: Resource<DynamicType = ()>,
    F: FnOnce(Arc<Context>, K) -> Fut,
    Fut: Future<Output = Result<Action>>,
    K: Clone,
{
    let _timer = ctx.metrics.start(controller);
    let key = object_key(object.as_ref());
    // One span per reconciliation: exported as a trace when OTLP is on.
    let span = tracing::info_span!(
        "reconcile",
        controller,
        object = %key,
        otel.status_code = tracing::field::Empty,
        error.reason = tracing::field::Empty,
    );
    match &object.0 {
        Ok(valid) => {
            let result = reconcile(ctx.clone(), valid.clone())
                .instrument(span.clone())
                .await;
            match &result {
                Ok(_) => ctx.retries.succeeded(&retry_key(controller, &key)),
                Err(error) => {
                    span.record("otel.status_code", "ERROR");
                    span.record("error.reason", error.reason());
                    ctx.metrics.failed(controller, error.reason());
                    let reference = reference_of::<K>(object.meta());
                    ctx.event(
                        &reference,
                        EventType::Warning,
                        error.reason(),
                        error.to_string(),
                    )
                    .await;
                }
            }
            result
        }
        Err(invalid) => {
            ctx.metrics.failed(controller, "MalformedObject");
            warn!(object = %key, error = %invalid.error, "skipping malformed object");
            ctx.event(
                &reference_of::<K>(&invalid.metadata),
                EventType::Warning,
                "MalformedObject",
                format!("cannot read this object: {}", invalid.error),
            )
            .await;
            Ok(Action::await_change())
        }
    }
}

fn reference_of<K: Resource<DynamicType = ()>>(meta: &ObjectMeta) -> ObjectReference {
    ObjectReference {
        api_version: Some(K::api_version(&()).into_owned()),
        kind: Some(K::kind(&()).into_owned()),
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        uid: meta.uid.clone(),
        ..Default::default()
    }
}

fn error_policy<K: Resource>(
    controller: &str,
    object: Arc<DeserializeGuard<K>>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    let key = object_key(object.as_ref());
    let delay = ctx.retries.failed(retry_key(controller, &key));
    warn!(object = %key, %error, retry_in = ?delay, "reconciliation failed");
    Action::requeue(delay)
}

/// Builds namespaced or cluster-wide Apis for the operator's scope.
struct Scoped {
    client: Client,
    namespace: Option<String>,
}

impl Scoped {
    fn of<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        match &self.namespace {
            Some(namespace) => Api::namespaced(self.client.clone(), namespace),
            None => Api::all(self.client.clone()),
        }
    }
}

/// A watch of `api` whose objects fill the returned store before they reach the returned trigger
/// stream (touched objects, deletions included).
fn cached_watch<K>(
    api: Api<K>,
    config: watcher::Config,
) -> (
    reflector::Store<K>,
    impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (store, writer) = reflector::store::<K>();
    (store, watch_into(writer, api, config))
}

/// The trigger stream of a watch of `api` that fills `writer`'s store first.
fn watch_into<K>(
    writer: reflector::store::Writer<K>,
    api: Api<K>,
    config: watcher::Config,
) -> impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    reflector(writer, watcher(api, config).default_backoff()).touched_objects()
}

/// Runs the three controllers until `shutdown` resolves; in-flight reconciliations finish first.
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<String>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    // Cluster scope watches every namespace; namespace scope only one, with only a Role there.
    let scoped = Scoped {
        client: ctx.client.clone(),
        namespace,
    };
    let managed = watcher::Config::default().labels(&labels::managed_selector());
    let (stop_swarms, stop_members, stop_ledgers) = {
        let shared = futures::FutureExt::shared(shutdown);
        (shared.clone(), shared.clone(), shared)
    };

    // The children's watches fill the stores reconciles read (see `cache`) and trigger them.
    let (services, service_events) = cached_watch(scoped.of::<Service>(), managed.clone());
    let (config_maps, config_map_events) = cached_watch(scoped.of::<ConfigMap>(), managed.clone());
    let (pods, pod_events) = cached_watch(scoped.of::<Pod>(), managed.clone());
    let (secrets, secret_events) = cached_watch(scoped.of::<Secret>(), managed.clone());
    // Only a store: a claim's change needs no reconcile, but its watch must be driven.
    let (claims, claim_events) = cached_watch(scoped.of::<PersistentVolumeClaim>(), managed);
    let claim_store_filler = claim_events.for_each(|_| futures::future::ready(()));
    // The Swarm controller reads members from the same watch that triggers it: a trigger from
    // another watch could arrive before this store has the change, and the Swarm's status would
    // keep the old count until the next resync.
    // The ledger controller is triggered by the same store's updates (a shared store): it reads
    // members from it too.
    let (member_cache, member_writer) = reflector::store_shared(LEDGER_TRIGGER_BUFFER);
    let member_updates = member_writer.subscribe();
    let member_events = watch_into(
        member_writer,
        scoped.of::<DeserializeGuard<SwarmMember>>(),
        watcher::Config::default(),
    );

    let swarm_controller = Controller::new(
        scoped.of::<DeserializeGuard<Swarm>>(),
        watcher::Config::default(),
    )
    .owns_stream(member_events)
    .owns_stream(service_events)
    .owns_stream(config_map_events)
    .graceful_shutdown_on(stop_swarms)
    .run(
        |obj, ctx| guarded(obj, ctx, "swarm", swarm::reconcile),
        |obj, error, ctx| error_policy("swarm", obj, error, ctx),
        ctx.clone(),
    )
    .for_each(|result| async move {
        if let Ok((object, _)) = result {
            info!(swarm = %object, "reconciled");
        }
    });

    // A new pod passes through several states within a second (bound, started, ready); waiting
    // that long after a member's last trigger shows it once instead of once per state.
    let members = Controller::new(
        scoped.of::<DeserializeGuard<SwarmMember>>(),
        watcher::Config::default(),
    )
    .with_config(controller::Config::default().debounce(MEMBER_DEBOUNCE));
    let member_store = members.store();
    let secret_store = member_store.clone();
    // Members depend on the Swarm's spec only; its status changes with every member and must not
    // re-reconcile all of them each time, so only new generations pass (the store sees them all).
    let (swarms, swarm_events) = cached_watch(
        scoped.of::<DeserializeGuard<Swarm>>(),
        watcher::Config::default(),
    );
    let swarm_spec_changes =
        swarm_events.predicate_filter(predicates::generation, PredicateConfig::default());
    ctx.use_caches(cache::Caches {
        swarms,
        members: member_cache,
        pods,
        secrets,
        services,
        config_maps,
        claims,
    });
    let member_controller = members
        .owns_stream(pod_events)
        .watches_stream(swarm_spec_changes, move |swarm| {
            let namespace = swarm.namespace();
            let name = swarm.name_any();
            member_store
                .state()
                .into_iter()
                .filter(|m| {
                    m.namespace() == namespace && m.labels().get(labels::SWARM) == Some(&name)
                })
                .map(|m| ObjectRef::from_obj(m.as_ref()))
                .collect::<Vec<_>>()
        })
        .watches_stream(secret_events, move |secret| {
            let namespace = secret.namespace();
            let member = secret.labels().get(labels::MEMBER).cloned();
            secret_store
                .state()
                .into_iter()
                .filter(|m| m.namespace() == namespace && Some(m.name_any()) == member)
                .map(|m| ObjectRef::from_obj(m.as_ref()))
                .collect::<Vec<_>>()
        })
        .graceful_shutdown_on(stop_members)
        .run(
            |obj, ctx| guarded(obj, ctx, "member", member::reconcile),
            |obj, error, ctx| error_policy("member", obj, error, ctx),
            ctx.clone(),
        )
        .for_each(|result| async move {
            if let Ok((object, _)) = result {
                info!(member = %object, "reconciled");
            }
        });

    // Chain work, away from the other two: triggered by its Swarm and by its members' updates
    // (a leaving member is an update too: its finalizer holds it until deregistered).
    let mut ledgers = Controller::new(
        scoped.of::<DeserializeGuard<Swarm>>(),
        watcher::Config::default(),
    )
    .with_config(controller::Config::default().debounce(LEDGER_DEBOUNCE));
    if let Some(updates) = member_updates {
        ledgers = ledgers.watches_shared_stream(updates, |member| {
            let swarm = member.labels().get(labels::SWARM)?;
            Some(ObjectRef::new(swarm).within(&member.namespace()?))
        });
    }
    let ledger_controller = ledgers
        .graceful_shutdown_on(stop_ledgers)
        .run(
            |obj, ctx| guarded(obj, ctx, "ledger", ledger::reconcile),
            |obj, error, ctx| error_policy("ledger", obj, error, ctx),
            ctx,
        )
        .for_each(|result| async move {
            if let Ok((object, _)) = result {
                info!(ledger = %object, "reconciled");
            }
        });

    // The claim watch ends with the others: it stops once they have.
    futures::future::select(
        Box::pin(async {
            futures::join!(swarm_controller, member_controller, ledger_controller);
        }),
        Box::pin(claim_store_filler),
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_backoff_doubles_and_resets_on_success() {
        let retries = RetryBackoff::default();
        let delays: Vec<u64> = (0..10)
            .map(|_| retries.failed("ns/a".into()).as_secs())
            .collect();
        assert_eq!(delays, [2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        retries.succeeded("ns/a");
        assert_eq!(retries.failed("ns/a".into()).as_secs(), 2);
    }
}
