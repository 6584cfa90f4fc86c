//! Throw-away credentials for a test control plane: a CA, the API server's serving certificate,
//! a service-account signing key, bearer tokens (the admin; a node and the scheduler, for the
//! local node) and the client certificate the API server presents to kubelets.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use crate::Error;

/// Files written into the control plane's directory.
pub struct Pki {
    pub ca_cert: PathBuf,
    pub serving_cert: PathBuf,
    pub serving_key: PathBuf,
    pub service_account_key: PathBuf,
    pub service_account_public_key: PathBuf,
    pub token_file: PathBuf,
    pub admin_token: String,
    /// `system:node:<NODE_NAME>` in `system:nodes`: the local node's kubelet.
    pub node_token: String,
    /// `system:kube-scheduler`, bound by the API server's default RBAC.
    pub scheduler_token: String,
    /// What the API server presents to kubelets (logs, exec): in `system:masters`.
    pub kubelet_client_cert: PathBuf,
    pub kubelet_client_key: PathBuf,
}

/// The local node's name (`hack/node/node.sh --name`), fixed: one node per control plane.
pub const NODE_NAME: &str = "lifeboat-node";

impl Pki {
    pub fn generate(dir: &Path) -> Result<Self, Error> {
        let pki = |e: rcgen::Error| Error::Pki(e.to_string());
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(pki)?;
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "lifeboat-testenv-ca");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate().map_err(pki)?;
        let ca_cert = ca_params.self_signed(&ca_key).map_err(pki)?;
        let issuer = Issuer::new(ca_params, ca_key);

        let mut serving = CertificateParams::new(Vec::<String>::new()).map_err(pki)?;
        serving
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        serving.subject_alt_names = vec![
            SanType::DnsName("localhost".try_into().map_err(pki)?),
            SanType::DnsName("kubernetes.default.svc".try_into().map_err(pki)?),
            SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            SanType::IpAddress(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))),
        ];
        let serving_key = KeyPair::generate().map_err(pki)?;
        let serving_cert = serving.signed_by(&serving_key, &issuer).map_err(pki)?;
        let sa_key = KeyPair::generate().map_err(pki)?;

        let mut kubelet_client = CertificateParams::new(Vec::<String>::new()).map_err(pki)?;
        kubelet_client
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver-kubelet-client");
        kubelet_client
            .distinguished_name
            .push(DnType::OrganizationName, "system:masters");
        let kubelet_client_key = KeyPair::generate().map_err(pki)?;
        let kubelet_client_cert = kubelet_client
            .signed_by(&kubelet_client_key, &issuer)
            .map_err(pki)?;

        let admin_token = random_hex(24)?;

        let out = Pki {
            ca_cert: dir.join("ca.crt"),
            serving_cert: dir.join("apiserver.crt"),
            serving_key: dir.join("apiserver.key"),
            service_account_key: dir.join("sa.key"),
            service_account_public_key: dir.join("sa.pub"),
            token_file: dir.join("tokens.csv"),
            admin_token,
            node_token: random_hex(24)?,
            scheduler_token: random_hex(24)?,
            kubelet_client_cert: dir.join("kubelet-client.crt"),
            kubelet_client_key: dir.join("kubelet-client.key"),
        };
        write(&out.ca_cert, &ca_cert.pem())?;
        write(&out.serving_cert, &serving_cert.pem())?;
        write(&out.serving_key, &serving_key.serialize_pem())?;
        write(&out.service_account_key, &sa_key.serialize_pem())?;
        // The API server reads verification keys as public keys, not from a PKCS#8 private key.
        write(&out.service_account_public_key, &sa_key.public_key_pem())?;
        write(&out.kubelet_client_cert, &kubelet_client_cert.pem())?;
        write(&out.kubelet_client_key, &kubelet_client_key.serialize_pem())?;
        // token,user,uid,"group1,group2": the admin is in system:masters, as kind's admin is.
        write(
            &out.token_file,
            &format!(
                "{},lifeboat-admin,lifeboat-admin,\"system:masters\"\n\
                 {},system:node:{NODE_NAME},system:node:{NODE_NAME},\"system:nodes\"\n\
                 {},system:kube-scheduler,system:kube-scheduler\n",
                out.admin_token, out.node_token, out.scheduler_token
            ),
        )?;
        Ok(out)
    }

    /// A kubeconfig for the admin user against `server`.
    pub fn kubeconfig(&self, server: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: testenv\n  cluster:\n    server: {server}\n    certificate-authority: {ca}\nusers:\n- name: admin\n  user:\n    token: {token}\ncontexts:\n- name: testenv\n  context:\n    cluster: testenv\n    user: admin\n    namespace: default\ncurrent-context: testenv\n",
            ca = self.ca_cert.display(),
            token = self.admin_token,
        )
    }
}

fn write(path: &Path, content: &str) -> Result<(), Error> {
    std::fs::write(path, content).map_err(|e| Error::Io(path.display().to_string(), e))
}

/// `n` random bytes from the kernel, as hex.
fn random_hex(n: usize) -> Result<String, Error> {
    use std::io::Read as _;
    let mut bytes = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| Error::Io("/dev/urandom".into(), e))?;
    let mut hex = String::with_capacity(2 * n);
    for b in bytes {
        let _ = write!(hex, "{b:02x}");
    }
    Ok(hex)
}
