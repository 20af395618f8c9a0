//! For tests of this crate and of its callers (feature `testkit`): a real registry started by
//! the test (`registry`) and images the test writes and pushes itself (`image`). Not for
//! production use.

pub mod image;
pub mod registry;

pub use registry::{cache_dir, config_for, remove_cache, Registry};

/// Why test set-up failed: a message.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TestkitError(pub String);

pub type TestResult<T> = Result<T, TestkitError>;

pub(crate) fn fail(msg: impl Into<String>) -> TestkitError {
    TestkitError(msg.into())
}

macro_rules! from_error {
    ($($t:ty),*) => {$(
        impl From<$t> for TestkitError {
            fn from(e: $t) -> Self {
                TestkitError(e.to_string())
            }
        }
    )*};
}
from_error!(
    std::io::Error,
    reqwest::Error,
    serde_json::Error,
    bcrypt::BcryptError,
    reqwest::header::ToStrError
);
