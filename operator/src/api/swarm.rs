//! The `Swarm` custom resource: a set of training members and how to run them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, EnvVar, Toleration};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::core::Rule;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};
use swarm_node_config::{Dtype, TrainingConfig};

/// Longest Swarm name: `<swarm>-<ordinal>-identity` must stay a 63-character DNS label with ordinals up to 999.
pub const MAX_SWARM_NAME_LEN: usize = 63 - "-999-identity".len();

/// Most members one Swarm may declare.
pub const MAX_REPLICAS: i32 = 1000;

// Printer columns repeat `type_` values, which clippy mistakes for duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "rlswarm.dev",
    version = "v1alpha1",
    kind = "Swarm",
    namespaced,
    status = "SwarmStatus",
    shortname = "sw",
    category = "rlswarm",
    derive = "PartialEq",
    doc = "A reinforcement-learning swarm: N members that train with GRPO and share rollouts peer-to-peer",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".spec.replicas"),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyReplicas"),
    printcolumn(name = "Round", type_ = "integer", json_path = ".status.round"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    cel,
    validation = Rule::new("size(self.metadata.name) <= 50").message(
        "metadata.name must be at most 50 characters, so that <swarm>-<ordinal>-identity stays a 63-character DNS label"
    ),
    validation = Rule::new("self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')").message(
        "metadata.name must be a DNS label that starts with a letter (lowercase letters, digits and '-'), because it names the swarm's headless Service"
    ),
    validation = Rule::new("!has(oldSelf.spec.ledger) || has(self.spec.ledger)").message(
        "spec.ledger cannot be removed: members are registered on it; delete the Swarm to deregister them"
    ),
    validation = Rule::new(format!("!has(self.spec.telemetry) || !has(self.spec.member.env) || self.spec.member.env.all(e, !(e.name in {}))", super::admission::TELEMETRY_ENV)).message(
        "spec.member.env may not set the OTEL_* variables that spec.telemetry sets (OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_PROTOCOL, OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_METRIC_EXPORT_INTERVAL)"
    ),
    validation = Rule::new("!has(self.spec.model.source.hub) || !has(self.spec.model.source.hub.tokenSecret) || !has(self.spec.member.env) || self.spec.member.env.all(e, e.name != 'HF_TOKEN')").message(
        "spec.member.env may not set HF_TOKEN when spec.model.source.hub.tokenSecret does"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = super::admission::kubernetes_integer_formats)]
pub struct SwarmSpec {
    /// Number of members.
    #[x_kube(validation = Rule::new("self >= 0 && self <= 1000").message("replicas must be between 0 and 1000"))]
    pub replicas: i32,

    /// Template for every member's pod.
    #[serde(default)]
    pub member: MemberTemplate,

    /// Where the weights and tokenizer come from. Immutable: checkpoints continue from these weights.
    #[x_kube(
        validation = Rule::new("self == oldSelf").message("model is immutable: members' checkpoints continue from these weights; create a new Swarm to train another model")
    )]
    pub model: ModelSpec,

    /// GRPO and SAPO hyper-parameters of every round; their bounds are those of
    /// `swarm_node_config::limits`, so that peers accept every member's messages.
    #[serde(default)]
    #[schemars(transform = super::admission::training)]
    pub training: TrainingConfig,

    /// Round timing.
    #[serde(default)]
    pub rounds: RoundsSpec,

    /// Peer-to-peer networking.
    #[serde(default)]
    pub p2p: P2pSpec,

    /// Per-member checkpoint volume; without it members checkpoint to an emptyDir and restart from the base model
    /// when rescheduled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoints: Option<CheckpointSpec>,

    /// What happens to member identities when the Swarm is deleted.
    #[serde(default)]
    pub identity: IdentitySpec,

    /// The EVM chain members are registered on; no ledger when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ledger: Option<LedgerSpec>,

    /// Where members send OpenTelemetry traces and metrics; members only serve Prometheus `/metrics`
    /// when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telemetry: Option<TelemetrySpec>,
}

/// OpenTelemetry export of every member's traces (a span per round and phase) and metrics.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TelemetrySpec {
    /// OTLP/HTTP endpoint (protobuf), e.g. `http://otel-collector.monitoring.svc:4318`.
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new("self.matches('^https?://[^/?#]+')").message("telemetry.otlpEndpoint must be an http:// or https:// URL"))]
    pub otlp_endpoint: String,
    /// Seconds between metric exports.
    #[serde(default = "default_metric_export_interval")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 3600").message("telemetry.metricExportIntervalSeconds must be between 1 and 3600"))]
    pub metric_export_interval_seconds: u32,
}

fn default_metric_export_interval() -> u32 {
    30
}

/// An EVM chain with the swarm's coordinator contract: the operator funds and registers every member's
/// account there and advances its rounds.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.chainId == oldSelf.chainId").message("ledger.chainId is immutable: members are registered on this chain; create a new Swarm to move to another"),
    validation = Rule::new("self.contract == oldSelf.contract").message("ledger.contract is immutable: members are registered on this contract; create a new Swarm to move to another")
)]
pub struct LedgerSpec {
    /// JSON-RPC endpoint of the chain. It may carry an API key; the operator never shows more of it than
    /// its scheme, host and port.
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new("self.matches('^https?://[^/?#]+')").message("ledger.rpcUrl must be an http:// or https:// URL"))]
    pub rpc_url: String,
    /// The chain the endpoint must serve; the operator refuses to send to another.
    #[x_kube(validation = Rule::new("self >= 1").message("ledger.chainId must be at least 1"))]
    pub chain_id: i64,
    /// The coordinator contract: an existing one, or one the operator deploys (its address then goes to
    /// `status.ledger.contractAddress`).
    pub contract: LedgerContract,
    /// The Secret holding the operator's account key (64 hex characters). That account owns the contract,
    /// pays for every transaction and funds the members.
    pub operator_key_secret: SecretKeyRef,
    /// Ether sent to each member account whose balance is below it, before the member is registered, so it
    /// can pay for its own submissions; e.g. "0.05". Nothing is sent when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 40))]
    #[x_kube(validation = Rule::new("self.matches('^[0-9]{1,20}([.][0-9]{1,18})?$')").message("ledger.memberFunding must be an amount of ether such as \"0.05\" (at most 18 decimals)"))]
    pub member_funding: Option<String>,
}

/// Exactly one of `address` and `deploy`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("[has(self.address), has(self.deploy)].filter(x, x).size() == 1").message("ledger.contract needs exactly one of address or deploy")
)]
pub struct LedgerContract {
    /// Address of a coordinator contract the operator's account owns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^0x[0-9a-fA-F]{40}$')").message("ledger.contract.address must be 0x followed by 40 hex digits"))]
    pub address: Option<String>,
    /// Deploy a new coordinator contract (`deploy: {}`), once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy: Option<DeployContract>,
}

/// Deploy a coordinator contract owned by the operator's account; no options yet.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct DeployContract {}

/// A key of a Secret in the Swarm's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The entry holding the key; `private-key` when empty.
    #[serde(default = "default_secret_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

fn default_secret_key() -> String {
    swarm_identity::PRIVATE_KEY_FILE.to_owned()
}

/// Pod template of every member.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MemberTemplate {
    /// Node image; the operator's default node image when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    #[x_kube(validation = Rule::new("size(self) >= 1 && !self.contains(' ')").message("member.image must be an image reference such as registry.example.com/swarm-node:1.0: not empty, no spaces; leave it out for the operator's default"))]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self in ['Always', 'IfNotPresent', 'Never']").message("member.imagePullPolicy must be Always, IfNotPresent or Never"))]
    pub image_pull_policy: Option<String>,
    #[serde(default)]
    pub resources: MemberResources,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = super::admission::label_map_size)]
    #[x_kube(validation = Rule::new(format!("self.all(k, self[k].matches('{}'))", super::admission::LABEL_VALUE)).message("member.nodeSelector values must be label values: at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"))]
    pub node_selector: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    #[x_kube(validation = Rule::new(format!("self.matches('{}')", super::admission::DNS_SUBDOMAIN)).message("member.runtimeClassName must name a RuntimeClass: lowercase letters, digits, '-' and '.'"))]
    pub runtime_class_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    #[x_kube(validation = Rule::new(format!("self.matches('{}')", super::admission::DNS_SUBDOMAIN)).message("member.priorityClassName must name a PriorityClass: lowercase letters, digits, '-' and '.'"))]
    pub priority_class_name: Option<String>,
    /// Extra environment variables for the node container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128), transform = super::admission::env_name_length)]
    #[x_kube(validation = Rule::new(format!("self.all(e, e.name.matches('{}'))", super::admission::ENV_NAME)).message("member.env names must be letters, digits, '-', '.' and '_', not starting with a digit (e.g. MY_SETTING)"))]
    #[x_kube(validation = Rule::new("self.all(e, self.exists_one(f, f.name == e.name))").message("member.env names must be unique"))]
    #[x_kube(validation = Rule::new(format!("self.all(e, !(e.name in {}))", super::admission::OPERATOR_ENV)).message("member.env may not set SWARM_MEMBER, POD_NAMESPACE, SWARM_IDENTITY_DIR, SWARM_CONFIG or HF_HOME: the operator sets them"))]
    pub env: Option<Vec<EnvVar>>,
}

/// Compute resources of a member; `gpus` is a shorthand for the `nvidia.com/gpu` limit.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MemberResources {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 0 && self <= 16").message("member.resources.gpus must be between 0 and 16"))]
    pub gpus: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = super::admission::quantity_map_size)]
    #[x_kube(validation = resources_rule("requests"))]
    pub requests: Option<BTreeMap<String, Quantity>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = super::admission::quantity_map_size)]
    #[x_kube(validation = resources_rule("limits"))]
    pub limits: Option<BTreeMap<String, Quantity>>,
}

/// Resource names mapped to quantities such as `500m`, `4Gi` or `2`.
fn resources_rule(field: &str) -> Rule {
    use super::admission::QUANTITY;
    Rule::new(format!(
        "self.all(k, string(self[k]).matches('{QUANTITY}'))"
    ))
    .message(&*format!(
        "member.resources.{field} values must be quantities such as 500m, 4Gi or 2"
    ))
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ModelSpec {
    pub source: ModelSource,
    #[serde(default)]
    pub dtype: Dtype,
}

/// Exactly one of the sources.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("[has(self.pvc), has(self.image), has(self.hub)].filter(x, x).size() == 1").message("model.source needs exactly one of pvc, image or hub")
)]
pub struct ModelSource {
    /// Weights on a PersistentVolumeClaim in the Swarm's namespace, mounted read-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pvc: Option<PvcModelSource>,
    /// Weights inside an OCI image, mounted read-only as an image volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageModelSource>,
    /// A hub model id, downloaded by the node (needs egress).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub: Option<HubModelSource>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PvcModelSource {
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new(format!("self.matches('{}')", super::admission::DNS_SUBDOMAIN)).message("model.source.pvc.claimName must name a PersistentVolumeClaim: lowercase letters, digits, '-' and '.'"))]
    pub claim_name: String,
    /// Directory inside the volume that holds config.json, the safetensors and tokenizer.json.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub path: Option<String>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ImageModelSource {
    #[schemars(length(min = 1, max = 1024))]
    #[x_kube(validation = Rule::new("size(self) >= 1 && !self.contains(' ')").message("model.source.image.reference must be an image reference such as registry.example.com/models/qwen:0.5b, without spaces"))]
    pub reference: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub path: Option<String>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HubModelSource {
    /// Repository id, `owner/name` (e.g. `Qwen/Qwen2.5-0.5B-Instruct`).
    #[schemars(length(min = 1, max = 193))]
    #[x_kube(validation = Rule::new(format!("self.matches('{}') && !self.contains('--') && !self.contains('..')", super::admission::HUB_ID)).message("model.source.hub.id must be a hub repository id such as Qwen/Qwen2.5-0.5B-Instruct: letters, digits, '-', '_' and '.', one '/' at most, no '--' or '..'"))]
    pub id: String,
    /// Branch, tag or commit; the repository's default branch when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    #[x_kube(validation = Rule::new(format!("self.matches('{}')", super::admission::HUB_REVISION)).message("model.source.hub.revision must be a branch, tag or commit such as main, v1.0 or a 40-digit commit hash"))]
    pub revision: Option<String>,
    /// A Secret in the Swarm's namespace holding a Hub token, for private or gated models; it
    /// reaches only the download, as `HF_TOKEN`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret: Option<HubTokenSecret>,
}

/// The Secret entry holding a Hub token.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HubTokenSecret {
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new(format!("self.matches('{}')", super::admission::DNS_SUBDOMAIN)).message("model.source.hub.tokenSecret.name must name a Secret: lowercase letters, digits, '-' and '.'"))]
    pub name: String,
    /// The entry holding the token; `token` when empty.
    #[serde(default = "default_hub_token_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

fn default_hub_token_key() -> String {
    "token".to_owned()
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RoundsSpec {
    /// Length of a round; members derive the current round from the swarm's start and this duration.
    #[serde(default = "default_round_seconds")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 86400").message("rounds.durationSeconds must be between 1 and 86400"))]
    pub duration_seconds: i32,
    /// Stop after this many rounds; unbounded when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1").message("rounds.maxRounds must be at least 1"))]
    pub max_rounds: Option<i64>,
}

impl Default for RoundsSpec {
    fn default() -> Self {
        Self {
            duration_seconds: default_round_seconds(),
            max_rounds: None,
        }
    }
}

fn default_round_seconds() -> i32 {
    60
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct P2pSpec {
    /// TCP (and QUIC) port every member listens on.
    #[serde(default = "default_p2p_port")]
    #[x_kube(validation = Rule::new("self >= 1024 && self <= 65535").message("p2p.port must be between 1024 and 65535: members run as non-root"))]
    pub port: i32,
    /// Multiaddrs of peers outside the cluster to bootstrap from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 512)))]
    #[x_kube(validation = Rule::new("self.all(a, a.startsWith('/'))").message("p2p.bootstrapPeers must be multiaddrs such as /dns4/host/tcp/4001/p2p/<peerId>"))]
    pub bootstrap_peers: Vec<String>,
}

impl Default for P2pSpec {
    fn default() -> Self {
        Self {
            port: default_p2p_port(),
            bootstrap_peers: Vec::new(),
        }
    }
}

fn default_p2p_port() -> i32 {
    4001
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointSpec {
    /// Storage class of each member's checkpoint volume; the cluster default when empty. Immutable, as it is
    /// on the claims.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("checkpoints.storageClassName is immutable: existing member volumes cannot change class"))]
    pub storage_class_name: Option<String>,
    #[serde(default = "default_checkpoint_size")]
    #[schemars(transform = super::admission::quantity_length)]
    #[x_kube(validation = Rule::new(format!("string(self).matches('{}') && string(self).matches('^[0.]*[1-9]')", super::admission::QUANTITY)).message("checkpoints.size must be a storage size greater than 0, such as 10Gi or 500Mi"))]
    pub size: Quantity,
    /// Checkpoint every this many rounds.
    #[serde(default = "default_checkpoint_interval")]
    #[x_kube(validation = Rule::new("self >= 1").message("checkpoints.everyRounds must be at least 1"))]
    pub every_rounds: i32,
}

fn default_checkpoint_size() -> Quantity {
    Quantity("10Gi".into())
}

fn default_checkpoint_interval() -> i32 {
    10
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IdentitySpec {
    #[serde(default)]
    pub retention: IdentityRetention,
}

/// `Delete` removes member identities with the Swarm; `Retain` keeps their Secrets so a Swarm created again
/// under the same name gets its members' identities back.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum IdentityRetention {
    #[default]
    Delete,
    Retain,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SwarmStatus {
    /// Members that exist.
    #[serde(default)]
    pub replicas: i32,
    /// Members whose pod is running and ready.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Label selector of the members' pods, for the scale subresource.
    #[serde(default)]
    pub selector: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<SwarmPhase>,
    /// Highest round any member reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// One per type; the operator's controllers each own their types.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Multiaddrs of the members whose identity is known.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bootstrap_peers: Vec<String>,
    /// The ledger, once the operator reached it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ledger: Option<SwarmLedgerStatus>,
}

impl SwarmStatus {
    /// The fields the Swarm controller writes: all but the ledger controller's
    /// ([`SwarmLedgerPart`]).
    pub fn without_ledger_part(&self) -> Self {
        SwarmStatus {
            ledger: None,
            conditions: self
                .conditions
                .iter()
                .filter(|c| c.type_ != super::conditions::LEDGER_READY)
                .cloned()
                .collect(),
            ..self.clone()
        }
    }

    /// The ledger controller's fields, as the status shows them.
    pub fn ledger_part(&self) -> SwarmLedgerPart {
        SwarmLedgerPart {
            ledger: self.ledger.clone(),
            conditions: self
                .conditions
                .iter()
                .filter(|c| c.type_ == super::conditions::LEDGER_READY)
                .cloned()
                .collect(),
        }
    }
}

/// The fields of a Swarm's status that the ledger controller writes, under its own field manager
/// ([`super::LEDGER_FIELD_MANAGER`]).
#[derive(Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SwarmLedgerPart {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ledger: Option<SwarmLedgerStatus>,
    /// The `LedgerReady` condition.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SwarmLedgerStatus {
    /// The coordinator contract: `spec.ledger.contract.address`, or the one the operator deployed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contract_address: Option<String>,
    /// The operator's account, which owns the contract.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator_account: Option<String>,
    /// The contract's current round, as last advanced or read by the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round: Option<i64>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum SwarmPhase {
    /// No member is ready yet.
    Pending,
    /// Members are being created, removed or started.
    Progressing,
    /// Every member is ready.
    Running,
    /// The swarm cannot be realised as specified, or members fail.
    Degraded,
}

impl Swarm {
    /// Name of the headless Service that gives members stable DNS names.
    pub fn peers_service_name(&self) -> String {
        format!("{}-peers", self.name_unchecked())
    }

    /// Name of the ConfigMap holding the rendered node configuration.
    pub fn config_map_name(&self) -> String {
        format!("{}-config", self.name_unchecked())
    }

    /// Name of the member with this ordinal.
    pub fn member_name(&self, ordinal: u32) -> String {
        format!("{}-{ordinal}", self.name_unchecked())
    }

    fn name_unchecked(&self) -> &str {
        self.metadata.name.as_deref().unwrap_or_default()
    }

    /// The desired member count; admission keeps it within 0..=1000.
    pub fn desired_replicas(&self) -> u32 {
        u32::try_from(self.spec.replicas.clamp(0, MAX_REPLICAS)).unwrap_or_default()
    }
}
