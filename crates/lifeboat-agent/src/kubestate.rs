//! The Kubernetes-state asset: a restorable dump of the objects API discovery finds, unlike
//! `kubectl get all` (which covers a handful of kinds and keeps fields no apply accepts).
//!
//! Backup lists every resource kind that supports `list` in its preferred version, in the
//! selected namespaces (and cluster-scoped kinds when asked), and keeps each object as something
//! an apply can take back: server-managed metadata, `status` and values the cluster assigns are
//! removed, and objects that something else recreates are left out (see [`skipped_kind`] and
//! [`keep_object`]). The result is one `cluster_state.json` document.
//!
//! Restore applies it by server-side apply in dependency order — CRDs (then waits until they are
//! Established), Namespaces, other cluster-scoped objects, then namespaced ones with what others
//! refer to first — with namespaces renamed as the target asks. Without `--execute` every apply is
//! a server-side dry run: the API server validates each object and nothing changes.
//!
//! Both are held to a [`KubernetesStateScope`]: a selection or a dump reaching a namespace outside
//! it, or a cluster-scoped object without the cluster opt-in, is refused whole before anything is
//! read or applied (a dump's checksum proves only that it is the dump that was stored, not who
//! made it). In a namespace scope the namespaces' own guard rails — the Namespace object,
//! ResourceQuotas, LimitRanges — belong to the platform team: never dumped, never applied.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use kube::discovery::{ApiCapabilities, ApiResource, Discovery, Scope, verbs};
use lifeboat_api::agent_job::KubernetesStateScope;
use lifeboat_api::backup_policy::KubernetesStateAsset;
use lifeboat_api::common::KubernetesStateTarget;
use lifeboat_api::conditions::Status;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use lifeboat_api::agent_result::ErrorClass;

use crate::error::{AgentError, Result};

/// The field manager of restored objects.
pub const FIELD_MANAGER: &str = "lifeboat-restore";

/// The document stored as `<asset>.cluster_state.json`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterState {
    pub captured_at: Timestamp,
    pub server_version: String,
    pub resources: Vec<ResourceDump>,
}

/// Every kept object of one kind.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceDump {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub namespaced: bool,
    pub items: Vec<Value>,
}

impl ResourceDump {
    fn api_resource(&self) -> ApiResource {
        ApiResource {
            group: self.group.clone(),
            version: self.version.clone(),
            api_version: if self.group.is_empty() {
                self.version.clone()
            } else {
                format!("{}/{}", self.group, self.version)
            },
            kind: self.kind.clone(),
            plural: self.plural.clone(),
        }
    }

    /// `plural.group`, or `plural` for the core group: how users name resources in the spec.
    fn qualified(&self) -> String {
        qualified(&self.plural, &self.group)
    }
}

fn qualified(plural: &str, group: &str) -> String {
    if group.is_empty() {
        plural.to_owned()
    } else {
        format!("{plural}.{group}")
    }
}

/// Kinds never dumped: recreated or owned by the cluster itself (events, endpoints, leases,
/// nodes, API registrations, priority and fairness settings, what CSI drivers publish), or
/// meaningless to re-apply.
pub fn skipped_kind(plural: &str, group: &str) -> bool {
    matches!(
        (group, plural),
        (
            "",
            "events" | "endpoints" | "nodes" | "componentstatuses" | "bindings"
        ) | ("events.k8s.io", "events")
            | ("discovery.k8s.io", "endpointslices")
            | ("coordination.k8s.io", "leases")
            | ("apiregistration.k8s.io", "apiservices")
            | ("flowcontrol.apiserver.k8s.io", _)
            | (
                "storage.k8s.io",
                "csinodes" | "volumeattachments" | "csistoragecapacities"
            )
            | ("certificates.k8s.io", "certificatesigningrequests")
            | ("metrics.k8s.io", _)
    )
}

/// Kinds that, in a namespace scope, are the platform team's and not the namespace user's: the
/// limits put on a namespace (a restore must not raise its own quota).
fn platform_owned(plural: &str, group: &str) -> bool {
    matches!((group, plural), ("", "resourcequotas" | "limitranges"))
}

fn is_namespace_kind(plural: &str, group: &str) -> bool {
    group.is_empty() && plural == "namespaces"
}

fn out_of_scope(message: String) -> AgentError {
    AgentError::new(ErrorClass::OutOfScope, message)
}

/// Refuses a selection that reaches outside `scope`: every namespace, cluster-scoped kinds, or a
/// namespace the scope does not name.
pub fn check_selection(spec: &KubernetesStateAsset, scope: &KubernetesStateScope) -> Result<()> {
    if scope.allows_cluster() {
        return Ok(());
    }
    if spec.include_cluster_resources {
        return Err(out_of_scope(
            "includeClusterResources needs the platform team's cluster opt-in for this namespace"
                .into(),
        ));
    }
    if spec.namespaces.is_empty() {
        return Err(out_of_scope(
            "a dump of every namespace needs the platform team's cluster opt-in; name the namespaces".into(),
        ));
    }
    let outside: Vec<&str> = spec
        .namespaces
        .iter()
        .filter(|n| !scope.allows_namespace(n))
        .map(String::as_str)
        .collect();
    if !outside.is_empty() {
        return Err(out_of_scope(format!(
            "namespaces {} are not allowed for this namespace's Kubernetes-state backups",
            outside.join(", ")
        )));
    }
    Ok(())
}

/// Whether an object of a dumped kind is kept: not if a controller owns it (its owner recreates
/// it, and a copy would fight the new one), nor if the cluster creates it in every namespace.
pub fn keep_object(plural: &str, group: &str, obj: &Value) -> bool {
    let owned = obj["metadata"]["ownerReferences"]
        .as_array()
        .is_some_and(|refs| refs.iter().any(|r| r["controller"] == true));
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    let auto = match (group, plural) {
        ("", "configmaps") => name == "kube-root-ca.crt",
        ("", "serviceaccounts") => name == "default",
        ("", "secrets") => obj["type"] == "kubernetes.io/service-account-token",
        ("", "namespaces") => {
            name.starts_with("kube-") || name == "default" || name == "kube-node-lease"
        }
        ("rbac.authorization.k8s.io", "clusterroles" | "clusterrolebindings") => {
            name.starts_with("system:")
        }
        _ => false,
    };
    // Lifeboat's own accounts, bindings and Jobs: the operator makes them where they belong.
    let lifeboat = obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "lifeboat-operator";
    !owned && !auto && !lifeboat
}

/// Removes what the server sets, so that the object applies cleanly anywhere.
pub fn strip(plural: &str, group: &str, obj: &mut Value) {
    if let Some(o) = obj.as_object_mut() {
        o.remove("status");
    }
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        for field in [
            "uid",
            "resourceVersion",
            "generation",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "managedFields",
            "selfLink",
            "ownerReferences",
        ] {
            meta.remove(field);
        }
        if let Some(ann) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
            // Stale copies of old applies and bookkeeping of controllers: never the user's intent.
            ann.remove("kubectl.kubernetes.io/last-applied-configuration");
            ann.remove("deployment.kubernetes.io/revision");
            ann.retain(|k, _| !k.starts_with("pv.kubernetes.io/"));
            if ann.is_empty() {
                meta.remove("annotations");
            }
        }
    }
    match (group, plural) {
        ("", "services") => {
            // Addresses are assigned by the cluster restored into.
            if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
                spec.remove("clusterIP");
                spec.remove("clusterIPs");
                spec.remove("healthCheckNodePort");
            }
        }
        ("", "persistentvolumeclaims") => {
            if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
                spec.remove("volumeName");
            }
        }
        ("", "serviceaccounts") => {
            if let Some(o) = obj.as_object_mut() {
                o.remove("secrets");
            }
        }
        _ => {}
    }
}

fn api_error(what: &str, e: kube::Error) -> AgentError {
    match &e {
        kube::Error::Api(s) if s.code == 401 || s.code == 403 => {
            AgentError::new(ErrorClass::Auth, format!("{what}: {}", s.message))
        }
        kube::Error::Api(s) if s.code == 404 => {
            AgentError::not_found(format!("{what}: {}", s.message))
        }
        kube::Error::Api(s) => AgentError::config(format!("{what}: {}", s.message)),
        _ => AgentError::new(ErrorClass::SourceUnreachable, format!("{what}: {e}")),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| AgentError::config(format!("starting the Kubernetes client: {e}")))
}

async fn client() -> Result<kube::Client> {
    kube::Client::try_default().await.map_err(|e| {
        AgentError::new(
            ErrorClass::SourceUnreachable,
            format!("no Kubernetes API (in-cluster service account or KUBECONFIG): {e}"),
        )
    })
}

/// Dumps what `spec` selects, within `scope`. Returns the document and a one-line description.
pub fn backup(
    spec: &KubernetesStateAsset,
    scope: &KubernetesStateScope,
) -> Result<(ClusterState, String)> {
    check_selection(spec, scope)?;
    runtime()?.block_on(backup_async(spec, scope))
}

async fn backup_async(
    spec: &KubernetesStateAsset,
    scope: &KubernetesStateScope,
) -> Result<(ClusterState, String)> {
    let client = client().await?;
    let captured_at = Timestamp::now();
    let server_version = client
        .apiserver_version()
        .await
        .map(|v| v.git_version)
        .map_err(|e| api_error("server version", e))?;
    let discovery = Discovery::new(client.clone())
        .run()
        .await
        .map_err(|e| api_error("API discovery", e))?;
    crate::fault::point("kubestate.discovered");
    let lp = match &spec.label_selector {
        Some(s) => ListParams::default().labels(s),
        None => ListParams::default(),
    };
    let wanted_ns = |ns: &str| {
        (spec.namespaces.is_empty() || spec.namespaces.iter().any(|n| n == ns))
            && !spec.exclude_namespaces.iter().any(|n| n == ns)
    };
    // In a namespace scope the account may read only those namespaces: each is listed by
    // itself, never the whole cluster.
    let namespaces: Vec<&String> = match scope {
        KubernetesStateScope::Cluster => Vec::new(),
        KubernetesStateScope::Namespaces(_) => spec
            .namespaces
            .iter()
            .filter(|n| wanted_ns(n.as_str()))
            .collect(),
    };
    let mut resources = Vec::new();
    let mut unreadable = std::collections::BTreeSet::new();
    let mut readable = std::collections::BTreeSet::new();
    for group in discovery.groups() {
        for (ar, caps) in group.recommended_resources() {
            if !selected(spec, &ar, &caps) {
                continue;
            }
            let namespaced = caps.scope == Scope::Namespaced;
            let what = || format!("listing {}", qualified(&ar.plural, &ar.group));
            let found: Vec<DynamicObject> = if scope.allows_cluster() {
                // Namespaces are selected by name, not by label: a dump of a namespace carries it.
                let list_params = if is_namespace_kind(&ar.plural, &ar.group) {
                    ListParams::default()
                } else {
                    lp.clone()
                };
                Api::<DynamicObject>::all_with(client.clone(), &ar)
                    .list(&list_params)
                    .await
                    .map_err(|e| api_error(&what(), e))?
                    .items
            } else if platform_owned(&ar.plural, &ar.group)
                || is_namespace_kind(&ar.plural, &ar.group)
                || !namespaced
            {
                continue;
            } else {
                let mut all = Vec::new();
                for ns in &namespaces {
                    let api = Api::<DynamicObject>::namespaced_with(client.clone(), ns, &ar);
                    match api.list(&lp).await {
                        Ok(list) => {
                            readable.insert(ns.as_str());
                            all.extend(list.items);
                        }
                        // The platform team's role says which kinds the account reads: one it
                        // leaves out is named in the record, unless the spec asked for it.
                        Err(kube::Error::Api(e))
                            if e.code == 403 && spec.include_resources.is_empty() =>
                        {
                            unreadable.insert(qualified(&ar.plural, &ar.group));
                        }
                        Err(e) => return Err(api_error(&what(), e)),
                    }
                }
                all
            };
            // Once per kind listed: `kubestate.listed@<n>` stops a dump midway.
            crate::fault::point("kubestate.listed");
            let mut items = Vec::new();
            for obj in found {
                let ns = obj.metadata.namespace.clone().unwrap_or_default();
                let name = obj.metadata.name.clone().unwrap_or_default();
                let in_scope = if namespaced {
                    wanted_ns(&ns)
                } else if ar.plural == "namespaces" && ar.group.is_empty() {
                    wanted_ns(&name)
                } else {
                    spec.include_cluster_resources
                };
                if !in_scope {
                    continue;
                }
                let mut v = serde_json::to_value(&obj)
                    .map_err(|e| AgentError::config(format!("encoding {name}: {e}")))?;
                if !keep_object(&ar.plural, &ar.group, &v) {
                    continue;
                }
                v["apiVersion"] = Value::from(ar.api_version.clone());
                v["kind"] = Value::from(ar.kind.clone());
                strip(&ar.plural, &ar.group, &mut v);
                items.push(v);
            }
            if !items.is_empty() {
                resources.push(ResourceDump {
                    group: ar.group.clone(),
                    version: ar.version.clone(),
                    kind: ar.kind.clone(),
                    plural: ar.plural.clone(),
                    namespaced,
                    items,
                });
            }
        }
    }
    // Not one kind readable: the account is not bound there, not a kind the role leaves out.
    if let Some(ns) = namespaces.iter().find(|n| !readable.contains(n.as_str())) {
        return Err(AgentError::new(
            ErrorClass::Auth,
            format!("the backup account may read nothing in namespace {ns}"),
        ));
    }
    resources.sort_by_key(ResourceDump::qualified);
    let objects: usize = resources.iter().map(|r| r.items.len()).sum();
    let mut describe = format!(
        "kubernetes {server_version}: {objects} objects of {} kinds in {}",
        resources.len(),
        if spec.namespaces.is_empty() {
            "every namespace".to_owned()
        } else {
            format!("namespaces {}", spec.namespaces.join(","))
        }
    );
    if !unreadable.is_empty() {
        let kinds: Vec<String> = unreadable.into_iter().collect();
        describe.push_str(&format!(
            "; not readable by the backup account, so not in the dump: {}",
            kinds.join(", ")
        ));
    }
    Ok((
        ClusterState {
            captured_at,
            server_version,
            resources,
        },
        describe,
    ))
}

fn selected(spec: &KubernetesStateAsset, ar: &ApiResource, caps: &ApiCapabilities) -> bool {
    let name = qualified(&ar.plural, &ar.group);
    let core_namespaces = ar.group.is_empty() && ar.plural == "namespaces";
    caps.supports_operation(verbs::LIST)
        && caps.supports_operation(verbs::PATCH)
        && !skipped_kind(&ar.plural, &ar.group)
        && (caps.scope == Scope::Namespaced || spec.include_cluster_resources || core_namespaces)
        && (spec.include_secrets || !(ar.group.is_empty() && ar.plural == "secrets"))
        && (spec.include_resources.is_empty()
            || core_namespaces
            || spec.include_resources.iter().any(|r| r == &name))
        && !spec.exclude_resources.iter().any(|r| r == &name)
}

/// Where an object goes in the apply order: what others refer to comes first.
fn rank(r: &ResourceDump) -> u8 {
    match (r.group.as_str(), r.plural.as_str()) {
        ("apiextensions.k8s.io", "customresourcedefinitions") => 0,
        ("", "namespaces") => 1,
        _ if !r.namespaced => 2,
        ("", "serviceaccounts") => 3,
        (
            "",
            "configmaps" | "secrets" | "persistentvolumeclaims" | "limitranges" | "resourcequotas",
        ) => 4,
        ("rbac.authorization.k8s.io", _) => 5,
        ("", "services") => 6,
        ("apps", _) | ("batch", _) | ("", "pods" | "replicationcontrollers") => 8,
        _ => 7,
    }
}

/// What a restore did (or, dry, would do).
#[derive(Debug, Default)]
pub struct Applied {
    pub objects: usize,
    pub kinds: usize,
    /// In a dry run, objects that need what the restore would create first (a CRD, a
    /// namespace) and so cannot be validated yet: counted, not sent.
    pub pending: usize,
    /// In a namespace scope, the platform team's objects of the dump (Namespaces, quotas,
    /// limit ranges): left as they are in the cluster.
    pub left_to_platform: usize,
}

/// Where a dumped object lands: its namespace after the mapping (an unmapped namespace keeps
/// its name), or `None` for a cluster-scoped object. A Namespace object lands in itself.
fn destination(
    dump: &ResourceDump,
    item: &Value,
    map_ns: &impl Fn(&str) -> String,
) -> Option<String> {
    if is_namespace_kind(&dump.plural, &dump.group) {
        return Some(map_ns(
            item["metadata"]["name"].as_str().unwrap_or_default(),
        ));
    }
    dump.namespaced
        .then(|| map_ns(item["metadata"]["namespace"].as_str().unwrap_or("default")))
}

/// Refuses the whole dump if any object, after the mapping, lands outside `scope`: in a
/// namespace it does not name, or cluster-scoped without the cluster opt-in. Checked before the
/// first apply, so a refused restore changes nothing.
pub fn check_dump(
    state: &ClusterState,
    mapping: &BTreeMap<String, String>,
    scope: &KubernetesStateScope,
) -> Result<()> {
    if scope.allows_cluster() {
        return Ok(());
    }
    let map_ns = |ns: &str| mapping.get(ns).cloned().unwrap_or_else(|| ns.to_owned());
    let mut outside = Vec::new();
    for dump in &state.resources {
        for item in &dump.items {
            let name = item["metadata"]["name"].as_str().unwrap_or_default();
            match destination(dump, item, &map_ns) {
                Some(ns) if scope.allows_namespace(&ns) => {}
                Some(ns) => outside.push(format!("{} {name} (namespace {ns})", dump.kind)),
                None => outside.push(format!("{} {name} (cluster-scoped)", dump.kind)),
            }
        }
    }
    if outside.is_empty() {
        return Ok(());
    }
    const SHOWN: usize = 5;
    let more = outside.len().saturating_sub(SHOWN);
    outside.truncate(SHOWN);
    Err(out_of_scope(format!(
        "the dump reaches outside what this restore may write, so nothing was applied: {}{}",
        outside.join(", "),
        if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        }
    )))
}

/// Applies `state` (dry run unless `execute`), renaming namespaces per `target`, after
/// [`check_dump`] against `scope`.
pub fn restore(
    state: &ClusterState,
    target: Option<&KubernetesStateTarget>,
    scope: &KubernetesStateScope,
    execute: bool,
) -> Result<Applied> {
    let mapping: BTreeMap<String, String> = target
        .map(|t| t.namespace_mapping.clone())
        .unwrap_or_default();
    check_dump(state, &mapping, scope)?;
    runtime()?.block_on(restore_async(state, &mapping, scope, execute))
}

async fn restore_async(
    state: &ClusterState,
    mapping: &BTreeMap<String, String>,
    scope: &KubernetesStateScope,
    execute: bool,
) -> Result<Applied> {
    let client = client().await?;
    // In a namespace scope everything the restore writes into exists already (it creates no
    // namespace and no CRD), so the API server can judge the whole dump first: a server-side dry
    // run (admission, RBAC, escalation checks on bindings, validation) before the first write
    // refuses whole what would otherwise fail half-way.
    if execute && !scope.allows_cluster() {
        apply_all(&client, state, mapping, scope, false).await?;
    }
    apply_all(&client, state, mapping, scope, execute).await
}

/// One pass over the dump in dependency order: applied, or a server-side dry run.
async fn apply_all(
    client: &kube::Client,
    state: &ClusterState,
    mapping: &BTreeMap<String, String>,
    scope: &KubernetesStateScope,
    execute: bool,
) -> Result<Applied> {
    let client = client.clone();
    let map_ns = |ns: &str| mapping.get(ns).cloned().unwrap_or_else(|| ns.to_owned());
    let mut pp = PatchParams::apply(FIELD_MANAGER).force();
    if !execute {
        pp = pp.dry_run();
    }
    let mut ordered: Vec<&ResourceDump> = state.resources.iter().collect();
    ordered.sort_by_key(|r| rank(r));
    let mut applied = Applied::default();
    let mut served: Option<Discovery> = None;
    // Namespaces the restore creates: in a dry run nothing can be validated inside them yet.
    let mut missing_namespaces = std::collections::BTreeSet::new();
    if !execute && scope.allows_cluster() {
        let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
        for dump in state
            .resources
            .iter()
            .filter(|r| r.group.is_empty() && r.plural == "namespaces")
        {
            for item in &dump.items {
                let new = map_ns(item["metadata"]["name"].as_str().unwrap_or_default());
                if namespaces
                    .get_opt(&new)
                    .await
                    .map_err(|e| api_error("reading namespaces", e))?
                    .is_none()
                {
                    missing_namespaces.insert(new);
                }
            }
        }
    }
    for dump in ordered {
        let ar = dump.api_resource();
        if !scope.allows_cluster()
            && (is_namespace_kind(&dump.plural, &dump.group)
                || platform_owned(&dump.plural, &dump.group))
        {
            applied.left_to_platform += dump.items.len();
            continue;
        }
        if rank(dump) > 0 && served.is_none() {
            // After the CRDs: what the cluster serves now decides which kinds can be applied.
            served = Some(
                Discovery::new(client.clone())
                    .run()
                    .await
                    .map_err(|e| api_error("API discovery", e))?,
            );
        }
        if let Some(d) = &served
            && d.resolve_gvk(&kube::api::GroupVersionKind::gvk(
                &ar.group,
                &ar.version,
                &ar.kind,
            ))
            .is_none()
        {
            if execute {
                return Err(AgentError::config(format!(
                    "the cluster does not serve {} (and the dump has no CRD for it)",
                    dump.qualified()
                )));
            }
            applied.pending += dump.items.len();
            continue;
        }
        for item in &dump.items {
            let mut obj = item.clone();
            let name = obj["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if dump.group.is_empty() && dump.plural == "namespaces" {
                let new = map_ns(&name);
                obj["metadata"]["name"] = Value::from(new.clone());
                let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
                api.patch(&new, &pp, &Patch::Apply(&obj))
                    .await
                    .map_err(|e| api_error(&format!("applying namespace {new}"), e))?;
                applied.objects += 1;
                continue;
            }
            let api: Api<DynamicObject> = if dump.namespaced {
                let ns = map_ns(obj["metadata"]["namespace"].as_str().unwrap_or("default"));
                if missing_namespaces.contains(&ns) {
                    applied.pending += 1;
                    continue;
                }
                obj["metadata"]["namespace"] = Value::from(ns.clone());
                remap_subjects(&mut obj, &map_ns);
                Api::namespaced_with(client.clone(), &ns, &ar)
            } else {
                remap_subjects(&mut obj, &map_ns);
                Api::all_with(client.clone(), &ar)
            };
            api.patch(&name, &pp, &Patch::Apply(&obj))
                .await
                .map_err(|e| api_error(&format!("applying {} {name}", dump.qualified()), e))?;
            applied.objects += 1;
        }
        applied.kinds += 1;
        if execute && rank(dump) == 0 {
            wait_established(&client, dump).await?;
        }
    }
    Ok(applied)
}

/// RoleBindings and ClusterRoleBindings name ServiceAccounts by namespace: follow the mapping.
fn remap_subjects(obj: &mut Value, map_ns: &impl Fn(&str) -> String) {
    // get_mut, not indexing: IndexMut would add a `subjects: null` to every other object.
    if let Some(subjects) = obj.get_mut("subjects").and_then(Value::as_array_mut) {
        for s in subjects {
            if s["kind"] == "ServiceAccount"
                && let Some(ns) = s["namespace"].as_str().map(str::to_owned)
            {
                s["namespace"] = Value::from(map_ns(&ns));
            }
        }
    }
}

async fn wait_established(client: &kube::Client, dump: &ResourceDump) -> Result<()> {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &dump.api_resource());
    for item in &dump.items {
        let name = item["metadata"]["name"].as_str().unwrap_or_default();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let crd = api
                .get(name)
                .await
                .map_err(|e| api_error(&format!("reading CRD {name}"), e))?;
            let established = crd.data["status"]["conditions"]
                .as_array()
                .is_some_and(|c| {
                    c.iter().any(|c| {
                        c["type"] == "Established"
                            && Status::parse(c["status"].as_str().unwrap_or_default())
                                == Status::True
                    })
                });
            if established {
                break;
            }
            if std::time::Instant::now() > deadline {
                return Err(AgentError::config(format!(
                    "CRD {name} not Established after 60 s"
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn server_fields_status_and_assigned_addresses_are_removed() {
        let mut svc = json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "shop", "uid": "u", "resourceVersion": "7",
                         "creationTimestamp": "2026-11-24T00:00:00Z", "managedFields": [{}],
                         "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
            "spec": {"clusterIP": "10.0.0.7", "clusterIPs": ["10.0.0.7"], "ports": [{"port": 80}]},
            "status": {"loadBalancer": {}}});
        strip("services", "", &mut svc);
        assert_eq!(
            svc,
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "shop"},
                   "spec": {"ports": [{"port": 80}]}})
        );
    }

    #[test]
    fn what_the_cluster_recreates_is_left_out() {
        let owned =
            json!({"metadata": {"name": "web-5d8", "ownerReferences": [{"controller": true}]}});
        assert!(!keep_object("replicasets", "apps", &owned));
        assert!(!keep_object(
            "configmaps",
            "",
            &json!({"metadata": {"name": "kube-root-ca.crt"}})
        ));
        assert!(!keep_object(
            "secrets",
            "",
            &json!({"metadata": {"name": "t"}, "type": "kubernetes.io/service-account-token"})
        ));
        assert!(keep_object(
            "configmaps",
            "",
            &json!({"metadata": {"name": "app"}})
        ));
        assert!(
            skipped_kind("events", "events.k8s.io")
                && skipped_kind("leases", "coordination.k8s.io")
        );
        assert!(!skipped_kind("deployments", "apps"));
    }

    fn state(resources: Vec<ResourceDump>) -> ClusterState {
        ClusterState {
            captured_at: Timestamp::UNIX_EPOCH,
            server_version: "v1.34.4".into(),
            resources,
        }
    }

    fn kind(
        group: &str,
        kind: &str,
        plural: &str,
        namespaced: bool,
        items: Vec<Value>,
    ) -> ResourceDump {
        ResourceDump {
            group: group.into(),
            version: "v1".into(),
            kind: kind.into(),
            plural: plural.into(),
            namespaced,
            items,
        }
    }

    fn own(ns: &str) -> KubernetesStateScope {
        KubernetesStateScope::own(ns)
    }

    #[test]
    fn a_dump_reaching_outside_the_scope_is_refused_with_what_reaches_out() {
        let configmaps = || {
            kind(
                "",
                "ConfigMap",
                "configmaps",
                true,
                vec![
                    json!({"metadata": {"name": "mine", "namespace": "shop"}}),
                    json!({"metadata": {"name": "theirs", "namespace": "billing"}}),
                ],
            )
        };
        let dump = state(vec![
            configmaps(),
            kind(
                "rbac.authorization.k8s.io",
                "ClusterRole",
                "clusterroles",
                false,
                vec![json!({"metadata": {"name": "everything"}})],
            ),
        ]);
        let e = check_dump(&dump, &BTreeMap::new(), &own("shop")).unwrap_err();
        assert_eq!(e.class, ErrorClass::OutOfScope);
        assert!(
            e.message.contains("ConfigMap theirs (namespace billing)")
                && e.message
                    .contains("ClusterRole everything (cluster-scoped)")
                && !e.message.contains("mine"),
            "{}",
            e.message
        );
        // A mapping decides where objects land; an unmapped namespace keeps its name.
        let mapping = BTreeMap::from([("shop".to_owned(), "shop-drill".to_owned())]);
        let only_cm = state(vec![configmaps()]);
        let e = check_dump(&only_cm, &mapping, &own("shop-drill")).unwrap_err();
        assert!(e.message.contains("(namespace billing)"), "{}", e.message);
        let both = BTreeMap::from([
            ("shop".to_owned(), "shop-drill".to_owned()),
            ("billing".to_owned(), "shop-drill".to_owned()),
        ]);
        check_dump(&only_cm, &both, &own("shop-drill")).unwrap();
        check_dump(&dump, &BTreeMap::new(), &KubernetesStateScope::Cluster).unwrap();
    }

    #[test]
    fn a_selection_beyond_the_scope_is_refused_before_anything_is_listed() {
        let spec = |v: Value| -> KubernetesStateAsset { serde_json::from_value(v).unwrap() };
        check_selection(&spec(json!({"namespaces": ["shop"]})), &own("shop")).unwrap();
        for outside in [
            json!({}),
            json!({"namespaces": ["shop"], "includeClusterResources": true}),
            json!({"namespaces": ["shop", "billing"]}),
        ] {
            let e = check_selection(&spec(outside.clone()), &own("shop")).unwrap_err();
            assert_eq!(e.class, ErrorClass::OutOfScope, "{outside}");
            check_selection(&spec(outside), &KubernetesStateScope::Cluster).unwrap();
        }
    }

    #[test]
    fn lifeboat_s_own_objects_are_left_out_of_a_dump() {
        let sa = json!({"metadata": {"name": "lifeboat-kubestate-restore",
            "labels": {"app.kubernetes.io/managed-by": "lifeboat-operator"}}});
        assert!(!keep_object("serviceaccounts", "", &sa));
    }

    #[test]
    fn crds_then_namespaces_then_what_others_refer_to() {
        let dump = |group: &str, plural: &str, namespaced: bool| ResourceDump {
            group: group.into(),
            version: "v1".into(),
            kind: String::new(),
            plural: plural.into(),
            namespaced,
            items: vec![],
        };
        let mut all = [
            dump("apps", "deployments", true),
            dump("", "services", true),
            dump("", "configmaps", true),
            dump("rbac.authorization.k8s.io", "clusterroles", false),
            dump("", "namespaces", false),
            dump("apiextensions.k8s.io", "customresourcedefinitions", false),
            dump("", "serviceaccounts", true),
        ];
        all.sort_by_key(rank);
        let order: Vec<&str> = all.iter().map(|d| d.plural.as_str()).collect();
        assert_eq!(
            order,
            [
                "customresourcedefinitions",
                "namespaces",
                "clusterroles",
                "serviceaccounts",
                "configmaps",
                "services",
                "deployments"
            ]
        );
    }
}
