//! Finding the control-plane binaries, envtest style: `TEST_ASSET_<NAME>`, then
//! `$KUBEBUILDER_ASSETS/<name>`, then the project's own cache, built by `hack/testenv/build.sh`
//! when missing.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Error;

/// The repository root (two levels above this crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The pinned Kubernetes version, read from `hack/testenv/versions.env`.
pub fn kubernetes_version() -> Result<String, Error> {
    let path = repo_root().join("hack/testenv/versions.env");
    let text =
        std::fs::read_to_string(&path).map_err(|e| Error::Io(path.display().to_string(), e))?;
    text.lines()
        .find_map(|l| l.strip_prefix("KUBERNETES_VERSION="))
        .map(|v| v.trim().to_owned())
        .ok_or_else(|| Error::Assets(format!("no KUBERNETES_VERSION in {}", path.display())))
}

/// Where `hack/testenv/build.sh` puts binaries by default.
pub fn cache_dir() -> Result<PathBuf, Error> {
    if let Some(dir) = std::env::var_os("LIFEBOAT_TESTENV_BIN") {
        return Ok(PathBuf::from(dir));
    }
    Ok(repo_root()
        .join("target/testenv")
        .join(kubernetes_version()?)
        .join("bin"))
}

/// The path of control-plane binary `name` (`etcd`, `kube-apiserver`, ...), building the cache
/// when neither an explicit asset nor the cache has it.
pub fn binary(name: &str) -> Result<PathBuf, Error> {
    let var = format!("TEST_ASSET_{}", name.to_ascii_uppercase().replace('-', "_"));
    if let Some(path) = std::env::var_os(&var) {
        return existing(PathBuf::from(path), &var);
    }
    if let Some(dir) = std::env::var_os("KUBEBUILDER_ASSETS") {
        let path = PathBuf::from(dir).join(name);
        if path.is_file() {
            return Ok(path);
        }
        // setup-envtest ships no kube-controller-manager: fall through to our own build for it.
    }
    let path = cache_dir()?.join(name);
    if !path.is_file() {
        build_cache()?;
    }
    existing(path, "hack/testenv/build.sh")
}

fn existing(path: PathBuf, from: &str) -> Result<PathBuf, Error> {
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::Assets(format!(
            "{} (from {from}) does not exist",
            path.display()
        )))
    }
}

/// Runs the build script once per process, however many tests ask at the same time.
fn build_cache() -> Result<(), Error> {
    static BUILD: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = BUILD
        .lock()
        .map_err(|_| Error::Assets("a previous build attempt panicked".into()))?;
    let script = repo_root().join("hack/testenv/build.sh");
    let status = Command::new("bash")
        .arg(&script)
        .status()
        .map_err(|e| Error::Io(script.display().to_string(), e))?;
    if status.success() {
        Ok(())
    } else {
        Err(Error::Assets(format!(
            "{} failed with {status}",
            script.display()
        )))
    }
}
