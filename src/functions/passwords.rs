//! Password rules and bcrypt (spec §6.4). Hashing runs on the blocking pool, at most one job per
//! core; when more than `MAX_WAITING` requests queue for a slot, new ones are refused (503) rather
//! than letting latency grow without bound.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Semaphore;

use crate::error::{Error, ErrorCode};

const MAX_WAITING: usize = 64;
pub const MIN_CHARS: usize = 8;
pub const MAX_BYTES: usize = 72;

/// Validates a new password (register, change, reset). Login applies no length rule.
pub fn validate_new(password: &str) -> Result<(), Error> {
    if password.chars().count() < MIN_CHARS {
        return Err(Error::new(
            ErrorCode::PasswordTooShort,
            "The password must be at least 8 characters long",
        )
        .with_field("password"));
    }
    if password.len() > MAX_BYTES {
        return Err(
            Error::new(ErrorCode::PasswordTooLong, "The password must be at most 72 bytes long").with_field("password"),
        );
    }
    Ok(())
}

/// Bounded bcrypt worker.
#[derive(Clone)]
pub struct Hasher {
    cost: u32,
    slots: Arc<Semaphore>,
    waiting: Arc<AtomicUsize>,
    /// A hash of a random password at the configured cost, verified against when an email is
    /// unknown so that failures take as long as real checks.
    dummy_hash: Arc<str>,
}

impl Hasher {
    pub fn new(cost: u32) -> Result<Self, bcrypt::BcryptError> {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        let dummy = bcrypt::hash(crate::functions::tokens::generate(), cost)?;
        Ok(Hasher {
            cost,
            slots: Arc::new(Semaphore::new(cores)),
            waiting: Arc::new(AtomicUsize::new(0)),
            dummy_hash: dummy.into(),
        })
    }

    pub fn cost(&self) -> u32 {
        self.cost
    }

    async fn run<T: Send + 'static>(&self, job: impl FnOnce() -> T + Send + 'static) -> Result<T, Error> {
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= MAX_WAITING {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(Error::unavailable("The server is busy, try again shortly"));
        }
        let permit = self.slots.clone().acquire_owned().await;
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        let permit = permit.map_err(Error::internal)?;
        let out = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            job()
        })
        .await
        .map_err(Error::internal)?;
        Ok(out)
    }

    pub async fn hash(&self, password: &str) -> Result<String, Error> {
        let (pw, cost) = (password.to_string(), self.cost);
        self.run(move || bcrypt::hash(pw, cost)).await?.map_err(Error::internal)
    }

    /// Verifies against `hash`, or against the dummy hash when there is no account, so both take
    /// the same time. A malformed stored hash counts as a mismatch.
    pub async fn verify(&self, password: &str, hash: Option<&str>) -> Result<bool, Error> {
        let exists = hash.is_some();
        let hash = hash.map(str::to_string).unwrap_or_else(|| self.dummy_hash.to_string());
        let pw = password.to_string();
        let ok = self.run(move || bcrypt::verify(pw, &hash).unwrap_or(false)).await?;
        Ok(ok && exists)
    }

    /// True when a stored hash uses another cost and should be re-hashed after a good login.
    pub fn needs_rehash(&self, hash: &str) -> bool {
        hash.split('$').nth(2).and_then(|c| c.parse::<u32>().ok()) != Some(self.cost)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_password_rules() {
        assert_eq!(validate_new("short").unwrap_err().code(), ErrorCode::PasswordTooShort);
        // 7 scalar values but more bytes: still too short.
        assert_eq!(validate_new("ééééééé").unwrap_err().code(), ErrorCode::PasswordTooShort);
        assert!(validate_new("12345678").is_ok());
        assert!(validate_new(&"a".repeat(72)).is_ok());
        assert_eq!(
            validate_new(&"a".repeat(73)).unwrap_err().code(),
            ErrorCode::PasswordTooLong
        );
        // 37 two-byte characters = 74 bytes.
        assert_eq!(
            validate_new(&"é".repeat(37)).unwrap_err().code(),
            ErrorCode::PasswordTooLong
        );
    }

    #[tokio::test]
    async fn hash_verify_and_dummy() {
        let h = Hasher::new(4).unwrap();
        let hash = h.hash("correct horse").await.unwrap();
        assert!(h.verify("correct horse", Some(&hash)).await.unwrap());
        assert!(!h.verify("wrong horse", Some(&hash)).await.unwrap());
        assert!(!h.verify("correct horse", None).await.unwrap());
        assert!(!h.verify("x", Some("not a hash")).await.unwrap());
        assert!(!h.needs_rehash(&hash));
        assert!(h.needs_rehash(&bcrypt::hash("x", 5).unwrap()));
    }

    #[tokio::test]
    async fn refuses_when_the_queue_is_full() {
        let h = Hasher::new(4).unwrap();
        // Occupy every slot, then fill the queue.
        let held = h
            .slots
            .clone()
            .acquire_many_owned(h.slots.available_permits() as u32)
            .await
            .unwrap();
        let mut waiting = Vec::new();
        for _ in 0..MAX_WAITING {
            let h = h.clone();
            waiting.push(tokio::spawn(async move { h.hash("queued password").await }));
        }
        while h.waiting.load(Ordering::SeqCst) < MAX_WAITING {
            tokio::task::yield_now().await;
        }
        let refused = h.hash("one too many").await.unwrap_err();
        assert_eq!(refused.code(), ErrorCode::ServiceUnavailable);
        drop(held);
        for w in waiting {
            assert!(w.await.unwrap().is_ok(), "queued work completes once slots free up");
        }
    }
}
