//! The one error of this crate's text parsers.

/// Text that is not one of this crate's values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("{0:?} is not a capsule status")]
    Status(String),
    /// `[a-zA-Z0-9][a-zA-Z0-9._-]*`, at most `max` characters.
    #[error(
        "{name:?} is not a template name ([a-zA-Z0-9][a-zA-Z0-9._-]*, at most {max} characters)"
    )]
    TemplateName { name: String, max: usize },
    #[error("{0:?} is not an actor kind")]
    Actor(String),
    #[error("{0:?} is not a role")]
    Role(String),
    #[error("{0:?} is not a host type (regular or byoc)")]
    HostKind(String),
    #[error("{0:?} is not a host status")]
    HostStatus(String),
    /// A build recipe or Dockerfile that cannot be built, with the line it is on.
    #[error("line {line}: {reason}")]
    Recipe { line: usize, reason: String },
}
