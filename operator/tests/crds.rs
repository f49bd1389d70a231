//! The committed CRDs under `crds/` are exactly what the Rust types generate.

use std::path::Path;

#[test]
fn committed_crds_match_the_types() {
    for dir in swarm_operator::CRD_DIRS {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(dir);
        let mut expected_files = Vec::new();
        for (file, crd) in swarm_operator::crds() {
            let generated = swarm_operator::crd_yaml(&crd).unwrap();
            let path = dir.join(file);
            let committed = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                committed == generated,
                "{} differs from the CRD the Rust types generate; run `cargo run -p swarm-operator --bin crdgen` and commit the result",
                path.display()
            );
            expected_files.push(file.to_owned());
        }
        let mut present: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".yaml"))
            .collect();
        present.sort();
        expected_files.sort();
        assert_eq!(
            present,
            expected_files,
            "{} holds a CRD no type generates",
            dir.display()
        );
    }
}

use kube::CustomResourceExt;
use swarm_operator::api::{Swarm, SwarmMember};

#[test]
fn swarm_crd_has_the_scale_and_status_subresources() {
    let crd = Swarm::crd();
    let version = &crd.spec.versions[0];
    let subresources = version.subresources.as_ref().unwrap();
    assert!(subresources.status.is_some());
    let scale = subresources.scale.as_ref().unwrap();
    assert_eq!(scale.spec_replicas_path, ".spec.replicas");
    assert_eq!(scale.status_replicas_path, ".status.replicas");
    assert_eq!(
        scale.label_selector_path.as_deref(),
        Some(".status.selector")
    );
    assert_eq!(
        crd.spec.names.short_names.as_deref(),
        Some(&["sw".to_owned()][..])
    );
    let columns: Vec<&str> = version
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(columns, ["Replicas", "Ready", "Round", "Phase", "Age"]);
}

#[test]
fn member_crd_prints_phase_peer_node_round_and_reward() {
    let crd = SwarmMember::crd();
    assert_eq!(
        crd.spec.names.short_names.as_deref(),
        Some(&["swm".to_owned()][..])
    );
    let version = &crd.spec.versions[0];
    let columns: Vec<&str> = version
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        columns,
        ["Phase", "PeerID", "Node", "Round", "Reward", "Age"]
    );
    assert!(version.subresources.as_ref().unwrap().status.is_some());
}

/// The formats the API server recognizes for each type (apiextensions-apiserver's
/// `GetUnrecognizedFormats`, Kubernetes 1.36); any other makes `kubectl apply` warn.
fn unrecognized_formats(value: &serde_json::Value, path: &str, found: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(object) => {
            if let Some(format) = object.get("format").and_then(|f| f.as_str()) {
                let known: &[&str] = match object.get("type").and_then(|t| t.as_str()) {
                    Some("integer") => &["int32", "int64"],
                    Some("number") => &["float", "double"],
                    Some("string") | None => &[
                        "date-time",
                        "date",
                        "byte",
                        "binary",
                        "password",
                        "uri",
                        "email",
                        "hostname",
                        "ipv4",
                        "ipv6",
                        "cidr",
                        "mac",
                        "uuid",
                        "duration",
                    ],
                    Some(_) => &[],
                };
                if !known.contains(&format) {
                    found.push(format!("{path}: {format}"));
                }
            }
            for (key, child) in object {
                unrecognized_formats(child, &format!("{path}.{key}"), found);
            }
        }
        serde_json::Value::Array(items) => {
            for (index, child) in items.iter().enumerate() {
                unrecognized_formats(child, &format!("{path}[{index}]"), found);
            }
        }
        _ => {}
    }
}

#[test]
fn every_format_is_one_the_api_server_recognizes() {
    for (file, crd) in swarm_operator::crds() {
        let mut found = Vec::new();
        unrecognized_formats(&serde_json::to_value(&crd).unwrap(), file, &mut found);
        assert!(
            found.is_empty(),
            "formats the API server warns about: {found:#?}"
        );
    }
}
