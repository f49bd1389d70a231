//! Admission rules that are built rather than written inline: those of `spec.training`, whose
//! bounds come from [`swarm_node_config::limits`] so that admission, the node's own check and the
//! peers' message limits agree; the patterns of Kubernetes names and quantities; and the rewrite
//! of integer formats to the two the API server knows.

use kube::core::Rule;
use schemars::Schema;
use serde_json::{Map, Value};
use swarm_node_config::limits;

/// A resource quantity as `resource.ParseQuantity` reads it, without a sign: `500m`, `2`, `10Gi`,
/// `1e3`.
pub const QUANTITY: &str =
    "^([0-9]+([.][0-9]*)?|[.][0-9]+)([KMGTPE]i|[numkMGTPE]|[eE][+-]?[0-9]+)?$";

/// A DNS subdomain (RFC 1123), as Kubernetes object names of most kinds must be.
pub const DNS_SUBDOMAIN: &str =
    "^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// A label value: empty, or alphanumerics with `-`, `_`, `.` inside.
pub const LABEL_VALUE: &str = "^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$";

/// An environment variable name every Kubernetes version accepts.
pub const ENV_NAME: &str = "^[-._a-zA-Z][-._a-zA-Z0-9]*$";

/// A Hugging Face repository id: `name` or `owner/name`, letters, digits, `-`, `_` and `.`.
pub const HUB_ID: &str = "^([A-Za-z0-9][-A-Za-z0-9_.]*/)?[A-Za-z0-9][-A-Za-z0-9_.]*$";

/// A hub revision: a branch, tag or commit (`main`, `v1.0`, `refs/pr/1`, 40 hex digits).
pub const HUB_REVISION: &str = "^[A-Za-z0-9][-A-Za-z0-9_./]*$";

/// Adds the rules of `spec.training` to its schema (a `schemars` transform on the field).
pub fn training(schema: &mut Schema) {
    for rule in training_rules() {
        kube::core::validate(schema, rule).expect("a rule serializes to JSON");
    }
}

/// `low <= self.<field> && self.<field> <= high`, with a message that names the bounds and why.
fn between(
    field: &str,
    low: impl std::fmt::Display,
    high: impl std::fmt::Display,
    why: &str,
) -> Rule {
    Rule::new(format!("self.{field} >= {low} && self.{field} <= {high}")).message(&*format!(
        "training.{field} must be between {low} and {high}{why}"
    ))
}

/// `low < self.<field> && self.<field> <= high`, for knobs that are meaningless at 0.
fn above_zero(field: &str, high: f64, why: &str) -> Rule {
    Rule::new(format!("self.{field} > 0.0 && self.{field} <= {high:?}")).message(&*format!(
        "training.{field} must be greater than 0 and at most {high}{why}"
    ))
}

fn training_rules() -> Vec<Rule> {
    let questions = limits::QUESTIONS_PER_ROUND;
    let group = limits::COMPLETIONS_PER_QUESTION;
    let tokens = limits::NEW_TOKENS;
    let group_tokens = limits::GROUP_TOKENS;
    let round_tokens = limits::ROUND_TOKENS;
    let message_kib = limits::MESSAGE_BYTES / 1024;
    let messages = limits::MESSAGES_PER_PEER_PER_ROUND;
    let per_message = limits::GROUPS_PER_MESSAGE;
    // The relations hold only once each factor is within its own bounds, so a spec that breaks a
    // bound gets one error, about that bound.
    let sizes_in_bounds = format!(
        "self.questionsPerRound >= 1 && self.questionsPerRound <= {questions} && \
         self.completionsPerQuestion >= 2 && self.completionsPerQuestion <= {group} && \
         self.maxNewTokens >= 1 && self.maxNewTokens <= {tokens}"
    );
    vec![
        between(
            "questionsPerRound",
            1,
            questions,
            &format!(": a round needs a question, and a member shares at most {messages} messages of {per_message} question groups per round"),
        ),
        Rule::new(format!("self.completionsPerQuestion >= 2 && self.completionsPerQuestion <= {group}"))
            .message(&*format!(
                "training.completionsPerQuestion (G) must be between 2 and {group}: a group of one completion has no advantage, and peers accept groups of at most {group}"
            )),
        between(
            "maxNewTokens",
            1,
            tokens,
            &format!(": a completion needs a token, and peers accept completions of at most {tokens}"),
        ),
        Rule::new(format!("!({sizes_in_bounds}) || self.completionsPerQuestion * self.maxNewTokens <= {group_tokens}"))
            .message(&*format!(
                "training.completionsPerQuestion × training.maxNewTokens must be at most {group_tokens} tokens: one question's completions must fit one rollout message of {message_kib} KiB; lower maxNewTokens or completionsPerQuestion"
            )),
        Rule::new(format!("!({sizes_in_bounds}) || self.completionsPerQuestion * self.maxNewTokens > {group_tokens} || self.questionsPerRound * self.completionsPerQuestion * self.maxNewTokens <= {round_tokens}"))
            .message(&*format!(
                "training.questionsPerRound × completionsPerQuestion × maxNewTokens must be at most {round_tokens} tokens: a round's completions must fit the {messages} messages of {message_kib} KiB a member may send per round; lower one of them"
            )),
        Rule::new("self.localRollouts + self.externalRollouts >= 1").message(
            "training.localRollouts + training.externalRollouts (I + J) must be at least 1: a round must train on something",
        ),
        Rule::new("self.localRollouts <= self.questionsPerRound").message(
            "training.localRollouts (I) must be at most training.questionsPerRound: a member trains on groups of its own questions",
        ),
        between(
            "externalRollouts",
            0,
            limits::EXTERNAL_ROLLOUTS,
            "",
        ),
        between(
            "microBatchSize",
            1,
            limits::MICRO_BATCH_SIZE,
            "",
        ),
        between(
            "difficulty",
            limits::DIFFICULTY.0,
            limits::DIFFICULTY.1,
            "",
        ),
        above_zero("learningRate", limits::LEARNING_RATE, ""),
        above_zero("temperature", limits::TEMPERATURE, ""),
        Rule::new(format!("self.klBeta >= 0.0 && self.klBeta <= {:?}", limits::KL_BETA)).message(
            &*format!("training.klBeta must be between 0 and {}", limits::KL_BETA),
        ),
        Rule::new("self.clipEpsilonLow > 0.0 && self.clipEpsilonLow < 1.0")
            .message("training.clipEpsilonLow must be between 0 and 1 (exclusive)"),
        Rule::new("self.clipEpsilonHigh > 0.0 && self.clipEpsilonHigh < 1.0")
            .message("training.clipEpsilonHigh must be between 0 and 1 (exclusive)"),
        above_zero("sharing.importanceCap", limits::IMPORTANCE_CAP, ""),
        above_zero("sharing.shapingGamma", limits::SHAPING_GAMMA, ""),
        Rule::new(format!(
            "!has(self.tasks) || self.tasks.all(t, t.weight <= {})",
            limits::TASK_WEIGHT
        ))
        .message(&*format!(
            "training.tasks weights must be at most {}",
            limits::TASK_WEIGHT
        )),
        Rule::new("!has(self.tasks) || size(self.tasks) == 0 || self.tasks.exists(t, t.weight > 0)")
            .message("training.tasks weights are all 0: give at least one family a positive weight"),
        Rule::new("!has(self.tasks) || self.tasks.all(t, self.tasks.filter(u, u.family == t.family).size() == 1)")
            .message("training.tasks lists a family more than once: give each family one weight"),
        Rule::new(format!(
            "!has(self.taskGroups) || self.taskGroups.all(g, g.tasks.all(t, t.weight <= {}) && g.tasks.exists(t, t.weight > 0))",
            limits::TASK_WEIGHT
        ))
        .message(&*format!(
            "every training.taskGroups entry needs a family with a positive weight, and weights of at most {}",
            limits::TASK_WEIGHT
        )),
        Rule::new("!has(self.taskGroups) || !has(self.tasks) || size(self.taskGroups) == 0 || size(self.tasks) == 0")
            .message("training.taskGroups replaces training.tasks: set one of them"),
        Rule::new("!has(self.taskGroups) || size(self.taskGroups) == 0 || !has(self.dataset)")
            .message("training.taskGroups and training.dataset are two sources of questions: set one of them"),
        Rule::new("!has(self.tasks) || size(self.tasks) == 0 || !has(self.dataset)")
            .message("training.tasks and training.dataset are two sources of questions: set one of them"),
        Rule::new("self.completionsPerQuestion == oldSelf.completionsPerQuestion").message(
            "training.completionsPerQuestion (G) is immutable: members accept only peer groups of exactly G completions, so running members would reject each other's rollouts",
        ),
    ]
}

/// Rewrites every integer `format` to `int32` or `int64`, the only two the API server recognizes
/// (it warns about `uint8`, `uint32` and `uint64`, which `schemars` gives unsigned fields). The
/// `minimum: 0` that `schemars` also gives them keeps the sign checked.
pub fn kubernetes_integer_formats(schema: &mut Schema) {
    if let Some(object) = schema.as_object_mut() {
        rewrite_integer_formats(object);
    }
}

fn rewrite_integer_formats(object: &mut Map<String, Value>) {
    // `Option<u64>` is `type: [integer, "null"]` until kube makes it `nullable`.
    let integer = match object.get("type") {
        Some(Value::String(kind)) => kind == "integer",
        Some(Value::Array(kinds)) => kinds.iter().any(|kind| kind == "integer"),
        _ => false,
    };
    if integer && let Some(Value::String(format)) = object.get_mut("format") {
        *format = match format.as_str() {
            "int8" | "int16" | "uint8" | "uint16" | "int32" => "int32",
            _ => "int64",
        }
        .to_owned();
    }
    for value in object.values_mut() {
        rewrite_nested(value);
    }
}

fn rewrite_nested(value: &mut Value) {
    match value {
        Value::Object(object) => rewrite_integer_formats(object),
        Value::Array(items) => items.iter_mut().for_each(rewrite_nested),
        _ => {}
    }
}

/// Environment variables the pod builder always sets on the node container (`HF_HOME` also on the
/// model's init container), as a CEL list: a `member.env` entry of the same name would be a
/// duplicate, which the API server rejects for the pod, not the Swarm.
pub const OPERATOR_ENV: &str =
    "['SWARM_MEMBER', 'POD_NAMESPACE', 'SWARM_IDENTITY_DIR', 'SWARM_CONFIG', 'HF_HOME']";

/// The variables the pod builder sets when `spec.telemetry` is given, as a CEL list.
pub const TELEMETRY_ENV: &str = "['OTEL_EXPORTER_OTLP_ENDPOINT', 'OTEL_EXPORTER_OTLP_PROTOCOL', \
     'OTEL_SERVICE_NAME', 'OTEL_RESOURCE_ATTRIBUTES', 'OTEL_METRIC_EXPORT_INTERVAL']";

/// Bounds the length of environment variable names (`EnvVar` has no bound of its own), so the API
/// server can bound the cost of the rule that checks them.
pub fn env_name_length(schema: &mut Schema) {
    set_max_length(schema, "/items/properties/name", 256);
}

/// Bounds a map of labels: at most 64 entries, values of at most 63 characters.
pub fn label_map_size(schema: &mut Schema) {
    schema.insert("maxProperties".into(), 64.into());
    set_max_length(schema, "/additionalProperties", 63);
}

/// Bounds a map of resource quantities: at most 32 entries.
pub fn quantity_map_size(schema: &mut Schema) {
    schema.insert("maxProperties".into(), 32.into());
    set_max_length(schema, "/additionalProperties", QUANTITY_LENGTH);
}

/// Bounds the length of a quantity.
pub fn quantity_length(schema: &mut Schema) {
    set_max_length(schema, "", QUANTITY_LENGTH);
}

/// Longer than any quantity a person writes, short enough to keep rules on it cheap.
const QUANTITY_LENGTH: u32 = 64;

fn set_max_length(schema: &mut Schema, pointer: &str, length: u32) {
    if let Some(Value::Object(object)) = schema.pointer_mut(pointer) {
        object.insert("maxLength".into(), length.into());
    }
}
