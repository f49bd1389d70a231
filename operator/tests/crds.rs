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
