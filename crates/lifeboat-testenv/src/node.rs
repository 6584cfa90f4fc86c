//! A real node for the test control plane: containerd + runc + kubelet + kube-scheduler +
//! kube-proxy + CoreDNS on this machine, so the Jobs the operator creates actually run, and pods
//! reach Services by name. The processes, mounts, cgroups, firewall rules and the CNI bridge are
//! owned by `hack/node/node.sh`; this module starts it, waits until the Node is
//! Ready and stops it. The script tears everything down when its standard input closes, so the
//! node also goes away when the test process is killed.
//!
//! Needs root, Debian's containerd/runc/CNI plugins and the binaries of `hack/node/build.sh`
//! (built here on first use, like the control plane's).

use std::fs::File;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::Api;
use kube::api::{Patch, PatchParams};

use crate::control_plane::ControlPlane;
use crate::{Error, FIELD_MANAGER, assets};

pub use crate::pki::NODE_NAME;

/// The sandbox ("pause") image every pod starts with, assembled and imported by the node script.
pub const PAUSE_IMAGE: &str = "lifeboat.local/pause:1";

/// A running node. Dropping it stops the kubelet, the pods and containerd, and removes every
/// trace (mounts, cgroups, bridge, files).
pub struct Node {
    child: Child,
    stdin: Option<ChildStdin>,
    dir: PathBuf,
    log: PathBuf,
    started: Duration,
    gateway: Ipv4Addr,
}

/// What the node starts with.
#[derive(Default, Clone, Debug)]
pub struct NodeOptions {
    /// A directory of OCI image archives (`*.tar`, e.g. from `hack/node/images.sh`) imported into
    /// containerd before the kubelet starts.
    pub images: Option<PathBuf>,
}

/// How long the node may take to become Ready: `LIFEBOAT_NODE_START_TIMEOUT` seconds, default 120.
fn start_timeout() -> Duration {
    std::env::var("LIFEBOAT_NODE_START_TIMEOUT")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(120))
}

impl Node {
    /// Starts a node joined to `cp` and returns once the Node is Ready and schedulable.
    pub async fn start(cp: &ControlPlane, options: &NodeOptions) -> Result<Self, Error> {
        let t0 = Instant::now();
        ensure_binaries()?;
        bind_nodes_group(cp).await?;
        let creds = cp.node_credentials();
        let dir = tempfile::Builder::new()
            .prefix("lifeboat-node-")
            .tempdir()
            .map_err(|e| Error::Io("temporary directory".into(), e))?
            .keep();
        // Removed with the directory at teardown (LIFEBOAT_NODE_KEEP_LOGS=DIR keeps the logs).
        let log = dir.join("node.log");
        let out = File::create(&log).map_err(|e| Error::Io(log.display().to_string(), e))?;
        let err = out
            .try_clone()
            .map_err(|e| Error::Io(log.display().to_string(), e))?;
        let script = assets::repo_root().join("hack/node/node.sh");
        let mut cmd = Command::new("bash");
        cmd.arg(&script)
            .arg("--server")
            .arg(cp.server())
            .arg("--ca")
            .arg(&creds.ca_cert)
            .arg("--node-token")
            .arg(&creds.node_token)
            .arg("--scheduler-token")
            .arg(&creds.scheduler_token)
            .arg("--dir")
            .arg(&dir)
            .arg("--name")
            .arg(NODE_NAME);
        if let Some(images) = &options.images {
            cmd.arg("--images").arg(images);
        }
        cmd.env("LIFEBOAT_TESTENV_BIN", assets::cache_dir()?)
            .stdin(Stdio::piped())
            .stdout(out)
            .stderr(err);
        let mut child = cmd
            .spawn()
            .map_err(|e| Error::Io(script.display().to_string(), e))?;
        let stdin = child.stdin.take();
        let mut node = Node {
            child,
            stdin,
            dir,
            log,
            started: Duration::ZERO,
            gateway: Ipv4Addr::UNSPECIFIED,
        };
        node.wait_ready(t0 + start_timeout() + Duration::from_secs(30))
            .await?;
        node.wait_schedulable(cp, t0 + start_timeout() + Duration::from_secs(30))
            .await?;
        node.started = t0.elapsed();
        Ok(node)
    }

    /// The Node's name.
    pub fn name(&self) -> &str {
        NODE_NAME
    }

    /// The node's scratch directory (containerd, kubelet and their logs), removed on stop.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The host's address on the pods' bridge, a network only this node's pods are on: servers
    /// the pods should reach listen there (and on loopback), so no pod needs the host's network.
    /// Its pods' subnet is the /24 around it.
    pub fn gateway(&self) -> Ipv4Addr {
        self.gateway
    }

    /// Time from `start` to a Ready, schedulable Node.
    pub fn start_time(&self) -> Duration {
        self.started
    }

    /// The last lines of the node script's log and of the kubelet's, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let tail = |path: &Path| {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        };
        format!(
            "--- node ({}) ---\n{}\n--- kubelet ---\n{}",
            self.log.display(),
            tail(&self.log),
            tail(&self.dir.join("kubelet.log"))
        )
    }

    async fn wait_ready(&mut self, deadline: Instant) -> Result<(), Error> {
        loop {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            if text.lines().any(|l| l.starts_with("node: ready ")) {
                let gateway = text
                    .lines()
                    .find_map(|l| l.strip_prefix("node: gateway "))
                    .and_then(|a| a.trim().parse().ok());
                return match gateway {
                    Some(g) => {
                        self.gateway = g;
                        Ok(())
                    }
                    None => Err(Error::Start(format!(
                        "the node script named no gateway\n{}",
                        self.log_tail(40)
                    ))),
                };
            }
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return Err(Error::Start(format!(
                    "the node script exited\n{}",
                    self.log_tail(40)
                )));
            }
            if Instant::now() > deadline {
                return Err(Error::Start(format!(
                    "node not Ready in time (LIFEBOAT_NODE_START_TIMEOUT)\n{}",
                    self.log_tail(40)
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Ready is not enough: the node-lifecycle controller must also lift the `not-ready` taint
    /// the API server put on the new Node, or nothing is scheduled.
    async fn wait_schedulable(
        &mut self,
        cp: &ControlPlane,
        deadline: Instant,
    ) -> Result<(), Error> {
        let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(cp.client().await?);
        loop {
            if let Ok(node) = nodes.get(NODE_NAME).await {
                let taints = node.spec.and_then(|s| s.taints).unwrap_or_default();
                if !taints.iter().any(|t| t.effect == "NoSchedule") {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(Error::Start(format!(
                    "node {NODE_NAME} still tainted NoSchedule\n{}",
                    self.log_tail(20)
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops the node and waits until its teardown is complete.
    pub fn stop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The node's own processes authenticate as the node (`system:nodes`). The default RBAC binds no
/// one to `system:node` (clusters use the Node authorizer for that); this control plane authorizes
/// with RBAC only, so the group gets the role. kube-proxy runs with the same credentials and gets
/// its bootstrap role `system:node-proxier`; cluster DNS (CoreDNS's `kubernetes` plugin) reads
/// Services, EndpointSlices and Namespaces, which neither role grants.
async fn bind_nodes_group(cp: &ControlPlane) -> Result<(), Error> {
    let client = cp.client().await?;
    let dns: ClusterRole = serde_json::from_value(serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "lifeboat-testenv:node-dns"},
        "rules": [
            {"apiGroups": [""], "resources": ["services", "namespaces", "endpoints"], "verbs": ["list", "watch"]},
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]}
        ]
    }))
    .map_err(|e| Error::Kube(e.to_string()))?;
    Api::<ClusterRole>::all(client.clone())
        .patch(
            "lifeboat-testenv:node-dns",
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&dns),
        )
        .await
        .map_err(|e| Error::Kube(format!("cluster role for the node's DNS: {e}")))?;
    for (name, role) in [
        ("lifeboat-testenv:nodes", "system:node"),
        ("lifeboat-testenv:node-proxier", "system:node-proxier"),
        ("lifeboat-testenv:node-dns", "lifeboat-testenv:node-dns"),
    ] {
        let binding: ClusterRoleBinding = serde_json::from_value(serde_json::json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:nodes"}]
        }))
        .map_err(|e| Error::Kube(e.to_string()))?;
        Api::<ClusterRoleBinding>::all(client.clone())
            .patch(
                name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&binding),
            )
            .await
            .map_err(|e| Error::Kube(format!("bind system:nodes to {role}: {e}")))?;
    }
    Ok(())
}

/// Builds the node's binaries with `hack/node/build.sh` unless all are there.
fn ensure_binaries() -> Result<(), Error> {
    let bin = assets::cache_dir()?;
    let all_there = [
        "kubelet",
        "kube-scheduler",
        "kube-proxy",
        "coredns",
        "crictl",
        "pause",
        "kubectl",
    ]
    .iter()
    .all(|t| bin.join(t).is_file());
    if all_there {
        return Ok(());
    }
    let script = assets::repo_root().join("hack/node/build.sh");
    let status = Command::new("bash")
        .arg(&script)
        .env("LIFEBOAT_TESTENV_BIN", &bin)
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

/// The node of the shared control plane ([`crate::shared`]), started on first use with the images
/// in `options`; stopped, like that control plane, when the test process exits. `Ok(None)` when
/// the tests run against an existing cluster (`USE_EXISTING_CLUSTER=true`), which has nodes of its
/// own.
pub fn shared(options: &NodeOptions) -> Result<Option<&'static Node>, Error> {
    static SHARED: std::sync::OnceLock<Result<Option<Node>, String>> = std::sync::OnceLock::new();
    let env = crate::shared()?;
    let crate::TestEnv::Local(cp) = env else {
        return Ok(None);
    };
    let options = options.clone();
    SHARED
        .get_or_init(|| {
            // On a thread with its own runtime, as crate::shared: callers are inside a runtime.
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())?;
                rt.block_on(Node::start(cp, &options))
                    .map(Some)
                    .map_err(|e| e.to_string())
            })
            .join()
            .unwrap_or_else(|_| Err("node start-up panicked".into()))
        })
        .as_ref()
        .map(Option::as_ref)
        .map_err(|e| Error::Start(e.clone()))
}
