//! The operator's one error type. Invalid specs and conflicts are not errors:
//! they are decisions (`Ready=False` and an event), see `decide`.

use sigil_api::keys::KeyError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("key generation: {0}")]
    KeyGeneration(#[from] KeyError),
    #[error("key generation task: {0}")]
    KeyGenerationTask(#[from] tokio::task::JoinError),
    #[error("SigningKey has no metadata.{0}")]
    MissingMetadata(&'static str),
    #[error("reconcile took more than {0} steps without settling")]
    NoConvergence(usize),
    #[error("lost the leader lease {0}")]
    LeaseLost(String),
    /// A write refused because this replica's leadership may have passed to
    /// another (see `fence`).
    #[error("write refused: this replica no longer holds the leader lease")]
    NotLeader,
    /// A JWKS copy's create found the name taken, and then nothing there.
    #[error("the JWKS copy's name was taken, then freed again; retrying")]
    CopyVanished,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The `reason` label of `sigil_operator_reconcile_failures_total`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            // 409: someone changed an object between our read and our write.
            Error::Kube(kube::Error::Api(status)) if status.code == 409 => "write_conflict",
            Error::Kube(kube::Error::Api(status)) if status.code == 403 => "forbidden",
            Error::Kube(_) => "kube_api",
            Error::KeyGeneration(_) | Error::KeyGenerationTask(_) => "key_generation",
            Error::MissingMetadata(_) => "missing_metadata",
            Error::NoConvergence(_) => "no_convergence",
            Error::LeaseLost(_) => "lease_lost",
            Error::NotLeader => "not_leader",
            Error::CopyVanished => "write_conflict",
        }
    }
}
