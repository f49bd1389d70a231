use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{owner_ref, swarm_labels};
use crate::api::{Swarm, labels};

/// The headless Service `<swarm>-peers` that gives every member the DNS name
/// `<member>.<swarm>-peers.<ns>.svc`. Not-ready addresses are published so members can find each
/// other while they are still starting, which is when they bootstrap.
pub fn build_peers_service(swarm: &Swarm) -> Service {
    let port = swarm.spec.p2p.port;
    let selector = [(
        labels::SWARM.to_owned(),
        swarm.metadata.name.clone().unwrap_or_default(),
    )]
    .into();
    Service {
        metadata: ObjectMeta {
            name: Some(swarm.peers_service_name()),
            namespace: swarm.metadata.namespace.clone(),
            labels: Some(swarm_labels(swarm)),
            owner_references: Some(vec![owner_ref(swarm)]),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            publish_not_ready_addresses: Some(true),
            selector: Some(selector),
            ports: Some(vec![
                ServicePort {
                    name: Some("p2p-tcp".into()),
                    port,
                    protocol: Some("TCP".into()),
                    target_port: Some(IntOrString::String("p2p-tcp".into())),
                    ..Default::default()
                },
                ServicePort {
                    name: Some("p2p-quic".into()),
                    port,
                    protocol: Some("UDP".into()),
                    target_port: Some(IntOrString::String("p2p-quic".into())),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::build::fixtures;

    #[test]
    fn headless_service_publishes_not_ready_members() {
        let service = build_peers_service(&fixtures::swarm(3));
        assert_json_diff::assert_json_eq!(
            serde_json::to_value(&service).unwrap(),
            json!({
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {
                    "name": "demo-peers",
                    "namespace": "research",
                    "labels": {
                        "app.kubernetes.io/instance": "demo",
                        "app.kubernetes.io/managed-by": "rl-swarm-operator",
                        "app.kubernetes.io/name": "swarm-node",
                        "rlswarm.dev/swarm": "demo"
                    },
                    "ownerReferences": [{
                        "apiVersion": "rlswarm.dev/v1alpha1",
                        "kind": "Swarm",
                        "name": "demo",
                        "uid": "5f0c2c1e-0000-4000-8000-000000000001",
                        "controller": true
                    }]
                },
                "spec": {
                    "clusterIP": "None",
                    "publishNotReadyAddresses": true,
                    "selector": {"rlswarm.dev/swarm": "demo"},
                    "ports": [
                        {"name": "p2p-tcp", "port": 4001, "protocol": "TCP", "targetPort": "p2p-tcp"},
                        {"name": "p2p-quic", "port": 4001, "protocol": "UDP", "targetPort": "p2p-quic"}
                    ]
                }
            })
        );
    }
}
