//! Writes the CRDs generated from the Rust types into a directory (crds/ by `make crds`), or
//! prints them as one multi-document stream when no directory is given.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let out = std::env::args_os().nth(1).map(PathBuf::from);
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
