//! The one error type of envd, and its mapping to Connect codes and HTTP statuses.

use std::io;

use http::StatusCode;

/// Connect error codes (the subset envd produces), named as on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    Canceled,
    InvalidArgument,
    DeadlineExceeded,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    ResourceExhausted,
    FailedPrecondition,
    Unimplemented,
    Internal,
    Unavailable,
    Unauthenticated,
}

impl Code {
    /// The lowercase Connect name, e.g. `not_found`.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Canceled => "canceled",
            Code::InvalidArgument => "invalid_argument",
            Code::DeadlineExceeded => "deadline_exceeded",
            Code::NotFound => "not_found",
            Code::AlreadyExists => "already_exists",
            Code::PermissionDenied => "permission_denied",
            Code::ResourceExhausted => "resource_exhausted",
            Code::FailedPrecondition => "failed_precondition",
            Code::Unimplemented => "unimplemented",
            Code::Internal => "internal",
            Code::Unavailable => "unavailable",
            Code::Unauthenticated => "unauthenticated",
        }
    }

    /// The HTTP status Connect pairs with this code for unary responses.
    pub fn connect_status(self) -> StatusCode {
        match self {
            Code::Canceled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
            Code::InvalidArgument | Code::FailedPrecondition => StatusCode::BAD_REQUEST,
            Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::AlreadyExists => StatusCode::CONFLICT,
            Code::PermissionDenied => StatusCode::FORBIDDEN,
            Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
            Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        }
    }
}

/// Everything that can go wrong while serving a request.
#[derive(Debug, thiserror::Error)]
pub enum EnvdError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    ResourceExhausted(String),
    #[error("{0}")]
    Unimplemented(String),
    #[error("{0}")]
    DeadlineExceeded(String),
    #[error("{0}")]
    Canceled(String),
    /// The disk (or quota) is full: HTTP 507 on `/files`.
    #[error("{context}: no space left on device")]
    NoSpace { context: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("{0}")]
    Internal(String),
}

impl EnvdError {
    /// Wraps an I/O error with what envd was doing, e.g. `stat /tmp/x`.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        let context = context.into();
        if source.raw_os_error() == Some(libc::ENOSPC)
            || source.raw_os_error() == Some(libc::EDQUOT)
        {
            return EnvdError::NoSpace { context };
        }
        EnvdError::Io { context, source }
    }

    /// The Connect code for this error.
    pub fn code(&self) -> Code {
        match self {
            EnvdError::InvalidArgument(_) => Code::InvalidArgument,
            EnvdError::NotFound(_) => Code::NotFound,
            EnvdError::AlreadyExists(_) => Code::AlreadyExists,
            EnvdError::PermissionDenied(_) => Code::PermissionDenied,
            EnvdError::Unauthenticated(_) => Code::Unauthenticated,
            EnvdError::FailedPrecondition(_) => Code::FailedPrecondition,
            EnvdError::ResourceExhausted(_) | EnvdError::NoSpace { .. } => Code::ResourceExhausted,
            EnvdError::Unimplemented(_) => Code::Unimplemented,
            EnvdError::DeadlineExceeded(_) => Code::DeadlineExceeded,
            EnvdError::Canceled(_) => Code::Canceled,
            EnvdError::Internal(_) => Code::Internal,
            EnvdError::Io { source, .. } => match source.raw_os_error() {
                Some(libc::ENOENT) => Code::NotFound,
                Some(libc::EACCES) | Some(libc::EPERM) | Some(libc::EROFS) => {
                    Code::PermissionDenied
                }
                Some(libc::EEXIST) | Some(libc::ENOTEMPTY) => Code::AlreadyExists,
                Some(libc::ENOTDIR)
                | Some(libc::EISDIR)
                | Some(libc::EINVAL)
                | Some(libc::ENAMETOOLONG)
                | Some(libc::ELOOP)
                | Some(libc::EXDEV)
                // The command's arguments and environment are too large to execute.
                | Some(libc::E2BIG) => Code::InvalidArgument,
                Some(libc::EMFILE) | Some(libc::ENFILE) | Some(libc::ENOMEM) => {
                    Code::ResourceExhausted
                }
                _ => Code::Internal,
            },
        }
    }

    /// The status for the plain HTTP endpoints (`/files`, `/init`, ...).
    pub fn http_status(&self) -> StatusCode {
        match self {
            EnvdError::NoSpace { .. } => StatusCode::INSUFFICIENT_STORAGE,
            _ => match self.code() {
                Code::FailedPrecondition => StatusCode::PRECONDITION_FAILED,
                code => code.connect_status(),
            },
        }
    }
}

/// Shorthand for results in envd.
pub type Result<T, E = EnvdError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_map_to_codes() {
        let cases = [
            (libc::ENOENT, Code::NotFound),
            (libc::EACCES, Code::PermissionDenied),
            (libc::EEXIST, Code::AlreadyExists),
            (libc::ENOTDIR, Code::InvalidArgument),
            (libc::EIO, Code::Internal),
            (libc::ENOSPC, Code::ResourceExhausted),
            (libc::E2BIG, Code::InvalidArgument),
        ];
        for (errno, code) in cases {
            let err = EnvdError::io("op", io::Error::from_raw_os_error(errno));
            assert_eq!(err.code(), code, "errno {errno}");
        }
        let full = EnvdError::io("write /x", io::Error::from_raw_os_error(libc::ENOSPC));
        assert_eq!(full.http_status(), StatusCode::INSUFFICIENT_STORAGE);
        assert!(full.to_string().contains("no space left"));
    }
}
