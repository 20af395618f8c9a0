//! Passwords: argon2id (the crate's default parameters: 19 MiB, 2 passes, 1 lane; stored as a
//! PHC string, so verifying uses the parameters a hash was made with) with a random 16-byte
//! salt. Hashing runs on the blocking pool, at most a few at once so logins cannot starve the
//! machine.

use std::sync::OnceLock;

use argon2::{
    password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString},
    Argon2,
};
use tokio::sync::Semaphore;

use crate::error::{ApiError, Result};

/// Hashes computed at once, at most.
const CONCURRENT_HASHES: usize = 4;

fn permits() -> &'static Semaphore {
    static PERMITS: OnceLock<Semaphore> = OnceLock::new();
    PERMITS.get_or_init(|| Semaphore::new(CONCURRENT_HASHES))
}

fn hash_now(password: &[u8]) -> Result<String> {
    let mut salt = [0u8; 16];
    wrenn_types::secret::fill(&mut salt)?;
    let salt = SaltString::encode_b64(&salt)
        .map_err(|e| ApiError::Internal(format!("encoding the salt: {e}")))?;
    Argon2::default()
        .hash_password(password, &salt)
        .map(|h| h.to_string())
        .map_err(|e| ApiError::Internal(format!("hashing the password: {e}")))
}

/// A hash of a random password, verified against when there is no user: an unknown email
/// costs as much time as a wrong password.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        // Not a secret anyone holds: an unguessable password nobody has. If the random source
        // fails, a fixed one does the same job (no login can match it: no user has this hash).
        let mut pw = [0u8; 32];
        if wrenn_types::secret::fill(&mut pw).is_err() {
            pw = *b"wrenn: no user has this password";
        }
        hash_now(&pw).unwrap_or_default()
    })
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    let _permit = permits()
        .acquire()
        .await
        .map_err(|_| ApiError::Internal("password hashing is shut down".into()))?;
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Internal(format!("password hashing task: {e}")))
}

/// The PHC string (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`) of `password`.
pub async fn hash(password: String) -> Result<String> {
    blocking(move || hash_now(password.as_bytes())).await?
}

/// Whether `password` matches `stored`; with no stored hash (unknown user) it checks against a
/// dummy hash and answers `false`, taking the same time.
pub async fn verify(password: String, stored: Option<String>) -> Result<bool> {
    blocking(move || {
        let known = stored.is_some();
        let phc = stored.unwrap_or_else(|| dummy_hash().to_string());
        let ok = PasswordHash::new(&phc).is_ok_and(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        });
        known && ok
    })
    .await
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn hash_and_verify() {
        let h = super::hash("correct horse".into()).await.unwrap();
        assert!(h.starts_with("$argon2id$v=19$"), "{h}");
        assert!(!h.contains("correct horse"));
        assert!(super::verify("correct horse".into(), Some(h.clone()))
            .await
            .unwrap());
        assert!(!super::verify("wrong horse".into(), Some(h.clone()))
            .await
            .unwrap());
        // Salted: the same password hashes differently.
        assert_ne!(h, super::hash("correct horse".into()).await.unwrap());
        // No user: false, whatever the password.
        assert!(!super::verify("".into(), None).await.unwrap());
        // A damaged hash never matches.
        assert!(!super::verify("x".into(), Some("$argon2id$garbage".into()))
            .await
            .unwrap());
    }
}
