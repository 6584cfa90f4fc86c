//! The krew manifest (deploy/krew/lifeboat.yaml) checked by krew's own validator, built from the
//! krew Go module (hack/tools/krew.sh): the committed manifest as it is, then the same manifest
//! installed by real krew from an archive packed by hack/krew-archive.sh and served on loopback
//! (so `files`, `bin` and LICENSE are proven against a real archive); an archive whose sha256 is
//! not the manifest's, and a manifest that names a binary the archive lacks, refused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn validator() -> PathBuf {
    let out = Command::new("bash")
        .arg(repo().join("hack/tools/krew.sh"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// Serves `body` to every GET on a loopback port until the test process ends; returns the URL.
fn serve(body: Vec<u8>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/gzip\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body);
        }
    });
    format!("http://127.0.0.1:{port}/kubectl-lifeboat-linux-amd64.tar.gz")
}

/// Runs the validator on `manifest`, with `kubectl` and `kubectl-krew` on the PATH.
fn validate(validator: &Path, manifest: &Path, install: bool) -> Output {
    let bin = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(
        validator.with_file_name("krew"),
        bin.path().join("kubectl-krew"),
    )
    .unwrap();
    let kubectl = lifeboat_testenv::kubectl().unwrap();
    let path = format!(
        "{}:{}:{}",
        bin.path().display(),
        kubectl.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new(validator);
    cmd.arg("-manifest").arg(manifest).env("PATH", path);
    if !install {
        cmd.arg("-skip-install");
    }
    cmd.output().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn krew_validates_the_manifest_and_installs_the_plugin_from_its_archive() {
    let validator = validator();
    let committed = repo().join("deploy/krew/lifeboat.yaml");
    let out = validate(&validator, &committed, false);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("structural validation OK"),
        "{}",
        text(&out)
    );

    // The manifest with one platform: this machine's, its uri the archive on loopback.
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("kubectl-lifeboat.tar.gz");
    let packed = Command::new("bash")
        .arg(repo().join("hack/krew-archive.sh"))
        .arg(env!("CARGO_BIN_EXE_kubectl-lifeboat"))
        .arg(&archive)
        .output()
        .unwrap();
    assert!(packed.status.success(), "{}", text(&packed));
    let sha256 = String::from_utf8(packed.stdout).unwrap().trim().to_owned();
    let url = serve(std::fs::read(&archive).unwrap());
    let mut manifest: serde_json::Value =
        serde_norway::from_str(&std::fs::read_to_string(&committed).unwrap()).unwrap();
    let platforms = manifest["spec"]["platforms"].as_array_mut().unwrap();
    platforms.retain(|p| {
        p["selector"]["matchLabels"] == serde_json::json!({"os": "linux", "arch": "amd64"})
    });
    assert_eq!(
        platforms.len(),
        1,
        "the manifest has a linux/amd64 platform"
    );
    platforms[0]["uri"] = url.into();
    platforms[0]["sha256"] = sha256.into();
    let local = dir.path().join("lifeboat.yaml");
    std::fs::write(&local, serde_norway::to_string(&manifest).unwrap()).unwrap();
    let out = validate(&validator, &local, true);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("all 1 spec.platforms installed fine"),
        "{}",
        text(&out)
    );

    // An archive that is not the one the manifest's sha256 names is refused.
    let mut tampered = manifest.clone();
    tampered["spec"]["platforms"][0]["sha256"] = format!("{:064x}", 1).into();
    std::fs::write(&local, serde_norway::to_string(&tampered).unwrap()).unwrap();
    let out = validate(&validator, &local, true);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("checksum does not match"),
        "{}",
        text(&out)
    );

    // A manifest whose bin the archive does not hold is refused by the install.
    manifest["spec"]["platforms"][0]["bin"] = "kubectl-lifeboot".into();
    std::fs::write(&local, serde_norway::to_string(&manifest).unwrap()).unwrap();
    let out = validate(&validator, &local, true);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("kubectl-lifeboot"), "{}", text(&out));
}
