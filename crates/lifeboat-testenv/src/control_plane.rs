//! One control plane: etcd, kube-apiserver and kube-controller-manager on free loopback ports.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ServiceAccount;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

use crate::Error;
use crate::assets::binary;
use crate::pki::Pki;
use crate::process::Supervised;

/// Controllers the Lifeboat tests rely on: Jobs and CronJobs run, owners' deletion collects their
/// children, namespaces are finalised, every namespace gets its default ServiceAccount (pods are
/// refused without it), and Deployments make ReplicaSets and Pods (controller-owned objects the
/// Kubernetes-state dump must leave out). For the local node (crate::node):
/// `root-ca-cert-publisher` writes the `kube-root-ca.crt` ConfigMap every pod's API-access volume
/// mounts, and `nodelifecycle` lifts the `not-ready` taint a new Node is created with once its
/// kubelet reports Ready. Without a node both have nothing to do. `statefulset` and
/// `persistentvolume-binder` run Redis the way charts deploy it (a StatefulSet whose PVC binds to
/// a PersistentVolume), for the node's Redis restore test. `endpointslice` lists each Service's
/// ready pods, which the node's kube-proxy and CoreDNS serve.
pub const CONTROLLERS: &str = "job,cronjob,garbagecollector,namespace,serviceaccount,\
     serviceaccount-token,deployment,replicaset,root-ca-cert-publisher,nodelifecycle,\
     statefulset,persistentvolume-binder,endpointslice";

/// A running control plane. Dropping it stops every process and removes its files.
pub struct ControlPlane {
    // Field order is drop order: controller-manager and API server stop before etcd.
    processes: Vec<Supervised>,
    dir: PathBuf,
    kubeconfig: PathBuf,
    server: String,
    node_credentials: NodeCredentials,
    /// Owns the directory when the control plane is not shared (the watchdog cleans up otherwise).
    _tempdir: Option<tempfile::TempDir>,
}

/// What a node needs to join this control plane (crate::node).
#[derive(Clone, Debug)]
pub struct NodeCredentials {
    /// The CA that signed the API server's certificate and the client certificate it presents to
    /// kubelets.
    pub ca_cert: PathBuf,
    /// Bearer token of `system:node:lifeboat-node` (group `system:nodes`).
    pub node_token: String,
    /// Bearer token of `system:kube-scheduler`.
    pub scheduler_token: String,
}

/// How long start-up may take: `KUBEBUILDER_CONTROLPLANE_START_TIMEOUT` (`60s`, `2m`), default 90 s.
pub fn start_timeout() -> Duration {
    std::env::var("KUBEBUILDER_CONTROLPLANE_START_TIMEOUT")
        .ok()
        .and_then(|v| parse_go_duration(&v))
        .unwrap_or(Duration::from_secs(90))
}

fn parse_go_duration(v: &str) -> Option<Duration> {
    let v = v.trim();
    let (num, unit) = v.split_at(v.find(|c: char| !c.is_ascii_digit())?);
    let n: u64 = num.parse().ok()?;
    match unit {
        "s" => Some(Duration::from_secs(n)),
        "m" => Some(Duration::from_secs(n * 60)),
        "ms" => Some(Duration::from_millis(n)),
        _ => None,
    }
}

fn free_port() -> Result<u16, Error> {
    let l =
        TcpListener::bind("127.0.0.1:0").map_err(|e| Error::Io("bind 127.0.0.1:0".into(), e))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| Error::Io("local_addr".into(), e))
}

impl ControlPlane {
    /// Starts a control plane in a fresh temporary directory and waits until it serves and its
    /// controllers run. With `owned_dir == false` the directory outlives this value's owner and is
    /// removed by the watchdog when the process exits (for the shared, never-dropped instance).
    pub async fn start(owned_dir: bool) -> Result<Self, Error> {
        let tempdir = tempfile::Builder::new()
            .prefix("lifeboat-testenv-")
            .tempdir()
            .map_err(|e| Error::Io("temporary directory".into(), e))?;
        let dir = tempdir.path().to_path_buf();
        let (tempdir, cleanup) = if owned_dir {
            (Some(tempdir), None)
        } else {
            (None, Some(tempdir.keep()))
        };
        let deadline = Instant::now() + start_timeout();

        let pki = Pki::generate(&dir)?;
        let etcd_port = free_port()?;
        let etcd_peer_port = free_port()?;
        let api_port = free_port()?;
        let server = format!("https://127.0.0.1:{api_port}");
        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(&kubeconfig, pki.kubeconfig(&server))
            .map_err(|e| Error::Io(kubeconfig.display().to_string(), e))?;

        let mut cp = ControlPlane {
            processes: Vec::new(),
            dir: dir.clone(),
            kubeconfig,
            server,
            node_credentials: NodeCredentials {
                ca_cert: pki.ca_cert.clone(),
                node_token: pki.node_token.clone(),
                scheduler_token: pki.scheduler_token.clone(),
            },
            _tempdir: tempdir,
        };
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        cp.spawn(
            "etcd",
            &binary("etcd")?,
            &[
                format!("--data-dir={}", dir.join("etcd").display()),
                format!("--listen-client-urls={etcd_url}"),
                format!("--advertise-client-urls={etcd_url}"),
                format!("--listen-peer-urls=http://127.0.0.1:{etcd_peer_port}"),
                format!("--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer_port}"),
                format!("--initial-cluster=default=http://127.0.0.1:{etcd_peer_port}"),
                "--unsafe-no-fsync=true".into(),
                "--log-level=warn".into(),
            ],
            cleanup.as_deref(),
        )?;
        cp.spawn(
            "kube-apiserver",
            &binary("kube-apiserver")?,
            &[
                format!("--etcd-servers={etcd_url}"),
                "--advertise-address=127.0.0.1".into(),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={api_port}"),
                format!("--cert-dir={}", dir.join("certs").display()),
                format!("--tls-cert-file={}", pki.serving_cert.display()),
                format!("--tls-private-key-file={}", pki.serving_key.display()),
                format!("--token-auth-file={}", pki.token_file.display()),
                "--authorization-mode=RBAC".into(),
                "--service-account-issuer=https://kubernetes.default.svc".into(),
                format!(
                    "--service-account-key-file={}",
                    pki.service_account_public_key.display()
                ),
                format!(
                    "--service-account-signing-key-file={}",
                    pki.service_account_key.display()
                ),
                "--service-cluster-ip-range=10.0.0.0/24".into(),
                "--allow-privileged=true".into(),
                // To the local node's kubelet (logs, exec): as system:masters, by its InternalIP.
                format!(
                    "--kubelet-client-certificate={}",
                    pki.kubelet_client_cert.display()
                ),
                format!("--kubelet-client-key={}", pki.kubelet_client_key.display()),
                "--kubelet-preferred-address-types=InternalIP".into(),
                "--enable-priority-and-fairness=false".into(),
                "--profiling=false".into(),
                "--v=1".into(),
            ],
            None,
        )?;
        cp.wait_ready(deadline).await?;
        cp.spawn(
            "kube-controller-manager",
            &binary("kube-controller-manager")?,
            &[
                format!("--kubeconfig={}", cp.kubeconfig.display()),
                format!("--controllers={CONTROLLERS}"),
                "--leader-elect=false".into(),
                "--secure-port=0".into(),
                format!(
                    "--service-account-private-key-file={}",
                    pki.service_account_key.display()
                ),
                format!("--root-ca-file={}", pki.ca_cert.display()),
                "--concurrent-job-syncs=10".into(),
                "--v=1".into(),
            ],
            None,
        )?;
        cp.wait_controllers(deadline).await?;
        Ok(cp)
    }

    fn spawn(
        &mut self,
        name: &str,
        program: &Path,
        args: &[String],
        cleanup: Option<&Path>,
    ) -> Result<(), Error> {
        let p = Supervised::spawn(name, program, args, &self.dir, cleanup)?;
        self.processes.push(p);
        Ok(())
    }

    /// A new client for the admin user. Create one per test: a client is bound to the Tokio
    /// runtime that made it, and each `#[tokio::test]` has its own.
    pub async fn client(&self) -> Result<Client, Error> {
        let kubeconfig =
            Kubeconfig::read_from(&self.kubeconfig).map_err(|e| Error::Kube(e.to_string()))?;
        let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .map_err(|e| Error::Kube(e.to_string()))?;
        Client::try_from(config).map_err(|e| Error::Kube(e.to_string()))
    }

    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    pub fn server(&self) -> &str {
        &self.server
    }

    /// The credentials a local node joins with.
    pub fn node_credentials(&self) -> &NodeCredentials {
        &self.node_credentials
    }

    /// Stops one component (`etcd`, `kube-apiserver`, `kube-controller-manager`) and leaves it
    /// stopped: an outage, for fault tests. [`ControlPlane::start_component`] ends it.
    pub fn stop_component(&mut self, name: &str) -> Result<(), Error> {
        self.component(name)?.stop();
        Ok(())
    }

    /// Starts a stopped component again with its first arguments, on the same ports and data
    /// (etcd's data directory survives), and waits until the API server answers `/readyz`.
    pub async fn start_component(&mut self, name: &str) -> Result<(), Error> {
        self.component(name)?.restart()?;
        self.wait_ready(Instant::now() + start_timeout()).await
    }

    fn component(&mut self, name: &str) -> Result<&mut Supervised, Error> {
        self.processes
            .iter_mut()
            .find(|p| p.name() == name)
            .ok_or_else(|| Error::Start(format!("no component {name}")))
    }

    /// Stops every process (controller-manager first, etcd last).
    pub fn stop(&mut self) {
        while let Some(mut p) = self.processes.pop() {
            p.stop();
        }
    }

    fn crashed(&mut self) -> Option<String> {
        self.processes.iter_mut().find_map(|p| {
            if p.has_exited() {
                Some(p.log_tail(30))
            } else {
                None
            }
        })
    }

    fn logs(&self) -> String {
        self.processes
            .iter()
            .map(|p| p.log_tail(15))
            .collect::<Vec<_>>()
            .join("\n")
    }

    async fn wait_ready(&mut self, deadline: Instant) -> Result<(), Error> {
        let client = self.client().await?;
        loop {
            let req = http::Request::get("/readyz")
                .body(Vec::new())
                .map_err(|e| Error::Kube(e.to_string()))?;
            if let Ok(body) = client.request_text(req).await
                && body.trim() == "ok"
            {
                return Ok(());
            }
            self.check_progress(deadline, "kube-apiserver /readyz")?;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The serviceaccount controller creating `default/default` proves the controllers run.
    async fn wait_controllers(&mut self, deadline: Instant) -> Result<(), Error> {
        let sas: Api<ServiceAccount> = Api::namespaced(self.client().await?, "default");
        loop {
            if let Ok(Some(_)) = sas.get_opt("default").await {
                return Ok(());
            }
            self.check_progress(deadline, "kube-controller-manager (default ServiceAccount)")?;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn check_progress(&mut self, deadline: Instant, what: &str) -> Result<(), Error> {
        if let Some(log) = self.crashed() {
            return Err(Error::Start(format!(
                "a process exited while waiting for {what}\n{log}"
            )));
        }
        if Instant::now() > deadline {
            return Err(Error::Start(format!(
                "timed out waiting for {what} (KUBEBUILDER_CONTROLPLANE_START_TIMEOUT)\n{}",
                self.logs()
            )));
        }
        Ok(())
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_style_timeouts() {
        assert_eq!(parse_go_duration("60s"), Some(Duration::from_secs(60)));
        assert_eq!(parse_go_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(
            parse_go_duration("1500ms"),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(parse_go_duration("soon"), None);
        assert_eq!(parse_go_duration("5h"), None);
    }
}
