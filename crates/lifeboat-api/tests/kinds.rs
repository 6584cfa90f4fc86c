//! An asset kind is its enum variant, its module in `lifeboat_api::kinds`, its driver module in
//! the agent, and their tests: nowhere else does the workspace list the kinds. Read from the
//! sources, because what this guards is where code is written, which the compiler does not see.
//! A `match` that names every kind (instead of asking `SourceKind`, `TargetKind` or the agent's
//! `Driver`) is what a fifth kind would have to edit; such a match outside the enum's own file
//! fails this test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The variants of `pub enum {name}` in `file`.
fn variants(file: &str, name: &str) -> Vec<String> {
    let text = read(&workspace().join(file));
    let start = text
        .find(&format!("pub enum {name} {{"))
        .unwrap_or_else(|| panic!("no enum {name} in {file}"));
    let body = &text[start..];
    let body = &body[body.find('{').unwrap() + 1..body.find("\n}").unwrap()];
    body.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with("//") && !l.is_empty())
        .map(|l| l.split(['(', ',']).next().unwrap().to_owned())
        .collect()
}

/// Production code only: a file's test module (`#[cfg(test)] mod`, last by the workspace's
/// habit) may name any kind it exercises.
fn production(text: &str) -> &str {
    text.find("#[cfg(test)]\nmod ").map_or(text, |i| &text[..i])
}

/// The variants of `enums` that `code` names as `Enum::Variant`.
fn named(code: &str, enums: &[&str], variants: &[String]) -> BTreeSet<String> {
    variants
        .iter()
        .filter(|v| {
            enums.iter().any(|e| {
                let path = format!("{e}::{v}");
                code.match_indices(&path).any(|(i, _)| {
                    let before = code[..i].chars().next_back();
                    let after = code[i + path.len()..].chars().next();
                    !before.is_some_and(|c| c.is_alphanumeric() || c == '_')
                        && !after.is_some_and(|c| c.is_alphanumeric() || c == '_')
                })
            })
        })
        .cloned()
        .collect()
}

fn snake(variant: &str) -> String {
    let mut out = String::new();
    for (i, c) in variant.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

#[test]
fn only_the_enum_lists_the_asset_kinds() {
    let kinds = variants("crates/lifeboat-api/src/backup_policy.rs", "AssetSource");
    let targets = variants("crates/lifeboat-api/src/common.rs", "Target");
    assert_eq!(kinds.len(), 4, "{kinds:?}");
    assert_eq!(targets.len(), 5, "{targets:?}");

    let enum_files = [
        "crates/lifeboat-api/src/backup_policy.rs",
        "crates/lifeboat-api/src/common.rs",
    ];
    let mut files = Vec::new();
    for krate in std::fs::read_dir(workspace().join("crates")).unwrap() {
        let src = krate.unwrap().path().join("src");
        if src.is_dir() {
            sources(&src, &mut files);
        }
    }
    assert!(files.len() > 50, "scanned only {} files", files.len());

    let mut listing = Vec::new();
    for file in &files {
        let rel = file
            .strip_prefix(workspace())
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let text = read(file);
        let code = production(&text);
        let all_kinds = named(code, &["AssetSource", "AssetKind"], &kinds).len() == kinds.len();
        let all_targets = named(code, &["Target"], &targets).len() == targets.len();
        if enum_files.contains(&rel.as_str()) {
            // The scan finds what it looks for: the enums' own files list every kind.
            assert!(all_kinds || all_targets, "{rel} lists no kind");
        } else if all_kinds || all_targets {
            listing.push(rel);
        }
    }
    assert!(
        listing.is_empty(),
        "these files list every asset kind or target; ask the kind's module instead \
         (lifeboat_api::kinds, the agent's kinds::Driver): {listing:?}"
    );
}

#[test]
fn each_kind_has_its_module_in_the_api_and_the_agent() {
    let kinds = variants("crates/lifeboat-api/src/backup_policy.rs", "AssetSource");
    for kind in &kinds {
        let module = snake(kind);
        let api = read(&workspace().join(format!("crates/lifeboat-api/src/kinds/{module}.rs")));
        assert!(
            api.contains("impl SourceKind for"),
            "lifeboat-api/src/kinds/{module}.rs implements no SourceKind"
        );
        let agent = read(&workspace().join(format!("crates/lifeboat-agent/src/kinds/{module}.rs")));
        assert!(
            agent.contains("impl Driver for"),
            "lifeboat-agent/src/kinds/{module}.rs implements no Driver"
        );
    }
}

/// The scan itself: a match naming every kind is found, one with a wildcard arm is not, and a
/// longer variant name does not count as a shorter one.
#[test]
fn the_scan_finds_a_match_over_every_kind() {
    let kinds: Vec<String> = ["Postgres", "Redis", "ObjectStorage", "KubernetesState"]
        .map(String::from)
        .to_vec();
    let full = "match s { AssetSource::Postgres(_) => 1, AssetSource::Redis(_) => 2, \
                AssetKind::ObjectStorage => 3, AssetSource::KubernetesState(_) => 4 }";
    assert_eq!(named(full, &["AssetSource", "AssetKind"], &kinds).len(), 4);
    let wildcard = "match s { AssetSource::Postgres(_) => 1, _ => 2 }";
    assert_eq!(
        named(wildcard, &["AssetSource", "AssetKind"], &kinds).len(),
        1
    );
    let longer = "AssetSource::RedisCluster(_)";
    assert!(named(longer, &["AssetSource"], &kinds).is_empty());
    let in_tests = "fn f() {}\n#[cfg(test)]\nmod tests { AssetSource::Redis }";
    assert!(named(production(in_tests), &["AssetSource"], &kinds).is_empty());
    let test_only_helper = "#[cfg(test)]\nfn g() {}\nfn f() { AssetSource::Redis }";
    assert_eq!(
        named(production(test_only_helper), &["AssetSource"], &kinds).len(),
        1
    );
}
