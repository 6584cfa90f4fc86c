//! The generated CRDs: no drift from crds/, every example parses, defaults land, and every CEL
//! rule fires on the input it exists for (evaluated client-side with kube's CEL validator; the
//! same objects are sent to a real API server by tests/control_plane.rs).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use kube::core::cel::Validator;
use lifeboat_api::{BackupPolicy, DrillSchedule, RestoreRequest};
use serde_json::{Value, json};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn committed_crds_match_the_rust_types() {
    for (file, crd) in lifeboat_api::crds() {
        let generated = lifeboat_api::crd_yaml(&crd).unwrap();
        // crds/ for kubectl and kustomize, the chart's copy for Helm (a chart cannot read files
        // outside its directory).
        for dir in ["crds", "charts/lifeboat/files/crds"] {
            let path = repo().join(dir).join(file);
            let committed = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}; run `make crds`", path.display()));
            assert!(
                committed == generated,
                "{} differs from what the Rust types generate; run `make crds` and commit the result",
                path.display()
            );
        }
    }
    let files: Vec<_> = std::fs::read_dir(repo().join("crds")).unwrap().collect();
    assert_eq!(
        files.len(),
        3,
        "crds/ holds exactly the three generated CRDs"
    );
}

#[test]
fn committed_api_reference_matches_the_crds() {
    let crds: Vec<_> = lifeboat_api::crds().into_iter().map(|(_, c)| c).collect();
    let path = repo().join("docs/api-reference.md");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == lifeboat_api::reference::markdown(&crds),
        "{} differs from what the CRDs render; run `make crds` and commit the result",
        path.display()
    );
}

#[test]
fn committed_drill_evidence_schema_matches_the_rust_types() {
    let path = repo().join("docs/drill-evidence.schema.json");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == lifeboat_api::evidence::schema_json().unwrap(),
        "{} differs from lifeboat_api::evidence; run `make crds` and commit the result",
        path.display()
    );
}

#[test]
fn crds_are_namespaced_with_status_and_a_lifeboat_category() {
    for (_, crd) in lifeboat_api::crds() {
        assert_eq!(crd.spec.group, "lifeboat.dev");
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(
            crd.spec.names.categories.as_deref(),
            Some(&["lifeboat".to_string()][..])
        );
        assert!(
            crd.spec
                .names
                .short_names
                .as_ref()
                .is_some_and(|s| !s.is_empty())
        );
        let v = &crd.spec.versions[0];
        assert_eq!(v.name, "v1alpha1");
        assert!(v.served && v.storage);
        assert!(
            v.subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some()
        );
        let columns: Vec<&str> = v
            .additional_printer_columns
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert!(columns.contains(&"Ready"), "{columns:?}");
    }
}

/// Every Lifeboat object in deploy/examples, as (file, kind, JSON); prerequisites/ holds what
/// the examples need that is not Lifeboat's (a PVC), applied first.
fn examples() -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    let dir = repo().join("deploy/examples");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    paths.sort();
    for path in paths {
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in serde_norway::Deserializer::from_str(&text) {
            let value: Value = serde::Deserialize::deserialize(doc).unwrap();
            if value.is_null() {
                continue;
            }
            let kind = value["kind"].as_str().unwrap().to_owned();
            out.push((path.display().to_string(), kind, value));
        }
    }
    out
}

fn schema_of(kind: &str) -> Value {
    let crd = lifeboat_api::crds()
        .into_iter()
        .map(|(_, c)| c)
        .find(|c| c.spec.names.kind == kind)
        .unwrap();
    serde_json::to_value(
        crd.spec.versions[0]
            .schema
            .as_ref()
            .unwrap()
            .open_api_v3_schema
            .as_ref()
            .unwrap(),
    )
    .unwrap()
}

fn cel(kind: &str, obj: &Value, old: Option<&Value>) -> Result<(), String> {
    Validator::new()
        .validate(&schema_of(kind), obj, old)
        .map_err(|e| e.to_string())
}

#[test]
fn every_example_parses_into_the_rust_types_and_passes_cel() {
    let examples = examples();
    let kinds: Vec<&str> = examples.iter().map(|(_, k, _)| k.as_str()).collect();
    for kind in ["BackupPolicy", "RestoreRequest", "DrillSchedule"] {
        assert!(kinds.contains(&kind), "no example of {kind}");
    }
    for (file, kind, value) in &examples {
        let parsed = match kind.as_str() {
            "BackupPolicy" => serde_json::from_value::<BackupPolicy>(value.clone()).map(|_| ()),
            "RestoreRequest" => serde_json::from_value::<RestoreRequest>(value.clone()).map(|_| ()),
            "DrillSchedule" => serde_json::from_value::<DrillSchedule>(value.clone()).map(|_| ()),
            other => panic!("{file}: unexpected kind {other}"),
        };
        parsed.unwrap_or_else(|e| panic!("{file}: {e}"));
        cel(kind, value, None).unwrap_or_else(|e| panic!("{file}: {e}"));
    }
}

#[test]
fn example_schedules_and_durations_are_valid() {
    for (file, _, value) in examples() {
        let spec = &value["spec"];
        if let Some(schedule) = spec["schedule"].as_str() {
            lifeboat_api::schedule::CronSchedule::parse(schedule, spec["timeZone"].as_str())
                .unwrap_or_else(|e| panic!("{file}: {e}"));
        }
    }
}

#[test]
fn defaults_fill_what_users_leave_out() {
    let policy: BackupPolicy = serde_json::from_value(json!({
        "apiVersion": "lifeboat.dev/v1alpha1", "kind": "BackupPolicy",
        "metadata": {"name": "p"},
        "spec": {
            "schedule": "@hourly",
            "assets": [{"name": "db", "postgres": {"host": "db", "user": "u", "databases": ["app"]}}],
            "retention": {"maxAge": "7d"},
            "destination": {"volume": {"claimName": "backups"}}
        }
    }))
    .unwrap();
    let spec = &policy.spec;
    let lifeboat_api::backup_policy::AssetSource::Postgres(pg) = &spec.assets[0].source else {
        panic!("a postgres asset reads as one: {:?}", spec.assets[0].source);
    };
    assert_eq!(pg.connection.port, 5432);
    assert_eq!(spec.retention.min_keep, 1);
    assert_eq!(spec.compression.level, 1);
    assert_eq!(spec.timeout.as_secs(), 3600);
    assert_eq!(spec.history.successful, 3);
    assert!(!spec.suspend);
    // The API server applies the same defaults: they are in the schema.
    let schema = schema_of("BackupPolicy");
    let port = &schema["properties"]["spec"]["properties"]["assets"]["items"]["properties"]["postgres"]
        ["properties"]["port"];
    assert_eq!(port["default"], json!(5432));
    let rr: RestoreRequest = serde_json::from_value(json!({
        "apiVersion": "lifeboat.dev/v1alpha1", "kind": "RestoreRequest", "metadata": {"name": "r"},
        "spec": {"source": {"policy": "p"}}
    }))
    .unwrap();
    assert_eq!(rr.spec.source.backup_id, "latest");
    assert!(!rr.spec.execute, "restores are plan-only unless asked");
    assert_eq!(rr.spec.options.postgres_jobs, 2);
}

fn policy() -> Value {
    json!({
        "apiVersion": "lifeboat.dev/v1alpha1", "kind": "BackupPolicy",
        "metadata": {"name": "p", "namespace": "n"},
        "spec": {
            "schedule": "0 * * * *",
            "assets": [
                {"name": "db", "postgres": {"host": "db", "user": "u", "databases": ["app"]}},
                {"name": "cache", "redis": {"host": "cache", "dataDir": "/data"}}
            ],
            "retention": {"keepLast": 24, "maxAge": "7d"},
            "destination": {"s3": {"endpoint": "http://127.0.0.1:9000", "bucket": "backups",
                                    "credentialsSecret": {"name": "s3"}}}
        }
    })
}

fn restore() -> Value {
    json!({
        "apiVersion": "lifeboat.dev/v1alpha1", "kind": "RestoreRequest",
        "metadata": {"name": "r", "namespace": "n"},
        "spec": {
            "source": {"policy": "p"},
            "assets": ["db"],
            "targets": [{"asset": "db", "postgres": {"host": "staging", "user": "u"}}],
            "validation": {"checks": [{"name": "health", "http": {"url": "http://app/health"}}]}
        }
    })
}

fn drill() -> Value {
    json!({
        "apiVersion": "lifeboat.dev/v1alpha1", "kind": "DrillSchedule",
        "metadata": {"name": "d", "namespace": "n"},
        "spec": {
            "schedule": "0 6 1 */3 *", "policy": "p", "assets": ["db"],
            "staging": {"targets": [{"asset": "db", "postgres": {"host": "staging", "user": "u"}}]},
            "objectives": {"rto": "30m", "rpo": "15m"}
        }
    })
}

/// Applies `edit` to a copy of `base` and asserts CEL rejects it with `message`.
fn assert_rejected(kind: &str, base: &Value, edit: impl FnOnce(&mut Value), message: &str) {
    assert!(
        cel(kind, base, None).is_ok(),
        "the base {kind} must be valid: {:?}",
        cel(kind, base, None)
    );
    let mut obj = base.clone();
    edit(&mut obj);
    match cel(kind, &obj, None) {
        Ok(()) => panic!("{kind} accepted although it should fail with {message:?}: {obj:#}"),
        Err(e) => assert!(e.contains(message), "{kind}: expected {message:?}, got {e}"),
    }
}

#[test]
fn cel_asset_needs_exactly_one_kind() {
    let msg = "an asset needs exactly one of postgres, redis, objectStorage or kubernetesState";
    assert_rejected(
        "BackupPolicy",
        &policy(),
        |p| p["spec"]["assets"][0]["redis"] = json!({"host": "x"}),
        msg,
    );
    assert_rejected(
        "BackupPolicy",
        &policy(),
        |p| p["spec"]["assets"][1] = json!({"name": "empty"}),
        msg,
    );
}

#[test]
fn cel_canaries_only_for_data_sources() {
    let msg = "canary markers are written into PostgreSQL, Redis and bucket sources only";
    let mut ok = policy();
    ok["spec"]["assets"][0]["canary"] = json!(true);
    assert_eq!(cel("BackupPolicy", &ok, None), Ok(()));
    let mut bucket = policy();
    bucket["spec"]["assets"][0] = json!({"name": "media", "canary": true,
        "objectStorage": {"endpoint": "https://s3.example.com", "bucket": "b",
                          "credentialsSecret": {"name": "s"}}});
    assert_eq!(cel("BackupPolicy", &bucket, None), Ok(()));
    // Cluster state has nowhere to hold a marker.
    assert_rejected(
        "BackupPolicy",
        &policy(),
        |p| {
            p["spec"]["assets"][0] =
                json!({"name": "cluster", "canary": true, "kubernetesState": {}})
        },
        msg,
    );
}

#[test]
fn cel_destination_needs_exactly_one_kind() {
    let msg = "destination needs exactly one of volume or s3";
    assert_rejected(
        "BackupPolicy",
        &policy(),
        |p| p["spec"]["destination"]["volume"] = json!({"claimName": "pvc"}),
        msg,
    );
    assert_rejected(
        "BackupPolicy",
        &policy(),
        |p| p["spec"]["destination"] = json!({}),
        msg,
    );
}

#[test]
fn cel_object_lock_needs_a_bucket() {
    let lock = json!({"mode": "Compliance", "retainFor": "30d"});
    assert_rejected(
        "BackupPolicy",
        &policy(),
        |p| {
            p["spec"]["destination"] =
                json!({"volume": {"claimName": "pvc"}, "objectLock": lock.clone()})
        },
        "objectLock needs an s3 destination",
    );
    let mut bucket = policy();
    bucket["spec"]["destination"]["objectLock"] = lock;
    assert_eq!(cel("BackupPolicy", &bucket, None), Ok(()));
}

#[test]
fn cel_a_copy_is_elsewhere_and_not_of_point_in_time_assets() {
    let same = json!({"endpoint": "http://127.0.0.1:9000", "bucket": "backups",
                      "credentialsSecret": {"name": "s3"}});
    let msg = "a copy must be in another place than the destination";
    assert_rejected(
        "BackupPolicy",
        &policy(),
        |p| p["spec"]["copies"] = json!([{"name": "dr", "s3": same.clone()}]),
        msg,
    );
    // Another bucket, or another prefix in the same bucket: a copy.
    for (field, value) in [("bucket", "dr-backups"), ("prefix", "offsite")] {
        let mut elsewhere = same.clone();
        elsewhere[field] = json!(value);
        let mut p = policy();
        p["spec"]["copies"] = json!([{"name": "dr", "s3": elsewhere}]);
        assert_eq!(cel("BackupPolicy", &p, None), Ok(()), "{field}");
    }
    let mut other = same.clone();
    other["bucket"] = json!("dr-backups");
    assert_rejected(
        "BackupPolicy",
        &policy(),
        |p| {
            p["spec"]["copies"] = json!([{"name": "dr", "s3": other.clone()}]);
            p["spec"]["assets"][0]["postgres"]["pointInTime"] = json!({"user": "wal"});
        },
        "copies are not made of pointInTime assets yet",
    );
}

#[test]
fn cel_retention_rules() {
    assert_rejected(
        "BackupPolicy",
        &policy(),
        |p| p["spec"]["retention"] = json!({"minKeep": 2}),
        "retention needs keepLast, maxAge or both",
    );
    assert_rejected(
        "BackupPolicy",
        &policy(),
        |p| p["spec"]["retention"] = json!({"keepLast": 2, "minKeep": 5}),
        "keepLast must be at least minKeep",
    );
}

#[test]
fn cel_paths_and_urls() {
    assert_rejected(
        "BackupPolicy",
        &policy(),
        |p| p["spec"]["destination"]["s3"]["endpoint"] = json!("ftp://example.com"),
        "endpoint must be an http:// or https:// URL",
    );
    assert_rejected(
        "BackupPolicy",
        &policy(),
        |p| p["spec"]["destination"]["s3"]["prefix"] = json!("../other-team"),
        "prefix must be relative",
    );
    assert_rejected(
        "BackupPolicy",
        &policy(),
        |p| p["spec"]["destination"] = json!({"volume": {"claimName": "pvc", "subPath": "/etc"}}),
        "subPath must be relative",
    );
    assert_rejected(
        "BackupPolicy",
        &policy(),
        |p| p["spec"]["assets"][1]["redis"]["dataDir"] = json!("data"),
        "dataDir must be an absolute path",
    );
    assert_rejected(
        "RestoreRequest",
        &restore(),
        |r| r["spec"]["validation"]["checks"][0]["http"]["url"] = json!("app/health"),
        "url must be an absolute http:// or https:// URL",
    );
}

/// Names that must never reach a tool or a connection as anything but data.
const HOSTILE: [&str; 13] = [
    "host=other dbname=payroll",
    "postgresql://x/y",
    "-c",
    "--help",
    "a/b",
    "..",
    "a\nb",
    "a'b",
    "a\"b",
    "a=b",
    "",
    "/var/run/postgresql",
    "a b",
];

/// Each hostile name, and one too long, in `field` of `base` is refused with `message`.
fn refuses_hostile(kind: &str, base: &Value, field: &[&str], skip: &[&str], message: &str) {
    let too_long = "a".repeat(600);
    for name in HOSTILE.iter().copied().chain([too_long.as_str()]) {
        if skip.contains(&name) {
            continue;
        }
        assert_rejected(
            kind,
            base,
            |obj| {
                let mut at = &mut *obj;
                for f in field {
                    at = match f.parse::<usize>() {
                        Ok(i) => &mut at[i],
                        Err(_) => &mut at[*f],
                    };
                }
                *at = json!(name);
            },
            message,
        );
    }
}

#[test]
fn cel_identifiers_are_data() {
    let p = policy();
    let db = ["spec", "assets", "0", "postgres"];
    let database = "database names are 1-63 ASCII letters";
    refuses_hostile(
        "BackupPolicy",
        &p,
        &[&db[..], &["databases", "0"]].concat(),
        &[],
        database,
    );
    refuses_hostile(
        "BackupPolicy",
        &p,
        &[&db[..], &["user"]].concat(),
        &[],
        "user must be",
    );
    refuses_hostile(
        "BackupPolicy",
        &p,
        &[&db[..], &["host"]].concat(),
        &[],
        "host must be a DNS name",
    );
    refuses_hostile(
        "BackupPolicy",
        &p,
        &["spec", "assets", "1", "redis", "host"],
        &[],
        "host must be a DNS name",
    );
    refuses_hostile(
        "BackupPolicy",
        &p,
        &["spec", "assets", "1", "redis", "username"],
        &[],
        "username must be",
    );
    let mut with_options = p.clone();
    with_options["spec"]["assets"][0]["postgres"]["dumpOptions"] =
        json!({"schemas": ["public"], "excludeTables": ["audit_*"]});
    for list in ["schemas", "excludeTables"] {
        refuses_hostile(
            "BackupPolicy",
            &with_options,
            &[&db[..], &["dumpOptions", list, "0"]].concat(),
            &[],
            "schema and table patterns are",
        );
    }
    refuses_hostile(
        "BackupPolicy",
        &p,
        &["spec", "destination", "s3", "prefix"],
        &["", "a/b"],
        "prefix must be relative",
    );
    let mut r = restore();
    r["spec"]["validation"]["checks"] = json!([{"name": "rows", "sql": {"asset": "db",
        "database": "app", "query": "SELECT true", "expect": "t"}}]);
    r["spec"]["targets"][0]["postgres"]["database"] = json!("app_staging");
    refuses_hostile(
        "RestoreRequest",
        &r,
        &["spec", "validation", "checks", "0", "sql", "database"],
        &[],
        database,
    );
    refuses_hostile(
        "RestoreRequest",
        &r,
        &["spec", "targets", "0", "postgres", "database"],
        &[],
        database,
    );
    let mut k = restore();
    k["spec"]["assets"] = json!(["state"]);
    k["spec"]["targets"] = json!([{"asset": "state", "kubernetesState": {"namespaceMapping": {"prod": "prod-drill"}}}]);
    refuses_hostile(
        "RestoreRequest",
        &k,
        &[
            "spec",
            "targets",
            "0",
            "kubernetesState",
            "namespaceMapping",
            "prod",
        ],
        &[],
        "namespace names are DNS labels",
    );
    assert_rejected(
        "RestoreRequest",
        &k,
        |r| r["spec"]["targets"][0]["kubernetesState"]["namespaceMapping"] = json!({"../x": "y"}),
        "namespace names are DNS labels",
    );
    // Ordinary names pass: IPv6 and IPv4 literals, DNS names, roles with '@'.
    let mut ok = p.clone();
    ok["spec"]["assets"][0]["postgres"]["host"] = json!("fd00::5");
    ok["spec"]["assets"][0]["postgres"]["user"] = json!("app.user@server");
    ok["spec"]["assets"][0]["postgres"]["databases"] = json!(["shop_2024-eu", "app"]);
    ok["spec"]["assets"][1]["redis"]["host"] = json!("10.0.0.7");
    ok["spec"]["destination"]["s3"]["prefix"] = json!("team-a/backups/");
    assert_eq!(cel("BackupPolicy", &ok, None), Ok(()));
}

#[test]
fn cel_http_check_urls_are_what_the_agent_sends() {
    for bad in [
        "http://app/health\r\nX-Injected: 1",
        "http://app/he alth",
        "http://app/\u{7f}",
        "ftp://app/health",
        "file:///etc/passwd",
        "http://",
    ] {
        assert_rejected(
            "RestoreRequest",
            &restore(),
            |r| r["spec"]["validation"]["checks"][0]["http"]["url"] = json!(bad),
            "url must be an absolute http:// or https:// URL",
        );
    }
    for good in [
        "https://shop.staging.svc/health",
        "http://[::1]:8080/health?full=1",
    ] {
        let mut r = restore();
        r["spec"]["validation"]["checks"][0]["http"]["url"] = json!(good);
        assert_eq!(cel("RestoreRequest", &r, None), Ok(()), "{good}");
    }
}

#[test]
fn cel_encryption_recipients_are_age_keys() {
    assert_rejected(
        "BackupPolicy",
        &policy(),
        |p| p["spec"]["encryption"] = json!({"recipients": ["ssh-ed25519 AAAA"]}),
        "recipients must be age public keys",
    );
}

#[test]
fn cel_checks_and_targets_need_exactly_one_kind() {
    assert_rejected(
        "RestoreRequest",
        &restore(),
        |r| r["spec"]["validation"]["checks"][0]["redis"] = json!({"asset": "cache", "key": "k"}),
        "a check needs exactly one of http, sql or redis",
    );
    assert_rejected(
        "RestoreRequest",
        &restore(),
        |r| r["spec"]["targets"][0]["redis"] = json!({"host": "x"}),
        "a target needs exactly one of postgres, redis, objectStorage, kubernetesState or dataVolume",
    );
}

#[test]
fn cel_restore_targets_name_restored_assets() {
    assert_rejected(
        "RestoreRequest",
        &restore(),
        |r| r["spec"]["assets"] = json!(["cache"]),
        "every target must name an asset listed in assets",
    );
}

#[test]
fn cel_taken_before_chooses_among_latest_backups_only() {
    assert_rejected(
        "RestoreRequest",
        &restore(),
        |r| {
            r["spec"]["source"]["takenBefore"] = json!("2026-12-01T10:00:00Z");
            r["spec"]["source"]["backupId"] = json!("20261201T090000Z");
        },
        "source.takenBefore chooses among each asset's backups: leave source.backupId at latest",
    );
    let mut ok = restore();
    ok["spec"]["source"]["takenBefore"] = json!("2026-12-01T10:00:00Z");
    assert_eq!(cel("RestoreRequest", &ok, None), Ok(()));
    ok["spec"]["source"]["backupId"] = json!("latest");
    assert_eq!(cel("RestoreRequest", &ok, None), Ok(()));
}

#[test]
fn cel_restore_spec_is_frozen_once_executing() {
    let mut planned = restore();
    let mut executing = planned.clone();
    executing["spec"]["execute"] = json!(true);
    // Plan-only requests may be edited, and switched to execute.
    let mut edited = planned.clone();
    edited["spec"]["options"] = json!({"postgresJobs": 4});
    assert!(cel("RestoreRequest", &edited, Some(&planned)).is_ok());
    assert!(cel("RestoreRequest", &executing, Some(&planned)).is_ok());
    // Once executing, nothing changes: not the source, not execute itself.
    let mut changed = executing.clone();
    changed["spec"]["source"]["backupId"] = json!("20261124T100000Z");
    let err = cel("RestoreRequest", &changed, Some(&executing)).unwrap_err();
    assert!(
        err.contains("the spec is frozen once execute is true"),
        "{err}"
    );
    planned["spec"]["execute"] = json!(false);
    let err = cel("RestoreRequest", &planned, Some(&executing)).unwrap_err();
    assert!(
        err.contains("the spec is frozen once execute is true"),
        "{err}"
    );
}

#[test]
fn cel_drill_needs_a_staging_target_per_asset() {
    assert_rejected(
        "DrillSchedule",
        &drill(),
        |d| d["spec"]["assets"] = json!(["db", "cache"]),
        "every drilled asset needs a staging target",
    );
}

#[test]
fn cel_schedules_time_zones_and_durations_explain_themselves() {
    let schedule = "schedule must be 5 cron fields";
    for bad in [
        "0 0 0 * * *",
        "* * * *",
        "TZ=UTC 0 * * * *",
        "@every 5m",
        "",
    ] {
        assert_rejected(
            "BackupPolicy",
            &policy(),
            |p| p["spec"]["schedule"] = json!(bad),
            schedule,
        );
    }
    assert_rejected(
        "DrillSchedule",
        &drill(),
        |d| d["spec"]["schedule"] = json!("0 0 6 1 */3 *"),
        schedule,
    );
    for good in ["@daily", "*/15 * * * *", "0 6 1 JAN,APR,JUL,OCT MON-FRI"] {
        let mut p = policy();
        p["spec"]["schedule"] = json!(good);
        assert!(cel("BackupPolicy", &p, None).is_ok(), "{good}");
    }
    assert_rejected(
        "BackupPolicy",
        &policy(),
        |p| p["spec"]["timeZone"] = json!("UTC+2 hours"),
        "timeZone must be an IANA time zone name",
    );
    let duration = "must be a duration such as 90s, 15m, 1h30m or 7d";
    for bad in ["7days", "15", "0m", "1.5h", "30m1h", "-5m"] {
        assert_rejected(
            "BackupPolicy",
            &policy(),
            |p| p["spec"]["retention"]["maxAge"] = json!(bad),
            duration,
        );
    }
    assert_rejected(
        "DrillSchedule",
        &drill(),
        |d| d["spec"]["objectives"]["rto"] = json!("half an hour"),
        duration,
    );
}
