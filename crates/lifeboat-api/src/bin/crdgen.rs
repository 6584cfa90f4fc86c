//! Writes the CRDs generated from the Rust types into a directory (crds/ by `make crds`), or
//! prints them as one multi-document stream when no directory is given. With a second argument,
//! also writes the API reference rendered from them there (docs/api-reference.md).

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let out = std::env::args_os().nth(1).map(PathBuf::from);
    if let Some(path) = std::env::args_os().nth(2).map(PathBuf::from) {
        let crds: Vec<_> = lifeboat_api::crds().into_iter().map(|(_, c)| c).collect();
        if let Err(e) = std::fs::write(&path, lifeboat_api::reference::markdown(&crds)) {
            eprintln!("crdgen: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        println!("wrote {}", path.display());
        // The drill evidence schema lives next to the API reference.
        let schema_path = path.with_file_name("drill-evidence.schema.json");
        let written = lifeboat_api::evidence::schema_json()
            .map_err(|e| e.to_string())
            .and_then(|text| std::fs::write(&schema_path, text).map_err(|e| e.to_string()));
        if let Err(e) = written {
            eprintln!("crdgen: cannot write {}: {e}", schema_path.display());
            return ExitCode::FAILURE;
        }
        println!("wrote {}", schema_path.display());
    }
    for (file, crd) in lifeboat_api::crds() {
        let yaml = match lifeboat_api::crd_yaml(&crd) {
            Ok(y) => y,
            Err(e) => {
                eprintln!("crdgen: cannot serialize {file}: {e}");
                return ExitCode::FAILURE;
            }
        };
        match &out {
            Some(dir) => {
                let path = dir.join(file);
                if let Err(e) = std::fs::write(&path, yaml) {
                    eprintln!("crdgen: cannot write {}: {e}", path.display());
                    return ExitCode::FAILURE;
                }
                println!("wrote {}", path.display());
            }
            None => print!("---\n{yaml}"),
        }
    }
    ExitCode::SUCCESS
}
