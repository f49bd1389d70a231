//! Every manifest under `examples/` is a Swarm that the API's admission rules accept.

use std::path::Path;

use swarm_operator::api::Swarm;

#[test]
fn examples_are_valid_swarms() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let mut swarm: Swarm = serde_yaml_ng::from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not a Swarm: {e}", path.display()));
        swarm.metadata.namespace = Some("default".into());
        if let Err(errors) = swarm.validate_cel() {
            panic!("{} is rejected: {:?}", path.display(), errors.into_vec());
        }
        checked += 1;
    }
    assert!(
        checked >= 2,
        "expected the example manifests, found {checked}"
    );
}
