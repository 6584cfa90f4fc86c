//! Errors of a reconcile, each with the reason shown in conditions and Events.

/// What can go wrong while reconciling. Variants are named after the failed operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The spec passed admission but cannot work (e.g. a schedule croner refuses).
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
    /// The object lacks a name, namespace or uid (never for objects read from the API).
    #[error("object has no {0}")]
    MissingObjectKey(&'static str),
    #[error("serializing the agent's job: {0}")]
    Serialize(#[from] serde_json::Error),
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// A watch this reconcile reads from has not listed yet (the API server is slow or down).
    #[error("the {0} watch has not synced yet")]
    CacheNotReady(&'static str),
    /// No master key to derive the namespace's signing key from: no Job can sign or check its
    /// backups, so none is created until the platform team provides it.
    #[error("no signing key: {0}")]
    SigningKeyMissing(String),
    /// A Kubernetes-state asset reaches beyond what the platform team allows its namespace.
    #[error(transparent)]
    Scope(#[from] crate::kubestate::ScopeError),
}

impl Error {
    /// The condition and Event reason for this error (CamelCase, a fixed set).
    pub fn reason(&self) -> &'static str {
        match self {
            Error::InvalidSpec(_) => "InvalidSpec",
            Error::MissingObjectKey(_) => "MissingObjectKey",
            Error::Serialize(_) => "SerializeFailed",
            Error::Kube(_) => "KubernetesApiError",
            Error::CacheNotReady(_) => "CacheNotReady",
            Error::SigningKeyMissing(_) => "SigningKeyMissing",
            Error::Scope(e) => e.reason(),
        }
    }

    /// Whether waiting for the user's edit is the only cure (no fast retry).
    pub fn needs_user(&self) -> bool {
        matches!(
            self,
            Error::InvalidSpec(_) | Error::MissingObjectKey(_) | Error::Scope(_)
        )
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
