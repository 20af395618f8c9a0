//! Passwords: argon2id (the crate's default parameters: 19 MiB, 2 passes, 1 lane; stored as a
//! PHC string, so verifying uses the parameters a hash was made with) with a random 16-byte
//! salt.
//!
//! The work is bounded, whoever asks: hashing runs on a small fixed pool of threads
//! ([`WORKERS`]), each of which owns its argon2 memory, allocated once and reused for every
//! hash (argon2 needs 19 MiB per hash; allocated per attempt, freed memory of that size stays
//! with the allocator's per-thread arenas, so a burst of failed log-ins used to leave the
//! process near 1 GB). At most [`QUEUE`] requests wait for a worker; beyond that the answer is
//! `rate_limited` (429, `Retry-After`) at once, so waiting requests cannot pile up either. The
//! memory the hashing can ever hold is `WORKERS` × 19 MiB.

use std::sync::{
    mpsc::{self, SyncSender, TrySendError},
    Arc, Mutex, OnceLock,
};

use argon2::{
    password_hash::{Output, ParamsString, PasswordHash, Salt, SaltString},
    Algorithm, Argon2, Block, Params, Version,
};

use crate::error::{ApiError, Result};

/// Threads that hash passwords (each holds one hash's memory for good).
pub const WORKERS: usize = 2;
/// Requests that may wait for a worker; more are refused with `rate_limited`.
pub const QUEUE: usize = 32;
/// Largest argon2 memory cost (KiB) a stored hash may ask for (ours use 19 MiB); a hash that
/// asks for more never matches, so a damaged row cannot make the server allocate gigabytes.
const MAX_M_COST: u32 = 64 * 1024;

/// One unit of work, run by a worker with its memory.
type Job = Box<dyn FnOnce(&mut Vec<Block>) + Send>;

struct Pool {
    jobs: SyncSender<Job>,
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        let (jobs, rx) = mpsc::sync_channel::<Job>(QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..WORKERS {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("wrenn-password-{i}"))
                .spawn(move || {
                    let mut memory = vec![Block::default(); Params::DEFAULT_M_COST as usize];
                    loop {
                        let job = match rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(&mut memory),
                            Err(_) => return, // the pool is gone
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "starting a password hashing thread");
            }
        }
        Pool { jobs }
    })
}

fn busy() -> ApiError {
    ApiError::RateLimited {
        message: "too many password checks at once; try again in a moment".into(),
        retry_after_secs: 1,
    }
}

/// Runs `f` on the pool with a worker's memory; `rate_limited` when the queue is full.
async fn on_pool<T: Send + 'static>(
    f: impl FnOnce(&mut Vec<Block>) -> T + Send + 'static,
) -> Result<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move |memory| {
        let _ = tx.send(f(memory));
    });
    match pool().jobs.try_send(job) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => return Err(busy()),
        Err(TrySendError::Disconnected(_)) => {
            return Err(ApiError::Internal("password hashing is shut down".into()))
        }
    }
    rx.await
        .map_err(|_| ApiError::Internal("password hashing task failed".into()))
}

/// argon2 into `out` with `memory` (grown only for a stored hash with a larger cost, within
/// [`MAX_M_COST`]).
fn argon2_into(
    params: Params,
    version: Version,
    password: &[u8],
    salt: &[u8],
    out: &mut [u8],
    memory: &mut Vec<Block>,
) -> std::result::Result<(), argon2::Error> {
    let need = params.block_count();
    if memory.len() < need {
        memory.resize(need, Block::default());
    }
    let r = Argon2::new(Algorithm::Argon2id, version, params).hash_password_into_with_memory(
        password,
        salt,
        out,
        &mut memory[..need],
    );
    // Keep the usual size only: a larger buffer goes back.
    if memory.len() > Params::DEFAULT_M_COST as usize {
        memory.truncate(Params::DEFAULT_M_COST as usize);
        memory.shrink_to_fit();
    }
    r
}

fn hash_now(password: &[u8], memory: &mut Vec<Block>) -> Result<String> {
    let mut salt = [0u8; 16];
    wrenn_types::secret::fill(&mut salt)?;
    let salt = SaltString::encode_b64(&salt)
        .map_err(|e| ApiError::Internal(format!("encoding the salt: {e}")))?;
    let mut salt_bytes = [0u8; 64];
    let raw_salt = Salt::from(&salt)
        .decode_b64(&mut salt_bytes)
        .map_err(|e| ApiError::Internal(format!("decoding the salt: {e}")))?;
    let params = Params::default();
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    argon2_into(
        params.clone(),
        Version::V0x13,
        password,
        raw_salt,
        &mut out,
        memory,
    )
    .map_err(|e| ApiError::Internal(format!("hashing the password: {e}")))?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params)
            .map_err(|e| ApiError::Internal(format!("hashing the password: {e}")))?,
        salt: Some(Salt::from(&salt)),
        hash: Some(
            Output::new(&out)
                .map_err(|e| ApiError::Internal(format!("hashing the password: {e}")))?,
        ),
    };
    Ok(phc.to_string())
}

/// Whether `password` matches the PHC string `phc` (argon2id only; anything else is `false`).
fn verify_now(password: &[u8], phc: &str, memory: &mut Vec<Block>) -> bool {
    let Ok(h) = PasswordHash::new(phc) else {
        return false;
    };
    if Algorithm::try_from(h.algorithm) != Ok(Algorithm::Argon2id) {
        return false;
    }
    let (Ok(params), Some(salt), Some(expected)) = (Params::try_from(&h), h.salt, h.hash) else {
        return false;
    };
    let version = match h.version.map(Version::try_from) {
        None => Version::V0x13,
        Some(Ok(v)) => v,
        Some(Err(_)) => return false,
    };
    if params.m_cost() > MAX_M_COST || params.p_cost() != 1 {
        return false;
    }
    let mut salt_bytes = [0u8; 64];
    let Ok(raw_salt) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    let mut out = vec![0u8; expected.len()];
    if argon2_into(params, version, password, raw_salt, &mut out, memory).is_err() {
        return false;
    }
    // Constant-time comparison.
    Output::new(&out).is_ok_and(|o| o == expected)
}

/// A hash of a random password, verified against when there is no user: an unknown email
/// costs as much time as a wrong password.
fn dummy_hash(memory: &mut Vec<Block>) -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        // Not a secret anyone holds: an unguessable password nobody has. If the random source
        // fails, a fixed one does the same job (no login can match it: no user has this hash).
        let mut pw = [0u8; 32];
        if wrenn_types::secret::fill(&mut pw).is_err() {
            pw = *b"wrenn: no user has this password";
        }
        hash_now(&pw, memory).unwrap_or_default()
    })
}

/// The PHC string (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`) of `password`.
/// `rate_limited` when the hashing queue is full.
pub async fn hash(password: String) -> Result<String> {
    on_pool(move |memory| hash_now(password.as_bytes(), memory)).await?
}

/// Whether `password` matches `stored`; with no stored hash (unknown user) it checks against a
/// dummy hash and answers `false`, taking the same time. `rate_limited` when the hashing
/// queue is full.
pub async fn verify(password: String, stored: Option<String>) -> Result<bool> {
    on_pool(move |memory| {
        let known = stored.is_some();
        let phc = stored.unwrap_or_else(|| dummy_hash(memory).to_string());
        let ok = verify_now(password.as_bytes(), &phc, memory);
        known && ok
    })
    .await
}

/// Costs what hashing a new password costs, and answers nothing: for a request that must take
/// as long as a sign-up without making one (so timing does not tell which emails exist).
pub async fn burn(password: String) -> Result<()> {
    on_pool(move |memory| {
        let _ = hash_now(password.as_bytes(), memory);
    })
    .await
}

#[cfg(test)]
mod tests {
    use argon2::{PasswordHasher, PasswordVerifier};

    #[tokio::test]
    async fn hash_and_verify() {
        let h = super::hash("correct horse".into()).await.unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
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
        // A hash that asks for too much memory never matches (and allocates nothing).
        let greedy = "$argon2id$v=19$m=4194304,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$\
                      AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        assert!(!super::verify("x".into(), Some(greedy.into()))
            .await
            .unwrap());
    }

    /// Ours and the argon2 crate's own hashing agree both ways (the pool computes the same
    /// PHC strings the crate would, so hashes stored before stay valid).
    #[tokio::test]
    async fn compatible_with_the_crate() {
        let salt = argon2::password_hash::SaltString::encode_b64(b"0123456789abcdef").unwrap();
        let theirs = argon2::Argon2::default()
            .hash_password(b"correct horse", &salt)
            .unwrap()
            .to_string();
        assert!(super::verify("correct horse".into(), Some(theirs.clone()))
            .await
            .unwrap());
        assert!(!super::verify("correct horsf".into(), Some(theirs))
            .await
            .unwrap());
        let ours = super::hash("battery staple".into()).await.unwrap();
        let parsed = argon2::PasswordHash::new(&ours).unwrap();
        assert!(argon2::Argon2::default()
            .verify_password(b"battery staple", &parsed)
            .is_ok());
    }

    /// More requests than workers and queue together: the ones beyond are refused at once
    /// with `rate_limited`, the rest finish.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_is_refused() {
        let n = super::WORKERS + super::QUEUE + 40;
        let tasks: Vec<_> = (0..n)
            .map(|_| tokio::spawn(super::verify("x".into(), None)))
            .collect();
        let (mut ok, mut limited) = (0, 0);
        for t in tasks {
            match t.await.unwrap() {
                Ok(false) => ok += 1,
                Err(e) => {
                    assert_eq!(e.status_and_code().1, "rate_limited", "{e}");
                    limited += 1;
                }
                Ok(true) => panic!("an unknown user matched"),
            }
        }
        assert!(limited >= 1, "none refused of {n}");
        assert!(ok >= 1, "none of {n} was served");
    }
}
