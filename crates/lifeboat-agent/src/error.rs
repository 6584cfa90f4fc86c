//! The agent's errors: every failure has a class (and so an exit code and a condition reason)
//! and a message a person can act on. Messages never carry a secret.

use lifeboat_api::agent_result::ErrorClass;

#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct AgentError {
    pub class: ErrorClass,
    pub message: String,
}

impl AgentError {
    pub fn new(class: ErrorClass, message: impl Into<String>) -> Self {
        Self {
            class,
            message: message.into(),
        }
    }

    pub fn config(message: impl Into<String>) -> Self {
        Self::new(ErrorClass::Config, message)
    }

    pub fn storage(what: impl std::fmt::Display, e: std::io::Error) -> Self {
        Self::new(ErrorClass::Storage, format!("{what}: {e}"))
    }

    pub fn integrity(message: impl Into<String>) -> Self {
        Self::new(ErrorClass::Integrity, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorClass::NotFound, message)
    }
}

pub type Result<T> = std::result::Result<T, AgentError>;
