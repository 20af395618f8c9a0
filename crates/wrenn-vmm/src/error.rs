//! The one error type of the VM layer.

use std::{io, path::PathBuf, time::Duration};

#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    #[error("invalid VM configuration: {0}")]
    Config(String),
    #[error("starting {program}: {source}")]
    Spawn {
        program: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("QMP protocol error: {0}")]
    Qmp(String),
    #[error("QMP command {command} failed: {class}: {desc}")]
    Command {
        command: String,
        class: String,
        desc: String,
    },
    #[error("the VMM process exited ({status}); console tail:\n{console}")]
    Exited { status: String, console: String },
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout { after: Duration, what: String },
    #[error("preparing the booted guest: {0}")]
    Prepare(String),
    #[error("cannot {action} a VM that is {state}")]
    State { action: &'static str, state: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

impl VmmError {
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        VmmError::Io {
            context: context.into(),
            source,
        }
    }
}

pub type Result<T, E = VmmError> = std::result::Result<T, E>;
