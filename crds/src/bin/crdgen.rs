//! Writes the CRDs to `crds/` and to the Helm chart's `crds/` (Helm installs that folder
//! before the chart's templates). Run after changing a type:
//! `cargo run -p fjord-crds --bin crdgen`; a test fails until the files match.

use std::path::Path;

fn main() -> std::io::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dirs = [root.to_path_buf(), root.join("../charts/fjord-operator/crds")];
    for fjord_crds::CrdFile { file, crd } in fjord_crds::crds() {
        let yaml = fjord_crds::to_yaml(&crd);
        for dir in &dirs {
            std::fs::create_dir_all(dir)?;
            std::fs::write(dir.join(file), &yaml)?;
        }
        println!("wrote {file}");
    }
    Ok(())
}
