use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, HTTPGetAction, ImageVolumeSource, KeyToPath, ObjectFieldSelector,
    PersistentVolumeClaimVolumeSource, Pod, PodSecurityContext, PodSpec, Probe,
    ResourceRequirements, SeccompProfile, SecretKeySelector, SecretVolumeSource, SecurityContext,
    Toleration, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use sha2::{Digest, Sha256};
use swarm_identity::PRIVATE_KEY_FILE;
use swarm_node_config::CONFIG_FILE;

use super::pvc::checkpoint_pvc_name;
use super::{member_labels, owner_ref};
use crate::api::{HubModelSource, MemberTemplate, Swarm, SwarmMember, TelemetrySpec};

/// Hash of everything the operator sets on a member pod; a pod whose hash differs is replaced.
pub const TEMPLATE_HASH_ANNOTATION: &str = "rlswarm.dev/template-hash";

pub const GPU_RESOURCE: &str = "nvidia.com/gpu";
pub const IDENTITY_DIR: &str = "/var/run/rlswarm/identity";
pub const CONFIG_DIR: &str = "/etc/rlswarm";
pub const MODEL_MOUNT: &str = "/models";
pub const STATE_DIR: &str = "/var/lib/swarm-node";
pub const CHECKPOINT_DIR: &str = "/var/lib/swarm-node/checkpoints";
pub const METRICS_PORT: i32 = 9090;
/// The Hub's cache (`HF_HOME`) on the state volume: on the checkpoint claim when there is one, so
/// a replaced pod does not download its model again.
pub const HUB_HOME: &str = "/var/lib/swarm-node/hf";
/// The init container that downloads a hub model before the node starts.
pub const FETCH_MODEL_CONTAINER: &str = "fetch-model";
/// Where the kubelet reads a container's termination message from (its default path).
const TERMINATION_LOG: &str = "/dev/termination-log";

/// The unprivileged user of the node image.
const NODE_UID: i64 = 65532;
/// Time for a node to finish its current checkpoint write when its pod is deleted.
const TERMINATION_GRACE_SECONDS: i64 = 60;

/// Operator-wide settings that shape member pods.
#[derive(Clone, Debug)]
pub struct PodSettings {
    /// Node image used when the Swarm does not name one.
    pub default_image: String,
}

/// The member's pod: one `swarm-node` container with its identity, configuration, model and state mounted.
pub fn build_member_pod(swarm: &Swarm, member: &SwarmMember, settings: &PodSettings) -> Pod {
    let template = &swarm.spec.member;
    let member_name = member.metadata.name.clone().unwrap_or_default();
    let port = swarm.spec.p2p.port;
    let gpus = template.resources.gpus.unwrap_or(0);

    let mut limits = template.resources.limits.clone().unwrap_or_default();
    let mut tolerations = template.tolerations.clone().unwrap_or_default();
    if gpus > 0 {
        limits.insert(GPU_RESOURCE.to_owned(), Quantity(gpus.to_string()));
        // GPU nodes are commonly tainted so that only GPU workloads land there.
        tolerations.push(Toleration {
            key: Some(GPU_RESOURCE.to_owned()),
            operator: Some("Exists".into()),
            effect: Some("NoSchedule".into()),
            ..Default::default()
        });
    }

    let (volumes, volume_mounts) = volumes(swarm, member);
    let hub = swarm.spec.model.source.hub.as_ref();
    let mut env = vec![
        field_env("SWARM_MEMBER", "metadata.name"),
        field_env("POD_NAMESPACE", "metadata.namespace"),
        plain_env("SWARM_IDENTITY_DIR", IDENTITY_DIR),
        plain_env("SWARM_CONFIG", &format!("{CONFIG_DIR}/{CONFIG_FILE}")),
    ];
    if hub.is_some() {
        env.push(plain_env("HF_HOME", HUB_HOME));
    }
    if let Some(telemetry) = &swarm.spec.telemetry {
        env.extend(telemetry_env(swarm, telemetry));
    }
    env.extend(template.env.iter().flatten().cloned());
    let image = template
        .image
        .clone()
        .unwrap_or_else(|| settings.default_image.clone());
    let security_context = SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let init_containers = hub.map(|hub| {
        vec![fetch_model_container(
            hub,
            &image,
            template,
            &security_context,
        )]
    });

    let container = Container {
        name: "node".into(),
        image: Some(image),
        image_pull_policy: template.image_pull_policy.clone(),
        env: Some(env),
        ports: Some(vec![
            container_port("p2p-tcp", port, "TCP"),
            container_port("p2p-quic", port, "UDP"),
            container_port("metrics", METRICS_PORT, "TCP"),
        ]),
        resources: Some(ResourceRequirements {
            requests: template.resources.requests.clone(),
            limits: (!limits.is_empty()).then_some(limits),
            ..Default::default()
        }),
        security_context: Some(security_context),
        volume_mounts: Some(volume_mounts),
        readiness_probe: Some(http_probe("/readyz", 5)),
        liveness_probe: Some(http_probe("/healthz", 20)),
        ..Default::default()
    };

    let spec = PodSpec {
        hostname: Some(member_name.clone()),
        subdomain: Some(swarm.peers_service_name()),
        restart_policy: Some("Always".into()),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        termination_grace_period_seconds: Some(TERMINATION_GRACE_SECONDS),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(NODE_UID),
            run_as_group: Some(NODE_UID),
            fs_group: Some(NODE_UID),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        node_selector: template.node_selector.clone(),
        tolerations: (!tolerations.is_empty()).then_some(tolerations),
        affinity: template.affinity.clone(),
        runtime_class_name: template.runtime_class_name.clone(),
        priority_class_name: template.priority_class_name.clone(),
        init_containers,
        containers: vec![container],
        volumes: Some(volumes),
        ..Default::default()
    };

    let labels = member_labels(swarm, member);
    let hash = template_hash(&labels, &spec);
    Pod {
        metadata: ObjectMeta {
            name: Some(member_name),
            namespace: member.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: Some(BTreeMap::from([(
                TEMPLATE_HASH_ANNOTATION.to_owned(),
                hash,
            )])),
            owner_references: Some(vec![owner_ref(member)]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// Downloads the hub model into the Hub's cache on the state volume before the node starts
/// (`swarm-node fetch-model`, resuming a broken download after a restart). Its termination message
/// is the resolved commit, or why the download failed, for the member's status.
fn fetch_model_container(
    hub: &HubModelSource,
    image: &str,
    template: &MemberTemplate,
    security_context: &SecurityContext,
) -> Container {
    let mut args = vec!["fetch-model".to_owned(), "--id".to_owned(), hub.id.clone()];
    if let Some(revision) = &hub.revision {
        args.extend(["--revision".to_owned(), revision.clone()]);
    }
    args.extend(["--termination-log".to_owned(), TERMINATION_LOG.to_owned()]);
    let mut env = vec![plain_env("HF_HOME", HUB_HOME)];
    if let Some(secret) = &hub.token_secret {
        env.push(EnvVar {
            name: "HF_TOKEN".into(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: secret.name.clone(),
                    key: secret.key.clone(),
                    optional: Some(false),
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    // The member's own variables too: HF_ENDPOINT for a mirror, proxies.
    env.extend(template.env.iter().flatten().cloned());
    Container {
        name: FETCH_MODEL_CONTAINER.into(),
        image: Some(image.to_owned()),
        image_pull_policy: template.image_pull_policy.clone(),
        args: Some(args),
        env: Some(env),
        resources: Some(ResourceRequirements {
            requests: template.resources.requests.clone(),
            ..Default::default()
        }),
        security_context: Some(security_context.clone()),
        volume_mounts: Some(vec![
            mount("state", STATE_DIR, false),
            mount("tmp", "/tmp", false),
        ]),
        termination_message_path: Some(TERMINATION_LOG.into()),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Default::default()
    }
}

fn volumes(swarm: &Swarm, member: &SwarmMember) -> (Vec<Volume>, Vec<VolumeMount>) {
    let mut volumes = vec![
        Volume {
            name: "identity".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(member.identity_secret_name()),
                // Readable by the node's group only (fsGroup); the key never needs to be written.
                default_mode: Some(0o440),
                items: Some(vec![key_to_path(PRIVATE_KEY_FILE)]),
                ..Default::default()
            }),
            ..Default::default()
        },
        Volume {
            name: "config".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: swarm.config_map_name(),
                items: Some(vec![key_to_path(CONFIG_FILE)]),
                ..Default::default()
            }),
            ..Default::default()
        },
        Volume {
            name: "state".into(),
            persistent_volume_claim: swarm.spec.checkpoints.as_ref().map(|_| {
                PersistentVolumeClaimVolumeSource {
                    claim_name: checkpoint_pvc_name(member),
                    read_only: Some(false),
                }
            }),
            empty_dir: swarm
                .spec
                .checkpoints
                .is_none()
                .then(EmptyDirVolumeSource::default),
            ..Default::default()
        },
        Volume {
            name: "tmp".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        },
    ];
    let mut mounts = vec![
        mount("identity", IDENTITY_DIR, true),
        mount("config", CONFIG_DIR, true),
        mount("state", STATE_DIR, false),
        mount("tmp", "/tmp", false),
    ];

    let source = &swarm.spec.model.source;
    let model_volume = if let Some(pvc) = &source.pvc {
        Some(Volume {
            name: "model".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: pvc.claim_name.clone(),
                read_only: Some(true),
            }),
            ..Default::default()
        })
    } else {
        source.image.as_ref().map(|image| Volume {
            name: "model".into(),
            image: Some(ImageVolumeSource {
                reference: Some(image.reference.clone()),
                pull_policy: Some("IfNotPresent".into()),
            }),
            ..Default::default()
        })
    };
    if let Some(volume) = model_volume {
        volumes.push(volume);
        mounts.push(mount("model", MODEL_MOUNT, true));
    }
    (volumes, mounts)
}

fn template_hash(labels: &BTreeMap<String, String>, spec: &PodSpec) -> String {
    let mut hasher = Sha256::new();
    hasher.update(serde_json::to_vec(labels).unwrap_or_default());
    hasher.update(serde_json::to_vec(spec).unwrap_or_default());
    hex::encode(&hasher.finalize()[..8])
}

fn key_to_path(key: &str) -> KeyToPath {
    KeyToPath {
        key: key.to_owned(),
        path: key.to_owned(),
        mode: None,
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        read_only: Some(read_only),
        ..Default::default()
    }
}

fn container_port(name: &str, port: i32, protocol: &str) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_owned()),
        container_port: port,
        protocol: Some(protocol.to_owned()),
        ..Default::default()
    }
}

fn field_env(name: &str, field_path: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: field_path.to_owned(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The OpenTelemetry SDK's standard variables: where to export, and resource attributes that say
/// which member of which swarm a span or metric comes from (`$(VAR)` expands the variables above).
fn telemetry_env(swarm: &Swarm, telemetry: &TelemetrySpec) -> Vec<EnvVar> {
    let interval_ms = u64::from(telemetry.metric_export_interval_seconds) * 1000;
    vec![
        plain_env("OTEL_EXPORTER_OTLP_ENDPOINT", &telemetry.otlp_endpoint),
        plain_env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        plain_env("OTEL_SERVICE_NAME", "swarm-node"),
        plain_env(
            "OTEL_RESOURCE_ATTRIBUTES",
            &format!(
                "k8s.namespace.name=$(POD_NAMESPACE),k8s.pod.name=$(SWARM_MEMBER),rlswarm.swarm={}",
                swarm.metadata.name.as_deref().unwrap_or_default()
            ),
        ),
        plain_env("OTEL_METRIC_EXPORT_INTERVAL", &interval_ms.to_string()),
    ]
}

fn plain_env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        ..Default::default()
    }
}

fn http_probe(path: &str, period_seconds: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String("metrics".into()),
            ..Default::default()
        }),
        period_seconds: Some(period_seconds),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{NodeSelectorRequirement, NodeSelectorTerm};
    use serde_json::json;

    use super::*;
    use crate::api::{CheckpointSpec, ImageModelSource, ModelSource, TelemetrySpec};
    use crate::build::fixtures;

    fn settings() -> PodSettings {
        PodSettings {
            default_image: "ghcr.io/rl-swarm/swarm-node:0.1.0".into(),
        }
    }

    fn gpu_swarm() -> Swarm {
        let mut swarm = fixtures::swarm(2);
        let template = &mut swarm.spec.member;
        template.resources.gpus = Some(1);
        template.resources.requests = Some(BTreeMap::from([
            ("cpu".to_owned(), Quantity("4".into())),
            ("memory".to_owned(), Quantity("16Gi".into())),
        ]));
        template.node_selector = Some(BTreeMap::from([(
            "nvidia.com/gpu.product".to_owned(),
            "NVIDIA-H100-80GB-HBM3".to_owned(),
        )]));
        template.tolerations = Some(vec![Toleration {
            key: Some("dedicated".into()),
            operator: Some("Equal".into()),
            value: Some("rl".into()),
            effect: Some("NoSchedule".into()),
            ..Default::default()
        }]);
        template.affinity = Some(k8s_openapi::api::core::v1::Affinity {
            node_affinity: Some(k8s_openapi::api::core::v1::NodeAffinity {
                required_during_scheduling_ignored_during_execution: Some(
                    k8s_openapi::api::core::v1::NodeSelector {
                        node_selector_terms: vec![NodeSelectorTerm {
                            match_expressions: Some(vec![NodeSelectorRequirement {
                                key: "topology.kubernetes.io/zone".into(),
                                operator: "In".into(),
                                values: Some(vec!["zone-a".into()]),
                            }]),
                            ..Default::default()
                        }],
                    },
                ),
                ..Default::default()
            }),
            ..Default::default()
        });
        template.runtime_class_name = Some("nvidia".into());
        template.priority_class_name = Some("training".into());
        template.env = Some(vec![plain_env("RUST_LOG", "debug")]);
        swarm
    }

    #[test]
    fn gpu_member_pod_matches_the_template() {
        let swarm = gpu_swarm();
        let member = fixtures::member(&swarm, 1);
        let pod = build_member_pod(&swarm, &member, &settings());
        let mut value = serde_json::to_value(&pod).unwrap();
        let hash = value["metadata"]["annotations"][TEMPLATE_HASH_ANNOTATION]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(hash.len(), 16);
        value["metadata"]["annotations"][TEMPLATE_HASH_ANNOTATION] = json!("<hash>");

        assert_json_diff::assert_json_eq!(
            value,
            json!({
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": "demo-1",
                    "namespace": "research",
                    "labels": {
                        "app.kubernetes.io/component": "member",
                        "app.kubernetes.io/instance": "demo",
                        "app.kubernetes.io/managed-by": "rl-swarm-operator",
                        "app.kubernetes.io/name": "swarm-node",
                        "rlswarm.dev/member": "demo-1",
                        "rlswarm.dev/ordinal": "1",
                        "rlswarm.dev/swarm": "demo"
                    },
                    "annotations": {"rlswarm.dev/template-hash": "<hash>"},
                    "ownerReferences": [{
                        "apiVersion": "rlswarm.dev/v1alpha1",
                        "kind": "SwarmMember",
                        "name": "demo-1",
                        "uid": "00000000-0000-4000-8000-000000000101",
                        "controller": true
                    }]
                },
                "spec": {
                    "hostname": "demo-1",
                    "subdomain": "demo-peers",
                    "restartPolicy": "Always",
                    "automountServiceAccountToken": false,
                    "enableServiceLinks": false,
                    "terminationGracePeriodSeconds": 60,
                    "securityContext": {
                        "runAsNonRoot": true,
                        "runAsUser": 65532,
                        "runAsGroup": 65532,
                        "fsGroup": 65532,
                        "seccompProfile": {"type": "RuntimeDefault"}
                    },
                    "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
                    "tolerations": [
                        {"key": "dedicated", "operator": "Equal", "value": "rl", "effect": "NoSchedule"},
                        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
                    ],
                    "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [{"matchExpressions": [
                            {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["zone-a"]}
                        ]}]
                    }}},
                    "runtimeClassName": "nvidia",
                    "priorityClassName": "training",
                    "containers": [{
                        "name": "node",
                        "image": "ghcr.io/rl-swarm/swarm-node:0.1.0",
                        "env": [
                            {"name": "SWARM_MEMBER", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                            {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                            {"name": "SWARM_IDENTITY_DIR", "value": "/var/run/rlswarm/identity"},
                            {"name": "SWARM_CONFIG", "value": "/etc/rlswarm/node.yaml"},
                            {"name": "RUST_LOG", "value": "debug"}
                        ],
                        "ports": [
                            {"name": "p2p-tcp", "containerPort": 4001, "protocol": "TCP"},
                            {"name": "p2p-quic", "containerPort": 4001, "protocol": "UDP"},
                            {"name": "metrics", "containerPort": 9090, "protocol": "TCP"}
                        ],
                        "resources": {
                            "requests": {"cpu": "4", "memory": "16Gi"},
                            "limits": {"nvidia.com/gpu": "1"}
                        },
                        "securityContext": {
                            "allowPrivilegeEscalation": false,
                            "readOnlyRootFilesystem": true,
                            "runAsNonRoot": true,
                            "capabilities": {"drop": ["ALL"]}
                        },
                        "volumeMounts": [
                            {"name": "identity", "mountPath": "/var/run/rlswarm/identity", "readOnly": true},
                            {"name": "config", "mountPath": "/etc/rlswarm", "readOnly": true},
                            {"name": "state", "mountPath": "/var/lib/swarm-node", "readOnly": false},
                            {"name": "tmp", "mountPath": "/tmp", "readOnly": false},
                            {"name": "model", "mountPath": "/models", "readOnly": true}
                        ],
                        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "metrics"}, "periodSeconds": 5},
                        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "metrics"}, "periodSeconds": 20}
                    }],
                    "volumes": [
                        {"name": "identity", "secret": {
                            "secretName": "demo-1-identity",
                            "defaultMode": 288,
                            "items": [{"key": "private-key", "path": "private-key"}]
                        }},
                        {"name": "config", "configMap": {
                            "name": "demo-config",
                            "items": [{"key": "node.yaml", "path": "node.yaml"}]
                        }},
                        {"name": "state", "emptyDir": {}},
                        {"name": "tmp", "emptyDir": {}},
                        {"name": "model", "persistentVolumeClaim": {"claimName": "models", "readOnly": true}}
                    ]
                }
            })
        );
    }

    #[test]
    fn cpu_member_has_no_gpu_limit_or_toleration() {
        let swarm = fixtures::swarm(1);
        let pod = build_member_pod(&swarm, &fixtures::member(&swarm, 0), &settings());
        let spec = pod.spec.unwrap();
        assert_eq!(spec.tolerations, None);
        assert_eq!(spec.containers[0].resources.as_ref().unwrap().limits, None);
    }

    #[test]
    fn template_image_overrides_the_default_and_image_models_mount_as_image_volumes() {
        let mut swarm = fixtures::swarm(1);
        swarm.spec.member.image = Some("registry.local/swarm-node:dev".into());
        swarm.spec.model.source = ModelSource {
            image: Some(ImageModelSource {
                reference: "registry.local/models/qwen:0.5b".into(),
                path: None,
            }),
            ..Default::default()
        };
        let pod = build_member_pod(&swarm, &fixtures::member(&swarm, 0), &settings());
        let spec = pod.spec.unwrap();
        assert_eq!(
            spec.containers[0].image.as_deref(),
            Some("registry.local/swarm-node:dev")
        );
        let model = spec
            .volumes
            .unwrap()
            .into_iter()
            .find(|v| v.name == "model")
            .unwrap();
        assert_eq!(
            model.image.unwrap().reference.as_deref(),
            Some("registry.local/models/qwen:0.5b")
        );
    }

    #[test]
    fn checkpoint_volume_replaces_the_scratch_state() {
        let mut swarm = fixtures::swarm(1);
        swarm.spec.checkpoints = Some(CheckpointSpec {
            storage_class_name: None,
            size: Quantity("5Gi".into()),
            every_rounds: 3,
        });
        let pod = build_member_pod(&swarm, &fixtures::member(&swarm, 0), &settings());
        let state = pod
            .spec
            .unwrap()
            .volumes
            .unwrap()
            .into_iter()
            .find(|v| v.name == "state")
            .unwrap();
        assert_eq!(state.empty_dir, None);
        assert_eq!(
            state.persistent_volume_claim.unwrap().claim_name,
            "demo-0-checkpoints"
        );
    }

    #[test]
    fn telemetry_sets_the_standard_otlp_variables_after_the_ones_they_expand() {
        let mut swarm = fixtures::swarm(1);
        swarm.spec.telemetry = Some(TelemetrySpec {
            otlp_endpoint: "http://collector.monitoring:4318".into(),
            metric_export_interval_seconds: 15,
        });
        let pod = build_member_pod(&swarm, &fixtures::member(&swarm, 0), &settings());
        let env = pod.spec.unwrap().containers[0].env.clone().unwrap();
        let names: Vec<&str> = env.iter().map(|e| e.name.as_str()).collect();
        let value = |name: &str| {
            env.iter()
                .find(|e| e.name == name)
                .and_then(|e| e.value.clone())
                .unwrap()
        };
        assert_eq!(
            value("OTEL_EXPORTER_OTLP_ENDPOINT"),
            "http://collector.monitoring:4318"
        );
        assert_eq!(value("OTEL_METRIC_EXPORT_INTERVAL"), "15000");
        assert_eq!(
            value("OTEL_RESOURCE_ATTRIBUTES"),
            "k8s.namespace.name=$(POD_NAMESPACE),k8s.pod.name=$(SWARM_MEMBER),rlswarm.swarm=demo"
        );
        let position = |name| names.iter().position(|n| *n == name).unwrap();
        assert!(position("POD_NAMESPACE") < position("OTEL_RESOURCE_ATTRIBUTES"));
        assert!(position("SWARM_MEMBER") < position("OTEL_RESOURCE_ATTRIBUTES"));
    }

    /// Every variable the builder sets itself is one admission keeps out of `member.env`: a
    /// duplicate name makes the API server reject the pod, long after the Swarm was accepted.
    #[test]
    fn the_variables_the_operator_sets_are_the_ones_admission_reserves() {
        let mut swarm = fixtures::swarm(1);
        swarm.spec.telemetry = Some(TelemetrySpec {
            otlp_endpoint: "http://collector.monitoring:4318".into(),
            metric_export_interval_seconds: 15,
        });
        swarm.spec.model.source = ModelSource {
            hub: Some(crate::api::HubModelSource {
                id: "Qwen/Qwen2.5-0.5B-Instruct".into(),
                revision: None,
                token_secret: Some(crate::api::HubTokenSecret {
                    name: "hf".into(),
                    key: "token".into(),
                }),
            }),
            ..Default::default()
        };
        let spec = build_member_pod(&swarm, &fixtures::member(&swarm, 0), &settings())
            .spec
            .unwrap();
        let containers = spec
            .init_containers
            .unwrap()
            .into_iter()
            .chain(spec.containers);
        for container in containers {
            for env in container.env.unwrap() {
                let quoted = format!("'{}'", env.name);
                let reserved = crate::api::admission::OPERATOR_ENV.contains(&quoted)
                    || crate::api::admission::TELEMETRY_ENV.contains(&quoted)
                    || env.name == "HF_TOKEN";
                assert!(
                    reserved,
                    "{} sets {}, which admission lets member.env set too",
                    container.name, env.name
                );
            }
        }
    }

    #[test]
    fn a_hub_model_is_downloaded_by_an_init_container_into_the_state_volume() {
        let mut swarm = fixtures::swarm(1);
        swarm.spec.model.source = ModelSource {
            hub: Some(crate::api::HubModelSource {
                id: "Qwen/Qwen2.5-0.5B-Instruct".into(),
                revision: Some("v1".into()),
                token_secret: Some(crate::api::HubTokenSecret {
                    name: "hf".into(),
                    key: "token".into(),
                }),
            }),
            ..Default::default()
        };
        swarm.spec.member.env = Some(vec![plain_env("HF_ENDPOINT", "http://mirror:8080")]);
        let member = fixtures::member(&swarm, 0);
        let pod = serde_json::to_value(build_member_pod(&swarm, &member, &settings())).unwrap();
        let init = &pod["spec"]["initContainers"];
        assert_eq!(init.as_array().unwrap().len(), 1);
        assert_eq!(
            init[0],
            json!({
                "name": "fetch-model",
                "image": "ghcr.io/rl-swarm/swarm-node:0.1.0",
                "args": ["fetch-model", "--id", "Qwen/Qwen2.5-0.5B-Instruct", "--revision", "v1",
                         "--termination-log", "/dev/termination-log"],
                "env": [
                    {"name": "HF_HOME", "value": HUB_HOME},
                    {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token", "optional": false}}},
                    {"name": "HF_ENDPOINT", "value": "http://mirror:8080"},
                ],
                "resources": {},
                "securityContext": {
                    "allowPrivilegeEscalation": false,
                    "readOnlyRootFilesystem": true,
                    "runAsNonRoot": true,
                    "capabilities": {"drop": ["ALL"]},
                },
                "volumeMounts": [
                    {"name": "state", "mountPath": STATE_DIR, "readOnly": false},
                    {"name": "tmp", "mountPath": "/tmp", "readOnly": false},
                ],
                "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "FallbackToLogsOnError",
            })
        );
        let node = &pod["spec"]["containers"][0];
        let env = node["env"].as_array().unwrap();
        assert!(env.contains(&json!({"name": "HF_HOME", "value": HUB_HOME})));
        assert!(
            !env.iter().any(|e| e["name"] == "HF_TOKEN"),
            "only the download sees the token"
        );
        // The cache is on the state volume, which is the checkpoint claim when there is one.
        assert!(HUB_HOME.starts_with(STATE_DIR));

        let pvc_pod = build_member_pod(&fixtures::swarm(1), &member, &settings());
        assert!(pvc_pod.spec.unwrap().init_containers.is_none());
    }

    #[test]
    fn template_hash_changes_with_the_template_only() {
        let swarm = fixtures::swarm(1);
        let member = fixtures::member(&swarm, 0);
        let hash = |pod: Pod| pod.metadata.annotations.unwrap()[TEMPLATE_HASH_ANNOTATION].clone();
        let first = hash(build_member_pod(&swarm, &member, &settings()));
        assert_eq!(first, hash(build_member_pod(&swarm, &member, &settings())));
        let mut changed = swarm.clone();
        changed.spec.member.resources.gpus = Some(2);
        assert_ne!(
            first,
            hash(build_member_pod(&changed, &member, &settings()))
        );
    }
}
