//! Basic auth against the bcrypt hashes of `basic_auth_users`.
//!
//! bcrypt is slow on purpose (tens of milliseconds at cost 10), so, as exporter-toolkit does,
//! a successful check is remembered: [`Authenticator`] keeps the SHA-256 of (user, hash,
//! password) of the last [`CACHE_SIZE`] successes and compares against them in constant time,
//! so a scraper's repeated requests cost microseconds. A changed hash in the file changes the
//! key, so a changed password is never served from the cache. Failures are not cached: every
//! wrong guess pays the full bcrypt cost, and bcrypt runs one at a time. An unknown user is
//! checked against a fixed hash, so the answer's timing does not tell which users exist.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use base64::Engine as _;
use subtle::ConstantTimeEq;

/// Successful checks remembered.
pub const CACHE_SIZE: usize = 100;

/// The credentials of an `Authorization: Basic` header, if it is one.
pub fn basic_credentials(header: &str) -> Option<(String, String)> {
    let (scheme, encoded) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

type Key = [u8; 32];

/// Checks passwords, remembering successes; shared by every connection.
#[derive(Debug, Default)]
pub struct Authenticator {
    cache: Mutex<VecDeque<Key>>,
    /// bcrypt runs one at a time, as in exporter-toolkit.
    bcrypt: Mutex<()>,
    bcrypt_runs: AtomicU64,
}

/// What the cache says about a credential.
#[derive(Debug)]
pub enum Lookup {
    /// Checked before and good.
    Allowed,
    /// Needs a bcrypt run ([`Authenticator::verify_slow`]).
    Verify(Pending),
}

/// A credential waiting for its bcrypt run.
#[derive(Debug)]
pub struct Pending {
    key: Key,
    hash: String,
    known_user: bool,
    password: String,
}

fn key(user: &str, hash: &str, password: &str) -> Key {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in [user, hash, password] {
        ctx.update(&(part.len() as u64).to_le_bytes());
        ctx.update(part.as_bytes());
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// The hash an unknown user is checked against (a bcrypt of a random password, cost 10).
fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| {
        let mut password = [0u8; 16];
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut password);
        bcrypt::hash(password, 10).unwrap_or_default()
    })
}

impl Authenticator {
    pub fn new() -> Self {
        Self::default()
    }

    /// The fast path: whether `user`/`password` was checked good before against `users`.
    pub fn lookup(&self, users: &BTreeMap<String, String>, user: &str, password: &str) -> Lookup {
        let (hash, known_user) = match users.get(user) {
            Some(hash) => (hash.clone(), true),
            None => (decoy_hash().to_string(), false),
        };
        let key = key(user, &hash, password);
        if known_user {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            // Every entry is compared, each in constant time.
            let hit = cache
                .iter()
                .fold(subtle::Choice::from(0), |hit, k| hit | k.ct_eq(&key));
            if bool::from(hit) {
                return Lookup::Allowed;
            }
        }
        Lookup::Verify(Pending {
            key,
            hash,
            known_user,
            password: password.to_string(),
        })
    }

    /// Runs bcrypt (blocking: call it off the async threads) and remembers a success.
    pub fn verify_slow(&self, pending: Pending) -> bool {
        let matched = {
            let _one_at_a_time = self.bcrypt.lock().unwrap_or_else(|p| p.into_inner());
            self.bcrypt_runs.fetch_add(1, Ordering::Relaxed);
            bcrypt::verify(&pending.password, &pending.hash).unwrap_or(false)
        };
        let ok = matched && pending.known_user;
        if ok {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if cache.len() >= CACHE_SIZE {
                cache.pop_front();
            }
            cache.push_back(pending.key);
        }
        ok
    }

    /// Both steps, blocking.
    pub fn check(&self, users: &BTreeMap<String, String>, user: &str, password: &str) -> bool {
        match self.lookup(users, user, password) {
            Lookup::Allowed => true,
            Lookup::Verify(pending) => self.verify_slow(pending),
        }
    }

    /// How many times bcrypt ran (cache misses).
    pub fn bcrypt_runs(&self) -> u64 {
        self.bcrypt_runs.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(u, p)| (u.to_string(), bcrypt::hash(p, 4).unwrap()))
            .collect()
    }

    #[test]
    fn a_good_password_is_checked_once_then_served_from_the_cache() {
        let users = users(&[("prometheus", "s3cret")]);
        let auth = Authenticator::new();
        assert!(auth.check(&users, "prometheus", "s3cret"));
        assert_eq!(auth.bcrypt_runs(), 1);
        for _ in 0..10 {
            assert!(auth.check(&users, "prometheus", "s3cret"));
        }
        assert_eq!(auth.bcrypt_runs(), 1, "repeated good checks are cached");
        assert!(matches!(
            auth.lookup(&users, "prometheus", "s3cret"),
            Lookup::Allowed
        ));
    }

    #[test]
    fn wrong_passwords_and_unknown_users_always_run_bcrypt() {
        let users = users(&[("prometheus", "s3cret")]);
        let auth = Authenticator::new();
        assert!(!auth.check(&users, "prometheus", "wrong"));
        assert!(!auth.check(&users, "prometheus", "wrong"));
        assert!(!auth.check(&users, "nobody", "s3cret"));
        assert_eq!(auth.bcrypt_runs(), 3, "failures are not cached");
        assert!(!auth.check(&users, "prometheus", "s3cret2"));
        assert!(!auth.check(&users, "", ""));
    }

    #[test]
    fn a_changed_hash_is_not_answered_from_the_cache() {
        let auth = Authenticator::new();
        let before = users(&[("prometheus", "old")]);
        assert!(auth.check(&before, "prometheus", "old"));
        let after = users(&[("prometheus", "new")]);
        assert!(
            !auth.check(&after, "prometheus", "old"),
            "the old password is gone"
        );
        assert!(auth.check(&after, "prometheus", "new"));
        let removed = BTreeMap::new();
        assert!(
            !auth.check(&removed, "prometheus", "new"),
            "a removed user is refused"
        );
    }

    #[test]
    fn the_cache_is_bounded() {
        let auth = Authenticator::new();
        let users = users(&[("u", "p")]);
        for i in 0..(CACHE_SIZE + 5) {
            let mut cache = auth.cache.lock().unwrap();
            cache.push_back(key("other", "h", &i.to_string()));
            while cache.len() > CACHE_SIZE {
                cache.pop_front();
            }
        }
        assert!(auth.check(&users, "u", "p"));
        assert_eq!(auth.cache.lock().unwrap().len(), CACHE_SIZE);
        assert!(matches!(auth.lookup(&users, "u", "p"), Lookup::Allowed));
    }

    #[test]
    fn basic_headers_are_decoded() {
        // "prometheus:pa:ss" — the password may contain ':'.
        let header = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("prometheus:pa:ss")
        );
        assert_eq!(
            basic_credentials(&header),
            Some(("prometheus".into(), "pa:ss".into()))
        );
        assert_eq!(basic_credentials("Bearer abc"), None);
        assert_eq!(basic_credentials("Basic !!!"), None);
    }
}
