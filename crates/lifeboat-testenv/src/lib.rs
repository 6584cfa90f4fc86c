//! Test support for Lifeboat: a real Kubernetes control plane (etcd, kube-apiserver,
//! kube-controller-manager) built from their Go modules and started on loopback, in the spirit of
//! controller-runtime's envtest. Used by tests only, never by the product.
//!
//! ```no_run
//! # async fn t() -> Result<(), lifeboat_testenv::Error> {
//! let env = lifeboat_testenv::shared()?;          // one control plane per test binary
//! let client = env.client().await?;               // one client per test (per runtime)
//! let ns = env.namespace(&client, "restore").await?; // isolation by namespace
//! # Ok(()) }
//! ```
//!
//! Conventions honoured: `USE_EXISTING_CLUSTER=true` uses the cluster of the current
//! `KUBECONFIG` instead; `KUBEBUILDER_ASSETS` and `TEST_ASSET_<NAME>` point at prebuilt binaries;
//! `KUBEBUILDER_CONTROLPLANE_START_TIMEOUT` bounds start-up.

pub mod assets;
pub mod control_plane;
pub mod node;
mod pki;
mod process;

use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};

pub use control_plane::ControlPlane;
pub use node::{Node, NodeOptions};

/// What can go wrong while providing a control plane.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
    #[error("control-plane binaries: {0}")]
    Assets(String),
    #[error("certificates: {0}")]
    Pki(String),
    #[error("control plane did not start: {0}")]
    Start(String),
    #[error("Kubernetes client: {0}")]
    Kube(String),
    #[error("CRDs: {0}")]
    Crds(String),
}

/// Where the tests run: a control plane of our own, or an existing cluster.
pub enum TestEnv {
    Local(ControlPlane),
    Existing,
}

/// The field manager the harness applies with.
pub const FIELD_MANAGER: &str = "lifeboat-testenv";

impl TestEnv {
    /// Starts a control plane owned by the caller (stopped when dropped), or connects to the
    /// existing cluster when `USE_EXISTING_CLUSTER=true`; installs the CRDs from crds/ either way.
    pub async fn start() -> Result<Self, Error> {
        Self::start_with(true).await
    }

    async fn start_with(owned_dir: bool) -> Result<Self, Error> {
        let env = if use_existing_cluster() {
            TestEnv::Existing
        } else {
            TestEnv::Local(ControlPlane::start(owned_dir).await?)
        };
        install_crds(&env.client().await?).await?;
        Ok(env)
    }

    /// A new admin client (one per test: clients are bound to the runtime that created them).
    pub async fn client(&self) -> Result<Client, Error> {
        match self {
            TestEnv::Local(cp) => cp.client().await,
            TestEnv::Existing => Client::try_default()
                .await
                .map_err(|e| Error::Kube(e.to_string())),
        }
    }

    /// A client that acts as `namespace`/`name`, a ServiceAccount, by impersonation: what that
    /// account's RBAC allows and nothing more (the admin may impersonate anyone).
    pub async fn client_as_service_account(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Client, Error> {
        let kube_err = |e: &dyn std::fmt::Display| Error::Kube(e.to_string());
        let mut config = match self {
            TestEnv::Local(cp) => {
                let kubeconfig = kube::config::Kubeconfig::read_from(cp.kubeconfig())
                    .map_err(|e| kube_err(&e))?;
                kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                    .await
                    .map_err(|e| kube_err(&e))?
            }
            TestEnv::Existing => kube::Config::infer().await.map_err(|e| kube_err(&e))?,
        };
        config.auth_info.impersonate = Some(format!("system:serviceaccount:{namespace}:{name}"));
        config.auth_info.impersonate_groups = Some(vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{namespace}"),
            "system:authenticated".into(),
        ]);
        Client::try_from(config).map_err(|e| Error::Kube(e.to_string()))
    }

    /// The kubeconfig to hand to processes under test (the operator, kubectl).
    pub fn kubeconfig(&self) -> Option<PathBuf> {
        match self {
            TestEnv::Local(cp) => Some(cp.kubeconfig().to_path_buf()),
            TestEnv::Existing => std::env::var_os("KUBECONFIG").map(PathBuf::from),
        }
    }

    /// A fresh namespace named after `prefix`, unique in this run.
    pub async fn namespace(&self, client: &Client, prefix: &str) -> Result<String, Error> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "{prefix}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": {"lifeboat.dev/test": "true"}}
        }))
        .map_err(|e| Error::Kube(e.to_string()))?;
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .map_err(|e| Error::Kube(format!("create namespace {name}: {e}")))?;
        Ok(name)
    }
}

/// Whether `USE_EXISTING_CLUSTER` asks for the current kubeconfig's cluster.
pub fn use_existing_cluster() -> bool {
    std::env::var("USE_EXISTING_CLUSTER").is_ok_and(|v| v.eq_ignore_ascii_case("true"))
}

/// The control plane shared by every test of this test binary, started on first use. It is
/// never dropped; its processes stop, and its files are removed, when the test process exits.
pub fn shared() -> Result<&'static TestEnv, Error> {
    static SHARED: OnceLock<Result<TestEnv, String>> = OnceLock::new();
    SHARED
        .get_or_init(|| {
            // Started on a thread with its own runtime: callers are usually inside a test's
            // runtime, where blocking on another future would panic.
            std::thread::spawn(|| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())?;
                rt.block_on(TestEnv::start_with(false))
                    .map_err(|e| e.to_string())
            })
            .join()
            .unwrap_or_else(|_| Err("control-plane start-up panicked".into()))
        })
        .as_ref()
        .map_err(|e| Error::Start(e.clone()))
}

/// The kubectl to drive the test cluster with (built with the control plane: the machine's own
/// may be too old for the server).
pub fn kubectl() -> Result<PathBuf, Error> {
    assets::binary("kubectl")
}

/// Applies every CRD in crds/ and waits until each is Established.
pub async fn install_crds(client: &Client) -> Result<(), Error> {
    let dir = assets::repo_root().join("crds");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| Error::Io(dir.display().to_string(), e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    paths.sort();
    if paths.is_empty() {
        return Err(Error::Crds(format!("no CRD files in {}", dir.display())));
    }
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut names = Vec::new();
    for path in &paths {
        let text =
            std::fs::read_to_string(path).map_err(|e| Error::Io(path.display().to_string(), e))?;
        let crd: CustomResourceDefinition = serde_norway::from_str(&text)
            .map_err(|e| Error::Crds(format!("{}: {e}", path.display())))?;
        let name = crd.metadata.name.clone().unwrap_or_default();
        api.patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&crd),
        )
        .await
        .map_err(|e| Error::Crds(format!("apply {name}: {e}")))?;
        names.push(name);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    for name in names {
        loop {
            let crd = api
                .get(&name)
                .await
                .map_err(|e| Error::Crds(format!("get {name}: {e}")))?;
            let established = crd
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            if established {
                break;
            }
            if Instant::now() > deadline {
                return Err(Error::Crds(format!("{name} not Established after 30s")));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}
