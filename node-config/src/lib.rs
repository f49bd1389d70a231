//! The node configuration file.
//!
//! The operator renders one [`NodeConfig`] per Swarm into the Swarm's ConfigMap (key [`CONFIG_FILE`]);
//! every member's `swarm-node` reads it from the mounted volume. The training section is the
//! same type the Swarm API embeds, so what a user writes in `spec.training` reaches the node as is.

use std::path::Path;

pub mod download;
pub mod limits;

use serde::{Deserialize, Serialize};

/// File name of the rendered configuration inside the ConfigMap and its mount.
pub const CONFIG_FILE: &str = "node.yaml";

/// The only configuration format version this crate reads and writes.
pub const CONFIG_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read node config {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("node config {path} is malformed: {source}")]
    Parse {
        path: String,
        source: serde_yaml_ng::Error,
    },
    #[error("node config {path} has version {found}, this node reads version {CONFIG_VERSION}")]
    Version { path: String, found: u32 },
    #[error("node config {path} is invalid: {reason}")]
    Invalid { path: String, reason: String },
    #[error("cannot render node config: {0}")]
    Render(#[source] serde_yaml_ng::Error),
}

/// Everything a member's node needs to know about its swarm.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeConfig {
    pub version: u32,
    pub swarm: SwarmRef,
    pub p2p: P2pConfig,
    pub model: ModelConfig,
    pub training: TrainingConfig,
    pub rounds: RoundsConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoints: Option<CheckpointConfig>,
    /// The swarm's ledger, once its contract is known: each member submits its reward and winners
    /// there from its own account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ledger: Option<LedgerConfig>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LedgerConfig {
    /// JSON-RPC endpoint; it may carry an API key, so nodes never log more than its host.
    pub rpc_url: String,
    pub chain_id: u64,
    /// The coordinator contract, `0x` and 40 hex digits.
    pub contract_address: String,
}

/// Which Swarm object this configuration was rendered from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SwarmRef {
    pub name: String,
    pub namespace: String,
    /// The Swarm's uid: names the swarm's gossip topic, so a recreated Swarm never mixes with the old one.
    pub uid: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct P2pConfig {
    pub port: u16,
    /// Multiaddrs of every member, `/dns4/<member>.<swarm>-peers.<ns>.svc/tcp/<port>/p2p/<peerId>`.
    #[serde(default)]
    pub bootstrap_peers: Vec<String>,
    /// Peers outside the cluster, as given in the Swarm spec.
    #[serde(default)]
    pub external_peers: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ModelConfig {
    /// Directory holding `config.json`, `*.safetensors` and `tokenizer.json`, when the weights are mounted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Hub model id, for clusters with egress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    pub dtype: Dtype,
}

/// Numeric type of the weights during training.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    #[default]
    Bf16,
    F16,
    F32,
}

/// The GRPO / SAPO hyper-parameters of a round. Embedded verbatim in the Swarm API as `spec.training`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrainingConfig {
    /// Questions each member samples per round.
    #[serde(default = "defaults::questions_per_round")]
    pub questions_per_round: u32,
    /// I: question groups of the member's own rollouts trained on per round.
    #[serde(default = "defaults::local_rollouts")]
    pub local_rollouts: u32,
    /// J: question groups adopted from peers per round.
    #[serde(default = "defaults::external_rollouts")]
    pub external_rollouts: u32,
    /// G: completions generated per question; a group needs at least two for an advantage.
    #[serde(default = "defaults::completions_per_question")]
    pub completions_per_question: u32,
    #[serde(default = "defaults::learning_rate")]
    pub learning_rate: f64,
    /// Lower clip bound ε_low of the surrogate ratio.
    #[serde(default = "defaults::clip_epsilon_low")]
    pub clip_epsilon_low: f64,
    /// Upper clip bound ε_high of the surrogate ratio.
    #[serde(default = "defaults::clip_epsilon_high")]
    pub clip_epsilon_high: f64,
    /// KL penalty weight β; 0 trains without a reference model.
    #[serde(default)]
    pub kl_beta: f64,
    #[serde(default = "defaults::max_new_tokens")]
    pub max_new_tokens: u32,
    /// Completions per forward/backward pass of a training step: bounds the step's memory, never
    /// changes its result.
    #[serde(default = "defaults::micro_batch_size")]
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 4096)))]
    pub micro_batch_size: u32,
    #[serde(default = "defaults::temperature")]
    pub temperature: f64,
    /// Base seed; each member mixes in its ordinal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Difficulty of procedural questions, 1 (easiest) to 5.
    #[serde(default = "defaults::difficulty")]
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 5)))]
    pub difficulty: u8,
    /// Procedural task families and their sampling weights; all families with equal weight when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "schema", schemars(length(max = 32)))]
    pub tasks: Vec<TaskWeight>,
    /// A heterogeneous swarm: member `k` (the ordinal ending its name) trains on the task mix of
    /// group `k mod len`, instead of `tasks`. Sharing can then carry a skill from the members that
    /// practise it to the others.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "schema", schemars(length(max = 32)))]
    pub task_groups: Vec<TaskGroup>,
    /// How a member trains on the rollouts its peers share.
    #[serde(default)]
    pub sharing: SharingConfig,
    /// A JSONL dataset (`question`, `answer`, optional `metadata` per line) instead of procedural tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<DatasetSource>,
}

impl Default for TrainingConfig {
    fn default() -> Self {
        Self {
            questions_per_round: defaults::questions_per_round(),
            local_rollouts: defaults::local_rollouts(),
            external_rollouts: defaults::external_rollouts(),
            completions_per_question: defaults::completions_per_question(),
            learning_rate: defaults::learning_rate(),
            clip_epsilon_low: defaults::clip_epsilon_low(),
            clip_epsilon_high: defaults::clip_epsilon_high(),
            kl_beta: 0.0,
            max_new_tokens: defaults::max_new_tokens(),
            micro_batch_size: defaults::micro_batch_size(),
            temperature: defaults::temperature(),
            seed: None,
            difficulty: defaults::difficulty(),
            tasks: Vec::new(),
            task_groups: Vec::new(),
            sharing: SharingConfig::default(),
            dataset: None,
        }
    }
}

impl TrainingConfig {
    /// The task mix of the member with this ordinal: its group's under `taskGroups`, else `tasks`.
    pub fn tasks_of(&self, ordinal: u64) -> &[TaskWeight] {
        match self.task_groups.len() {
            0 => &self.tasks,
            // The remainder is below the groups' count, a usize.
            groups => &self.task_groups[(ordinal % groups as u64) as usize].tasks,
        }
    }

    /// Every family some member trains on (in first-appearance order): what members are evaluated
    /// on. Empty when `tasks` is (all families) and there are no groups.
    pub fn all_tasks(&self) -> Vec<TaskFamily> {
        let mut families: Vec<TaskFamily> = Vec::new();
        let groups = self.task_groups.iter().flat_map(|g| &g.tasks);
        for weight in self.tasks.iter().chain(groups) {
            if !families.contains(&weight.family) {
                families.push(weight.family);
            }
        }
        families
    }
}

/// One task mix of a heterogeneous swarm.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskGroup {
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = 32)))]
    pub tasks: Vec<TaskWeight>,
}

/// How a member trains on its peers' completions, which another policy sampled.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SharingConfig {
    #[serde(default)]
    pub policy: SharingPolicy,
    /// `importance`: the most weight one peer token can get (C of the truncated ratio).
    #[serde(default = "defaults::importance_cap")]
    pub importance_cap: f64,
    /// `shaping`: γ of LUFFY's `p / (p + γ)`.
    #[serde(default = "defaults::shaping_gamma")]
    pub shaping_gamma: f64,
}

impl Default for SharingConfig {
    fn default() -> Self {
        Self {
            policy: SharingPolicy::default(),
            importance_cap: defaults::importance_cap(),
            shaping_gamma: defaults::shaping_gamma(),
        }
    }
}

/// The rule by which peers' completions enter a member's GRPO loss.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub enum SharingPolicy {
    /// As the member's own samples (SAPO as published).
    Plain,
    /// Only completions with a positive advantage: learn from peers' successes, never push down
    /// text the member itself may rarely produce.
    #[default]
    Positive,
    /// Each token weighted by the truncated ratio `min(π_member / π_sender, importanceCap)`,
    /// from the log-probabilities the sender ships; completions without them are left out.
    Importance,
    /// LUFFY's policy shaping: `-A · p / (p + shapingGamma)` with `p` the member's probability,
    /// no clipping.
    Shaping,
}

mod defaults {
    pub fn questions_per_round() -> u32 {
        8
    }
    pub fn local_rollouts() -> u32 {
        4
    }
    pub fn external_rollouts() -> u32 {
        4
    }
    pub fn completions_per_question() -> u32 {
        8
    }
    pub fn learning_rate() -> f64 {
        1e-6
    }
    pub fn clip_epsilon_low() -> f64 {
        0.2
    }
    pub fn clip_epsilon_high() -> f64 {
        0.28
    }
    pub fn max_new_tokens() -> u32 {
        256
    }
    pub fn micro_batch_size() -> u32 {
        8
    }
    pub fn temperature() -> f64 {
        1.0
    }
    pub fn difficulty() -> u8 {
        2
    }
    pub fn task_weight() -> u32 {
        1
    }
    pub fn importance_cap() -> f64 {
        2.0
    }
    pub fn shaping_gamma() -> f64 {
        0.1
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskWeight {
    pub family: TaskFamily,
    #[serde(default = "defaults::task_weight")]
    pub weight: u32,
}

/// Procedural task families with exact verifiers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum TaskFamily {
    BasicArithmetic,
    BaseConversion,
    DecimalArithmetic,
    FractionSimplification,
    CalendarArithmetic,
    PropositionalLogic,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DatasetSource {
    /// Path of the JSONL file inside the model volume.
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = 1024)))]
    pub path: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RoundsConfig {
    /// When round 0 began (the Swarm's creation): with the duration, every member computes the same
    /// round number from its own clock, without a coordinator.
    pub start_time: jiff::Timestamp,
    pub duration_seconds: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rounds: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CheckpointConfig {
    pub dir: String,
    pub every_rounds: u32,
}

impl NodeConfig {
    pub fn to_yaml(&self) -> Result<String, ConfigError> {
        serde_yaml_ng::to_string(self).map_err(ConfigError::Render)
    }

    /// Parses and checks a rendered configuration; `origin` names it in errors.
    pub fn from_yaml(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let config: Self = serde_yaml_ng::from_str(text).map_err(|source| ConfigError::Parse {
            path: origin.to_owned(),
            source,
        })?;
        if config.version != CONFIG_VERSION {
            return Err(ConfigError::Version {
                path: origin.to_owned(),
                found: config.version,
            });
        }
        config.check().map_err(|reason| ConfigError::Invalid {
            path: origin.to_owned(),
            reason,
        })?;
        Ok(config)
    }

    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: origin.clone(),
            source,
        })?;
        Self::from_yaml(&text, &origin)
    }

    /// The invariants the Swarm API enforces at admission, checked again because a node may be
    /// started by hand with a file no API server has seen.
    fn check(&self) -> Result<(), String> {
        self.training.check()?;
        if self.model.path.is_none() && self.model.hub_id.is_none() {
            return Err("model needs a path or a hubId".into());
        }
        if self.rounds.duration_seconds == 0 {
            return Err("rounds.durationSeconds must be at least 1".into());
        }
        Ok(())
    }
}

impl TrainingConfig {
    /// The rules the Swarm API's admission applies to `spec.training`, with the same bounds
    /// ([`limits`]); the operator's tests hold the two to agreeing case by case.
    pub fn check(&self) -> Result<(), String> {
        fn within<T: PartialOrd + std::fmt::Display>(
            field: &str,
            value: T,
            low: T,
            high: T,
        ) -> Result<(), String> {
            if low <= value && value <= high {
                Ok(())
            } else {
                Err(format!(
                    "training.{field} must be between {low} and {high}, not {value}"
                ))
            }
        }
        fn positive(field: &str, value: f64, high: f64) -> Result<(), String> {
            if value > 0.0 && value <= high {
                Ok(())
            } else {
                Err(format!(
                    "training.{field} must be greater than 0 and at most {high}, not {value}"
                ))
            }
        }
        let questions = self.questions_per_round;
        let group = self.completions_per_question;
        let tokens = self.max_new_tokens;
        within(
            "questionsPerRound",
            questions,
            1,
            limits::QUESTIONS_PER_ROUND,
        )?;
        within(
            "completionsPerQuestion",
            group,
            2,
            limits::COMPLETIONS_PER_QUESTION,
        )?;
        within("maxNewTokens", tokens, 1, limits::NEW_TOKENS)?;
        if group * tokens > limits::GROUP_TOKENS {
            return Err(format!(
                "training.completionsPerQuestion × maxNewTokens must be at most {} tokens: one question's completions must fit one rollout message",
                limits::GROUP_TOKENS
            ));
        }
        if questions * group * tokens > limits::ROUND_TOKENS {
            return Err(format!(
                "training.questionsPerRound × completionsPerQuestion × maxNewTokens must be at most {} tokens: a round's completions must fit the messages a member may send",
                limits::ROUND_TOKENS
            ));
        }
        if self.local_rollouts + self.external_rollouts == 0 {
            return Err(
                "training.localRollouts + training.externalRollouts must be at least 1".into(),
            );
        }
        if self.local_rollouts > questions {
            return Err("training.localRollouts must be at most training.questionsPerRound".into());
        }
        within(
            "externalRollouts",
            self.external_rollouts,
            0,
            limits::EXTERNAL_ROLLOUTS,
        )?;
        within(
            "microBatchSize",
            self.micro_batch_size,
            1,
            limits::MICRO_BATCH_SIZE,
        )?;
        within(
            "difficulty",
            self.difficulty,
            limits::DIFFICULTY.0,
            limits::DIFFICULTY.1,
        )?;
        positive("learningRate", self.learning_rate, limits::LEARNING_RATE)?;
        positive("temperature", self.temperature, limits::TEMPERATURE)?;
        within("klBeta", self.kl_beta, 0.0, limits::KL_BETA)?;
        for (name, value) in [
            ("clipEpsilonLow", self.clip_epsilon_low),
            ("clipEpsilonHigh", self.clip_epsilon_high),
        ] {
            if !(value > 0.0 && value < 1.0) {
                return Err(format!(
                    "training.{name} must be between 0 and 1 (exclusive)"
                ));
            }
        }
        let sharing = &self.sharing;
        positive(
            "sharing.importanceCap",
            sharing.importance_cap,
            limits::IMPORTANCE_CAP,
        )?;
        positive(
            "sharing.shapingGamma",
            sharing.shaping_gamma,
            limits::SHAPING_GAMMA,
        )?;
        check_task_mix("tasks", &self.tasks)?;
        for group in &self.task_groups {
            if group.tasks.is_empty() {
                return Err("every training.taskGroups entry needs at least one task".into());
            }
            check_task_mix("taskGroups[].tasks", &group.tasks)?;
        }
        let sources = [
            !self.tasks.is_empty(),
            !self.task_groups.is_empty(),
            self.dataset.is_some(),
        ];
        if sources.iter().filter(|set| **set).count() > 1 {
            return Err(
                "training.tasks, training.taskGroups and training.dataset are sources of questions: set one of them"
                    .into(),
            );
        }
        Ok(())
    }
}

/// A task mix is empty (all families) or gives each family it names one weight, some positive.
fn check_task_mix(field: &str, tasks: &[TaskWeight]) -> Result<(), String> {
    if let Some(task) = tasks.iter().find(|t| t.weight > limits::TASK_WEIGHT) {
        return Err(format!(
            "training.{field}: the weight of {:?} must be at most {}",
            task.family,
            limits::TASK_WEIGHT
        ));
    }
    if !tasks.is_empty() && tasks.iter().all(|t| t.weight == 0) {
        return Err(format!(
            "training.{field} weights are all 0: give at least one family a positive weight"
        ));
    }
    for (index, task) in tasks.iter().enumerate() {
        if tasks[..index].iter().any(|t| t.family == task.family) {
            return Err(format!(
                "training.{field} lists {:?} more than once",
                task.family
            ));
        }
    }
    Ok(())
}

/// A complete configuration tests start from (feature `testing`): Swarm `default/demo`, one
/// bootstrap peer, a model on a path in bf16, default training, 60-s rounds from 2026-11-25 for
/// 100 rounds, checkpoints every 10 rounds, no ledger.
#[cfg(any(test, feature = "testing"))]
impl NodeConfig {
    pub fn sample() -> NodeConfig {
        NodeConfig {
            version: CONFIG_VERSION,
            swarm: SwarmRef {
                name: "demo".into(),
                namespace: "default".into(),
                uid: "0b9c6a8e-1111-2222-3333-444455556666".into(),
            },
            p2p: P2pConfig {
                port: 4001,
                bootstrap_peers: vec![
                    "/dns4/demo-0.demo-peers.default.svc/tcp/4001/p2p/16Uiu2HAm".into(),
                ],
                external_peers: vec![],
            },
            model: ModelConfig {
                path: Some("/models/qwen".into()),
                hub_id: None,
                revision: None,
                dtype: Dtype::Bf16,
            },
            training: TrainingConfig::default(),
            rounds: RoundsConfig {
                start_time: "2026-11-25T00:00:00Z".parse().expect("a time"),
                duration_seconds: 60,
                max_rounds: Some(100),
            },
            checkpoints: Some(CheckpointConfig {
                dir: "/var/lib/swarm-node/checkpoints".into(),
                every_rounds: 10,
            }),
            ledger: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_yaml() {
        let config = NodeConfig::sample();
        let text = config.to_yaml().unwrap();
        assert_eq!(NodeConfig::from_yaml(&text, "test").unwrap(), config);
    }

    #[test]
    fn training_defaults_fill_missing_fields() {
        let training: TrainingConfig = serde_yaml_ng::from_str("localRollouts: 2").unwrap();
        assert_eq!(training.local_rollouts, 2);
        assert_eq!(training.completions_per_question, 8);
        assert_eq!(training.clip_epsilon_high, 0.28);
    }

    #[test]
    fn rejects_unknown_version() {
        let mut config = NodeConfig::sample();
        config.version = 2;
        let text = config.to_yaml().unwrap();
        let err = NodeConfig::from_yaml(&text, "node.yaml").unwrap_err();
        assert!(
            matches!(err, ConfigError::Version { found: 2, .. }),
            "{err}"
        );
    }

    #[test]
    fn rejects_unknown_fields() {
        let text = NodeConfig::sample().to_yaml().unwrap() + "surprise: 1\n";
        let err = NodeConfig::from_yaml(&text, "node.yaml").unwrap_err();
        assert!(err.to_string().contains("surprise"), "{err}");
    }

    #[test]
    fn rejects_a_group_of_one() {
        let mut config = NodeConfig::sample();
        config.training.completions_per_question = 1;
        let err = NodeConfig::from_yaml(&config.to_yaml().unwrap(), "node.yaml").unwrap_err();
        assert!(err.to_string().contains("completionsPerQuestion"), "{err}");
    }

    #[test]
    fn rejects_no_rollouts_at_all() {
        let mut config = NodeConfig::sample();
        config.training.local_rollouts = 0;
        config.training.external_rollouts = 0;
        let err = NodeConfig::from_yaml(&config.to_yaml().unwrap(), "node.yaml").unwrap_err();
        assert!(err.to_string().contains("localRollouts"), "{err}");
    }

    #[test]
    fn rejects_clip_outside_unit_interval() {
        let mut config = NodeConfig::sample();
        config.training.clip_epsilon_high = 1.0;
        let err = NodeConfig::from_yaml(&config.to_yaml().unwrap(), "node.yaml").unwrap_err();
        assert!(err.to_string().contains("clipEpsilonHigh"), "{err}");
    }

    #[test]
    fn task_groups_give_members_their_mix_by_ordinal() {
        let mut training = TrainingConfig::default();
        let group = |family| TaskGroup {
            tasks: vec![TaskWeight { family, weight: 1 }],
        };
        training.task_groups = vec![
            group(TaskFamily::BasicArithmetic),
            group(TaskFamily::FractionSimplification),
        ];
        assert_eq!(training.tasks_of(0)[0].family, TaskFamily::BasicArithmetic);
        assert_eq!(
            training.tasks_of(3)[0].family,
            TaskFamily::FractionSimplification
        );
        assert_eq!(
            training.all_tasks(),
            [
                TaskFamily::BasicArithmetic,
                TaskFamily::FractionSimplification
            ]
        );
        let mut config = NodeConfig::sample();
        config.training = training.clone();
        config.training.tasks = vec![TaskWeight {
            family: TaskFamily::BaseConversion,
            weight: 1,
        }];
        let err = NodeConfig::from_yaml(&config.to_yaml().unwrap(), "node.yaml").unwrap_err();
        assert!(err.to_string().contains("taskGroups"), "{err}");
        training.task_groups.push(TaskGroup { tasks: Vec::new() });
        config.training = training;
        let err = NodeConfig::from_yaml(&config.to_yaml().unwrap(), "node.yaml").unwrap_err();
        assert!(err.to_string().contains("at least one task"), "{err}");
    }

    #[test]
    fn sharing_defaults_and_bounds() {
        let training: TrainingConfig =
            serde_yaml_ng::from_str("sharing: {policy: importance}").unwrap();
        assert_eq!(training.sharing.policy, SharingPolicy::Importance);
        assert_eq!(training.sharing.importance_cap, 2.0);
        let mut config = NodeConfig::sample();
        config.training.sharing.shaping_gamma = 0.0;
        let err = NodeConfig::from_yaml(&config.to_yaml().unwrap(), "node.yaml").unwrap_err();
        assert!(err.to_string().contains("shapingGamma"), "{err}");
        assert!(serde_yaml_ng::from_str::<TrainingConfig>("sharing: {policy: nope}").is_err());
    }

    #[test]
    fn missing_file_names_the_path() {
        let err = NodeConfig::load(Path::new("/nonexistent/node.yaml")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/node.yaml"), "{err}");
    }
}
