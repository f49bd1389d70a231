//! Every admission rule of the Swarm and SwarmMember CRDs, evaluated client-side with the same CEL the
//! API server runs: each valid case passes, each invalid case fails with its own message.

use k8s_openapi::api::core::v1::EnvVar;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use swarm_node_config::{
    DatasetSource, Dtype, SharingPolicy, TaskFamily, TaskGroup, TaskWeight, TrainingConfig,
};
use swarm_operator::api::*;

fn swarm(name: &str) -> Swarm {
    Swarm {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            ..Default::default()
        },
        spec: SwarmSpec {
            replicas: 4,
            member: MemberTemplate::default(),
            model: ModelSpec {
                source: ModelSource {
                    pvc: Some(PvcModelSource {
                        claim_name: "models".into(),
                        path: None,
                    }),
                    ..Default::default()
                },
                dtype: Dtype::Bf16,
            },
            training: TrainingConfig::default(),
            rounds: RoundsSpec::default(),
            p2p: P2pSpec::default(),
            checkpoints: None,
            identity: IdentitySpec::default(),
            ledger: None,
            telemetry: None,
        },
        status: None,
    }
}

fn messages(result: Result<(), kube::core::cel::ValidationErrors>) -> Vec<String> {
    match result {
        Ok(()) => vec![],
        Err(errors) => errors.into_vec().into_iter().map(|e| e.message).collect(),
    }
}

/// Asserts that exactly one rule fails, with a message containing `expected`.
fn rejected(swarm: &Swarm, expected: &str) {
    let found = messages(swarm.validate_cel());
    assert!(
        found.len() == 1 && found[0].contains(expected),
        "expected one error containing {expected:?}, got {found:?}"
    );
}

fn accepted(swarm: &Swarm) {
    let found = messages(swarm.validate_cel());
    assert!(found.is_empty(), "expected no errors, got {found:?}");
}

#[test]
fn a_plain_swarm_is_valid() {
    accepted(&swarm("demo"));
}

#[test]
fn replicas_are_bounded() {
    for ok in [0, 1, 1000] {
        let mut s = swarm("demo");
        s.spec.replicas = ok;
        accepted(&s);
    }
    for bad in [-1, 1001] {
        let mut s = swarm("demo");
        s.spec.replicas = bad;
        rejected(&s, "replicas must be between 0 and 1000");
    }
}

#[test]
fn a_group_needs_two_completions() {
    let mut s = swarm("demo");
    s.spec.training.completions_per_question = 2;
    accepted(&s);
    s.spec.training.completions_per_question = 1;
    rejected(&s, "completionsPerQuestion (G) must be between 2 and 64");
    s.spec.training.completions_per_question = 65;
    rejected(&s, "completionsPerQuestion (G) must be between 2 and 64");
}

#[test]
fn a_round_trains_on_local_or_external_rollouts() {
    let mut s = swarm("demo");
    s.spec.training.local_rollouts = 0;
    s.spec.training.external_rollouts = 1;
    accepted(&s);
    s.spec.training.external_rollouts = 0;
    rejected(&s, "(I + J) must be at least 1");
}

#[test]
fn learning_rate_is_positive() {
    let mut s = swarm("demo");
    s.spec.training.learning_rate = 0.0;
    rejected(&s, "learningRate must be greater than 0");
    s.spec.training.learning_rate = -1e-6;
    rejected(&s, "learningRate must be greater than 0");
}

#[test]
fn clip_bounds_lie_strictly_between_zero_and_one() {
    for (low, high, field) in [
        (0.0, 0.28, "clipEpsilonLow"),
        (1.0, 0.28, "clipEpsilonLow"),
        (0.2, 0.0, "clipEpsilonHigh"),
        (0.2, 1.5, "clipEpsilonHigh"),
    ] {
        let mut s = swarm("demo");
        s.spec.training.clip_epsilon_low = low;
        s.spec.training.clip_epsilon_high = high;
        rejected(
            &s,
            &format!("training.{field} must be between 0 and 1 (exclusive)"),
        );
    }
    let mut s = swarm("demo");
    s.spec.training.clip_epsilon_low = 0.1;
    s.spec.training.clip_epsilon_high = 0.9;
    accepted(&s);
}

#[test]
fn kl_weight_and_temperature_are_sane() {
    let mut s = swarm("demo");
    s.spec.training.kl_beta = -0.1;
    rejected(&s, "klBeta must be between 0 and 100");
    let mut s = swarm("demo");
    s.spec.training.temperature = 0.0;
    rejected(&s, "temperature must be greater than 0 and at most 10");
    s.spec.training.temperature = 11.0;
    rejected(&s, "temperature must be greater than 0 and at most 10");
}

#[test]
fn sharing_knobs_are_positive() {
    let mut s = swarm("demo");
    s.spec.training.sharing.importance_cap = 0.0;
    rejected(&s, "importanceCap must be greater than 0");
    let mut s = swarm("demo");
    s.spec.training.sharing.shaping_gamma = -1.0;
    rejected(&s, "shapingGamma must be greater than 0");
    let mut s = swarm("demo");
    s.spec.training.sharing.policy = SharingPolicy::Importance;
    s.spec.training.sharing.importance_cap = 1.5;
    accepted(&s);
}

#[test]
fn task_groups_exclude_tasks_and_a_dataset() {
    let weight = |family| TaskWeight { family, weight: 1 };
    let mut s = swarm("demo");
    s.spec.training.task_groups = vec![
        TaskGroup {
            tasks: vec![weight(TaskFamily::BasicArithmetic)],
        },
        TaskGroup {
            tasks: vec![weight(TaskFamily::FractionSimplification)],
        },
    ];
    accepted(&s);
    let mut with_tasks = s.clone();
    with_tasks.spec.training.tasks = vec![weight(TaskFamily::BaseConversion)];
    rejected(&with_tasks, "taskGroups replaces training.tasks");
    let mut with_dataset = s;
    with_dataset.spec.training.dataset = Some(DatasetSource {
        path: "questions.jsonl".into(),
    });
    rejected(&with_dataset, "two sources of questions");
}

#[test]
fn swarm_name_leaves_room_for_derived_names() {
    let longest = "a".repeat(50);
    accepted(&swarm(&longest));
    let member_secret = format!("{longest}-999-identity");
    assert_eq!(member_secret.len(), 63);
    rejected(&swarm(&"a".repeat(51)), "at most 50 characters");
}

#[test]
fn swarm_name_is_a_dns_label_starting_with_a_letter() {
    rejected(
        &swarm("7swarm"),
        "must be a DNS label that starts with a letter",
    );
    rejected(
        &swarm("my.swarm"),
        "must be a DNS label that starts with a letter",
    );
    rejected(
        &swarm("swarm-"),
        "must be a DNS label that starts with a letter",
    );
    accepted(&swarm("swarm-7"));
}

#[test]
fn model_source_names_exactly_one_place() {
    let mut s = swarm("demo");
    s.spec.model.source.hub = Some(HubModelSource {
        id: "Qwen/Qwen2.5-0.5B-Instruct".into(),
        revision: None,
        token_secret: None,
    });
    rejected(&s, "exactly one of pvc, image or hub");
    s.spec.model.source = ModelSource::default();
    rejected(&s, "exactly one of pvc, image or hub");
}

#[test]
fn member_template_fields_are_checked() {
    let mut s = swarm("demo");
    s.spec.member.resources.gpus = Some(17);
    rejected(&s, "gpus must be between 0 and 16");
    let mut s = swarm("demo");
    s.spec.member.image_pull_policy = Some("Sometimes".into());
    rejected(&s, "imagePullPolicy must be Always, IfNotPresent or Never");
}

#[test]
fn ports_rounds_and_peers_are_checked() {
    let mut s = swarm("demo");
    s.spec.p2p.port = 80;
    rejected(&s, "p2p.port must be between 1024 and 65535");
    let mut s = swarm("demo");
    s.spec.p2p.bootstrap_peers = vec!["peer.example.com:4001".into()];
    rejected(&s, "p2p.bootstrapPeers must be multiaddrs");
    let mut s = swarm("demo");
    s.spec.rounds.duration_seconds = 0;
    rejected(&s, "rounds.durationSeconds must be between 1 and 86400");
    let mut s = swarm("demo");
    s.spec.rounds.max_rounds = Some(0);
    rejected(&s, "rounds.maxRounds must be at least 1");
}

#[test]
fn round_sizes_stay_within_what_peers_accept() {
    let with = |questions, group, tokens| {
        let mut s = swarm("demo");
        s.spec.training.questions_per_round = questions;
        s.spec.training.completions_per_question = group;
        s.spec.training.max_new_tokens = tokens;
        s.spec.training.local_rollouts = questions.min(4);
        s
    };
    accepted(&with(1, 2, 1));
    accepted(&with(256, 2, 448));
    accepted(&with(8, 64, 448));
    accepted(&with(4, 7, 4096));
    rejected(
        &with(0, 8, 256),
        "questionsPerRound must be between 1 and 256",
    );
    rejected(
        &with(257, 2, 16),
        "questionsPerRound must be between 1 and 256",
    );
    rejected(&with(8, 8, 0), "maxNewTokens must be between 1 and 4096");
    rejected(
        &with(8, 8, 100_000),
        "maxNewTokens must be between 1 and 4096",
    );
    rejected(
        &with(8, 8, 4096),
        "completionsPerQuestion × training.maxNewTokens must be at most 28672 tokens",
    );
    rejected(
        &with(64, 16, 512),
        "questionsPerRound × completionsPerQuestion × maxNewTokens must be at most 229376 tokens",
    );
    let mut s = swarm("demo");
    s.spec.training.local_rollouts = 9;
    rejected(
        &s,
        "localRollouts (I) must be at most training.questionsPerRound",
    );
    let mut s = swarm("demo");
    s.spec.training.external_rollouts = 1025;
    rejected(&s, "externalRollouts must be between 0 and 1024");
}

/// A change to a Swarm's training settings.
type Change = fn(&mut TrainingConfig);

#[test]
fn every_training_knob_has_bounds() {
    let cases: [(Change, &str); 6] = [
        (
            |t| t.micro_batch_size = 0,
            "microBatchSize must be between 1 and 4096",
        ),
        (|t| t.difficulty = 6, "difficulty must be between 1 and 5"),
        (
            |t| t.learning_rate = 2.0,
            "learningRate must be greater than 0 and at most 1",
        ),
        (|t| t.kl_beta = 101.0, "klBeta must be between 0 and 100"),
        (
            |t| t.sharing.importance_cap = 1000.0,
            "importanceCap must be greater than 0 and at most 100",
        ),
        (
            |t| t.sharing.shaping_gamma = 20.0,
            "shapingGamma must be greater than 0 and at most 10",
        ),
    ];
    for (change, message) in cases {
        let mut s = swarm("demo");
        change(&mut s.spec.training);
        rejected(&s, message);
    }
}

#[test]
fn a_task_mix_weighs_each_family_once_and_something_positively() {
    let weight = |family, weight| TaskWeight { family, weight };
    let mut s = swarm("demo");
    s.spec.training.tasks = vec![
        weight(TaskFamily::BasicArithmetic, 0),
        weight(TaskFamily::BaseConversion, 3),
    ];
    accepted(&s);
    s.spec.training.tasks[1].weight = 0;
    rejected(&s, "training.tasks weights are all 0");
    s.spec.training.tasks[1] = weight(TaskFamily::BasicArithmetic, 1);
    rejected(&s, "training.tasks lists a family more than once");
    s.spec.training.tasks = vec![weight(TaskFamily::BasicArithmetic, 1001)];
    rejected(&s, "training.tasks weights must be at most 1000");
    let mut s = swarm("demo");
    s.spec.training.task_groups = vec![TaskGroup {
        tasks: vec![weight(TaskFamily::BasicArithmetic, 0)],
    }];
    rejected(
        &s,
        "every training.taskGroups entry needs a family with a positive weight",
    );
    let mut s = swarm("demo");
    s.spec.training.tasks = vec![weight(TaskFamily::BasicArithmetic, 1)];
    s.spec.training.dataset = Some(DatasetSource {
        path: "questions.jsonl".into(),
    });
    rejected(
        &s,
        "training.tasks and training.dataset are two sources of questions",
    );
}

/// Admission (CEL, in the API server) and the node (`TrainingConfig::check`, on a file no API
/// server may have seen) derive their rules from the same limits; they must agree on every case.
#[test]
fn admission_and_the_node_agree_on_training() {
    let cases: Vec<(&str, Change)> = vec![
        ("defaults", |_| {}),
        ("no questions", |t| t.questions_per_round = 0),
        ("most questions", |t| {
            t.questions_per_round = 256;
            t.max_new_tokens = 16;
        }),
        ("too many questions", |t| t.questions_per_round = 257),
        ("G of one", |t| t.completions_per_question = 1),
        ("largest G", |t| {
            t.completions_per_question = 64;
            t.max_new_tokens = 448;
        }),
        ("G over the limit", |t| t.completions_per_question = 65),
        ("no tokens", |t| t.max_new_tokens = 0),
        ("a group over one message", |t| {
            t.completions_per_question = 16;
            t.max_new_tokens = 2048;
        }),
        ("a group just within one message", |t| {
            t.completions_per_question = 14;
            t.max_new_tokens = 2048;
        }),
        ("a round over its messages", |t| {
            t.questions_per_round = 64;
            t.completions_per_question = 16;
            t.max_new_tokens = 512;
        }),
        ("more local groups than questions", |t| t.local_rollouts = 9),
        ("nothing to train on", |t| {
            t.local_rollouts = 0;
            t.external_rollouts = 0;
        }),
        ("no micro-batch", |t| t.micro_batch_size = 0),
        ("difficulty 0", |t| t.difficulty = 0),
        ("learning rate 0", |t| t.learning_rate = 0.0),
        ("learning rate 1", |t| t.learning_rate = 1.0),
        ("temperature 10", |t| t.temperature = 10.0),
        ("temperature 10.5", |t| t.temperature = 10.5),
        ("negative KL", |t| t.kl_beta = -1.0),
        ("clip 1", |t| t.clip_epsilon_high = 1.0),
        ("cap 0", |t| t.sharing.importance_cap = 0.0),
        ("γ 10", |t| t.sharing.shaping_gamma = 10.0),
        ("weights all 0", |t| {
            t.tasks = vec![TaskWeight {
                family: TaskFamily::BasicArithmetic,
                weight: 0,
            }]
        }),
        ("a family twice", |t| {
            t.tasks = vec![
                TaskWeight {
                    family: TaskFamily::BasicArithmetic,
                    weight: 1,
                };
                2
            ]
        }),
        ("a dataset and tasks", |t| {
            t.tasks = vec![TaskWeight {
                family: TaskFamily::BasicArithmetic,
                weight: 1,
            }];
            t.dataset = Some(DatasetSource {
                path: "q.jsonl".into(),
            });
        }),
    ];
    for (what, change) in cases {
        let mut s = swarm("demo");
        change(&mut s.spec.training);
        let admission = messages(s.validate_cel());
        let node = s.spec.training.check();
        assert_eq!(
            admission.is_empty(),
            node.is_ok(),
            "{what}: admission says {admission:?}, the node says {node:?}"
        );
    }
}

#[test]
fn names_images_quantities_and_env_are_checked() {
    let mut s = swarm("demo");
    s.spec.member.image = Some(String::new());
    rejected(&s, "member.image must be an image reference");
    s.spec.member.image = Some("registry.example.com/swarm node:1".into());
    rejected(&s, "member.image must be an image reference");
    s.spec.member.image = Some("registry.example.com/swarm-node:1".into());
    accepted(&s);

    let mut s = swarm("demo");
    s.spec.member.resources.requests = Some(
        [
            ("cpu".to_owned(), Quantity("500m".into())),
            ("memory".to_owned(), Quantity("4Gi".into())),
            ("nvidia.com/gpu".to_owned(), Quantity("1".into())),
            ("ephemeral-storage".to_owned(), Quantity("1.5e9".into())),
        ]
        .into(),
    );
    accepted(&s);
    s.spec.member.resources.requests = Some([("cpu".to_owned(), Quantity("two".into()))].into());
    rejected(&s, "member.resources.requests values must be quantities");
    let mut s = swarm("demo");
    s.spec.member.resources.limits = Some([("memory".to_owned(), Quantity("-1Gi".into()))].into());
    rejected(&s, "member.resources.limits values must be quantities");

    let mut s = swarm("demo");
    s.spec.checkpoints = Some(CheckpointSpec {
        storage_class_name: None,
        size: Quantity("0Gi".into()),
        every_rounds: 10,
    });
    rejected(&s, "checkpoints.size must be a storage size greater than 0");
    s.spec.checkpoints.as_mut().unwrap().size = Quantity("10 GB".into());
    rejected(&s, "checkpoints.size must be a storage size greater than 0");
    s.spec.checkpoints.as_mut().unwrap().size = Quantity("0.5Gi".into());
    accepted(&s);

    let env = |name: &str| EnvVar {
        name: name.into(),
        value: Some("1".into()),
        value_from: None,
    };
    let mut s = swarm("demo");
    s.spec.member.env = Some(vec![env("RUST_LOG"), env("my.setting-2")]);
    accepted(&s);
    s.spec.member.env = Some(vec![env("1ST")]);
    rejected(&s, "member.env names must be letters");
    s.spec.member.env = Some(vec![env("MY VAR")]);
    rejected(&s, "member.env names must be letters");
    s.spec.member.env = Some(vec![env("RUST_LOG"), env("RUST_LOG")]);
    rejected(&s, "member.env names must be unique");
    for name in [
        "SWARM_MEMBER",
        "POD_NAMESPACE",
        "SWARM_IDENTITY_DIR",
        "SWARM_CONFIG",
        "HF_HOME",
    ] {
        s.spec.member.env = Some(vec![env("RUST_LOG"), env(name)]);
        rejected(&s, "member.env may not set SWARM_MEMBER");
    }
    // The telemetry variables are the user's own without spec.telemetry, the operator's with it.
    s.spec.member.env = Some(vec![env("OTEL_SERVICE_NAME")]);
    accepted(&s);
    s.spec.telemetry = Some(TelemetrySpec {
        otlp_endpoint: "http://collector:4318".into(),
        metric_export_interval_seconds: 15,
    });
    rejected(&s, "spec.member.env may not set the OTEL_* variables");
    s.spec.member.env = Some(vec![env("OTEL_TRACES_SAMPLER")]);
    accepted(&s);
    // HF_TOKEN likewise, with and without the hub's token Secret.
    let mut s = swarm("demo");
    s.spec.model.source = ModelSource {
        hub: Some(HubModelSource {
            id: "Qwen/Qwen2.5-0.5B-Instruct".into(),
            revision: None,
            token_secret: None,
        }),
        ..Default::default()
    };
    s.spec.member.env = Some(vec![env("HF_TOKEN")]);
    accepted(&s);
    s.spec.model.source.hub.as_mut().unwrap().token_secret = Some(HubTokenSecret {
        name: "hf".into(),
        key: "token".into(),
    });
    rejected(&s, "spec.member.env may not set HF_TOKEN");

    let mut s = swarm("demo");
    s.spec.member.runtime_class_name = Some("Nvidia_GPU".into());
    rejected(&s, "member.runtimeClassName must name a RuntimeClass");
    let mut s = swarm("demo");
    s.spec.member.priority_class_name = Some("high priority".into());
    rejected(&s, "member.priorityClassName must name a PriorityClass");
    let mut s = swarm("demo");
    s.spec.member.node_selector = Some([("gpu".to_owned(), "a100 80g".to_owned())].into());
    rejected(&s, "member.nodeSelector values must be label values");
    s.spec.member.node_selector =
        Some([("nvidia.com/gpu.product".to_owned(), "H100".to_owned())].into());
    accepted(&s);
}

#[test]
fn model_sources_are_well_formed() {
    let hub = |id: &str, revision: Option<&str>| {
        let mut s = swarm("demo");
        s.spec.model.source = ModelSource {
            hub: Some(HubModelSource {
                id: id.into(),
                revision: revision.map(Into::into),
                token_secret: None,
            }),
            ..Default::default()
        };
        s
    };
    accepted(&hub("Qwen/Qwen2.5-0.5B-Instruct", Some("main")));
    accepted(&hub("gpt2", Some("refs/pr/1")));
    rejected(
        &hub("not a repo id!", None),
        "model.source.hub.id must be a hub repository id",
    );
    rejected(
        &hub("a/b/c", None),
        "model.source.hub.id must be a hub repository id",
    );
    rejected(
        &hub("org--x/model", None),
        "model.source.hub.id must be a hub repository id",
    );
    rejected(
        &hub("Qwen/Qwen2.5-0.5B", Some("main branch")),
        "model.source.hub.revision must be a branch, tag or commit",
    );
    let mut private = hub("org/private-model", None);
    private.spec.model.source.hub.as_mut().unwrap().token_secret = Some(HubTokenSecret {
        name: "hf-token".into(),
        key: "token".into(),
    });
    accepted(&private);
    private.spec.model.source.hub.as_mut().unwrap().token_secret = Some(HubTokenSecret {
        name: "HF Token".into(),
        key: "token".into(),
    });
    rejected(
        &private,
        "model.source.hub.tokenSecret.name must name a Secret",
    );
    let mut s = swarm("demo");
    s.spec.model.source.pvc.as_mut().unwrap().claim_name = "My_Models".into();
    rejected(
        &s,
        "model.source.pvc.claimName must name a PersistentVolumeClaim",
    );
    let mut s = swarm("demo");
    s.spec.model.source = ModelSource {
        image: Some(ImageModelSource {
            reference: "models/qwen 0.5b".into(),
            path: None,
        }),
        ..Default::default()
    };
    rejected(
        &s,
        "model.source.image.reference must be an image reference",
    );
}

fn update_messages(new: &Swarm, old: &Swarm) -> Vec<String> {
    messages(new.validate_cel_update(old))
}

#[test]
fn model_is_immutable() {
    let old = swarm("demo");
    let mut new = old.clone();
    new.spec.model.source.pvc = Some(PvcModelSource {
        claim_name: "other-models".into(),
        path: None,
    });
    let found = update_messages(&new, &old);
    assert!(
        found.iter().any(|m| m.contains("model is immutable")),
        "{found:?}"
    );
}

#[test]
fn group_size_is_immutable() {
    let old = swarm("demo");
    let mut new = old.clone();
    new.spec.training.completions_per_question = 4;
    let found = update_messages(&new, &old);
    assert!(
        found
            .iter()
            .any(|m| m.contains("completionsPerQuestion (G) is immutable")),
        "{found:?}"
    );
}

#[test]
fn checkpoint_storage_class_is_immutable() {
    let mut old = swarm("demo");
    old.spec.checkpoints = Some(CheckpointSpec {
        storage_class_name: Some("fast".into()),
        size: k8s_openapi::apimachinery::pkg::api::resource::Quantity("10Gi".into()),
        every_rounds: 10,
    });
    let mut new = old.clone();
    new.spec.checkpoints.as_mut().unwrap().storage_class_name = Some("slow".into());
    let found = update_messages(&new, &old);
    assert!(
        found
            .iter()
            .any(|m| m.contains("storageClassName is immutable")),
        "{found:?}"
    );
}

#[test]
fn scaling_and_tuning_are_allowed_updates() {
    let old = swarm("demo");
    let mut new = old.clone();
    new.spec.replicas = 9;
    new.spec.training.learning_rate = 3e-6;
    new.spec.training.local_rollouts = 2;
    new.spec.training.external_rollouts = 6;
    assert_eq!(update_messages(&new, &old), Vec::<String>::new());
}

fn member(ordinal: i32) -> SwarmMember {
    SwarmMember {
        metadata: ObjectMeta {
            name: Some(format!("demo-{ordinal}")),
            namespace: Some("default".into()),
            ..Default::default()
        },
        spec: SwarmMemberSpec {
            swarm: "demo".into(),
            ordinal,
        },
        status: None,
    }
}

#[test]
fn member_ordinal_is_bounded_and_spec_immutable() {
    assert!(member(999).validate_cel().is_ok());
    let found = messages(member(1000).validate_cel());
    assert!(
        found
            .iter()
            .any(|m| m.contains("ordinal must be between 0 and 999")),
        "{found:?}"
    );
    let found = messages(member(2).validate_cel_update(&member(1)));
    assert!(
        found
            .iter()
            .any(|m| m.contains("swarm and ordinal are immutable")),
        "{found:?}"
    );
}

fn with_ledger(address: Option<&str>) -> Swarm {
    let mut s = swarm("demo");
    s.spec.ledger = Some(LedgerSpec {
        rpc_url: "https://rpc.example.com/v3/api-key".into(),
        chain_id: 11155111,
        contract: LedgerContract {
            address: address.map(str::to_owned),
            deploy: address.is_none().then_some(DeployContract {}),
        },
        operator_key_secret: SecretKeyRef {
            name: "ledger-operator".into(),
            key: "private-key".into(),
        },
        member_funding: Some("0.05".into()),
    });
    s
}

const CONTRACT: &str = "0x5FbDB2315678afecb367f032d93F642f64180aa3";

#[test]
fn a_ledger_deploys_or_names_a_contract() {
    accepted(&with_ledger(None));
    accepted(&with_ledger(Some(CONTRACT)));
    let mut s = with_ledger(Some(CONTRACT));
    s.spec.ledger.as_mut().unwrap().contract.deploy = Some(DeployContract {});
    rejected(&s, "ledger.contract needs exactly one of address or deploy");
    let mut s = with_ledger(None);
    s.spec.ledger.as_mut().unwrap().contract.deploy = None;
    rejected(&s, "ledger.contract needs exactly one of address or deploy");
    rejected(
        &with_ledger(Some("0x1234")),
        "ledger.contract.address must be 0x followed by 40 hex digits",
    );
}

#[test]
fn ledger_fields_are_checked() {
    let mut s = with_ledger(None);
    s.spec.ledger.as_mut().unwrap().rpc_url = "ws://rpc.example.com".into();
    rejected(&s, "ledger.rpcUrl must be an http:// or https:// URL");
    let mut s = with_ledger(None);
    s.spec.ledger.as_mut().unwrap().chain_id = 0;
    rejected(&s, "ledger.chainId must be at least 1");
    for bad in ["1e18", "-1", "0.1234567890123456789", "five"] {
        let mut s = with_ledger(None);
        s.spec.ledger.as_mut().unwrap().member_funding = Some(bad.into());
        rejected(&s, "ledger.memberFunding must be an amount of ether");
    }
    for ok in ["0", "1", "0.05", "10.000000000000000001"] {
        let mut s = with_ledger(None);
        s.spec.ledger.as_mut().unwrap().member_funding = Some(ok.into());
        accepted(&s);
    }
}

#[test]
fn telemetry_needs_an_http_endpoint_and_a_sane_interval() {
    let telemetry = |endpoint: &str, interval| {
        let mut s = swarm("demo");
        s.spec.telemetry = Some(TelemetrySpec {
            otlp_endpoint: endpoint.into(),
            metric_export_interval_seconds: interval,
        });
        s
    };
    accepted(&telemetry("http://collector.monitoring:4318", 30));
    rejected(
        &telemetry("collector:4317", 30),
        "telemetry.otlpEndpoint must be an http:// or https:// URL",
    );
    rejected(
        &telemetry("https://collector", 0),
        "telemetry.metricExportIntervalSeconds must be between 1 and 3600",
    );
}

#[test]
fn ledger_chain_and_contract_are_immutable_and_the_ledger_stays() {
    let old = with_ledger(None);
    let mut new = old.clone();
    new.spec.ledger.as_mut().unwrap().rpc_url = "https://other.example.com".into();
    new.spec.ledger.as_mut().unwrap().member_funding = Some("1".into());
    assert_eq!(
        update_messages(&new, &old),
        Vec::<String>::new(),
        "endpoint and funding may change"
    );
    let mut new = old.clone();
    new.spec.ledger.as_mut().unwrap().chain_id = 1;
    let found = update_messages(&new, &old);
    assert!(
        found
            .iter()
            .any(|m| m.contains("ledger.chainId is immutable")),
        "{found:?}"
    );
    let mut new = old.clone();
    new.spec.ledger.as_mut().unwrap().contract = LedgerContract {
        address: Some(CONTRACT.into()),
        deploy: None,
    };
    let found = update_messages(&new, &old);
    assert!(
        found
            .iter()
            .any(|m| m.contains("ledger.contract is immutable")),
        "{found:?}"
    );
    let mut new = old.clone();
    new.spec.ledger = None;
    let found = update_messages(&new, &old);
    assert!(
        found
            .iter()
            .any(|m| m.contains("spec.ledger cannot be removed")),
        "{found:?}"
    );
    assert_eq!(
        update_messages(&old, &swarm("demo")),
        Vec::<String>::new(),
        "a ledger may be added later"
    );
}
