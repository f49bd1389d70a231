//! Writes the CRD YAML generated from the Rust types into `crds/` (or the directory given).

use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let dir = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../crds")));
    std::fs::create_dir_all(&dir)?;
    for (file, crd) in swarm_operator::crds() {
        let path = dir.join(file);
        std::fs::write(&path, swarm_operator::crd_yaml(&crd)?)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
