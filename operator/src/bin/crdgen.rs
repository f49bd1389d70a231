//! Writes the CRD YAML generated from the Rust types into `crds/` and into the chart's copy,
//! or into the one directory given.

use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let dirs: Vec<PathBuf> = match std::env::args_os().nth(1) {
        Some(dir) => vec![PathBuf::from(dir)],
        None => swarm_operator::CRD_DIRS
            .iter()
            .map(|dir| {
                PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                    .join("..")
                    .join(dir)
            })
            .collect(),
    };
    for dir in dirs {
        std::fs::create_dir_all(&dir)?;
        for (file, crd) in swarm_operator::crds() {
            let path = dir.join(file);
            std::fs::write(&path, swarm_operator::crd_yaml(&crd)?)?;
            println!("wrote {}", path.display());
        }
    }
    Ok(())
}
