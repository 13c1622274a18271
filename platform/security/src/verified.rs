//! The tokens this process has verified, so that a client presenting its token again (as every
//! client does, for the token's whole life) costs a lookup instead of an ES256 signature check
//! (about 300 µs of CPU in the gateway).
//!
//! An entry is keyed by the whole token and found by comparing every byte, so only the very
//! same bytes match; the map's hasher is keyed at random per process (SipHash), so a client
//! cannot choose tokens that collide. Only tokens that passed every check are stored, so their
//! size is what the identity service issues (under 1 KiB), not what a client sends. A hit
//! is still checked against the clock (`exp`, `nbf`, with the verifier's leeway) and against the
//! key source (the signing key's `kid` must still be published), so a cached token is refused
//! exactly when a fresh check would refuse it; what it skips is only the signature check that
//! already passed. Failures are never cached. The cache is bounded: a full shard first drops its
//! expired entries, then everything.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::sync::{Arc, Mutex};

use crate::token::{Claims, TokenError};

const SHARDS: usize = 16;

/// Tokens held at most unless the verifier is told otherwise (about 1.5 KiB each with their
/// claims: 24 MiB when full).
pub const CAPACITY: usize = 16_384;

/// The smallest bound that is kept exactly: one entry per shard.
pub const MIN_CAPACITY: usize = SHARDS;

/// What a hit returns: the signing key's `kid` and the claims, shared rather than copied.
#[derive(Debug, Clone)]
pub struct Verified {
    pub kid: Arc<str>,
    pub claims: Arc<Claims>,
}

type Shard = HashMap<Box<str>, Verified, RandomState>;

/// See the module docs.
#[derive(Debug)]
pub struct VerifiedTokens {
    shards: Vec<Mutex<Shard>>,
    per_shard: usize,
}

impl VerifiedTokens {
    /// A cache holding at most `capacity` tokens (at least [`MIN_CAPACITY`], one a shard).
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            // Rounded down, so that the shards together never hold more than `capacity`.
            per_shard: (capacity / SHARDS).max(1),
        }
    }

    fn shard(&self, token: &str) -> std::sync::MutexGuard<'_, Shard> {
        // The one before last of a signed token's characters is random (its last carries only
        // two bits of the signature): it spreads tokens without hashing them twice. Shards only
        // spread the locking; the map itself hashes with its random key.
        let spread = token.len().checked_sub(2).map_or(0, |i| token.as_bytes()[i]);
        self.shards[usize::from(spread) % SHARDS]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The claims and signing `kid` of a token verified before, if its time claims still hold
    /// at `now`; `Err` when they no longer do (the entry is dropped).
    ///
    /// # Errors
    /// [`TokenError::Expired`] or [`TokenError::NotYetValid`].
    pub fn get(&self, token: &str, now: u64, leeway: u64) -> Result<Option<Verified>, TokenError> {
        let mut shard = self.shard(token);
        let Some(entry) = shard.get(token) else {
            return Ok(None);
        };
        if entry.claims.exp.saturating_add(leeway) < now {
            shard.remove(token);
            return Err(TokenError::Expired);
        }
        if entry.claims.nbf > now.saturating_add(leeway) {
            return Err(TokenError::NotYetValid);
        }
        Ok(Some(entry.clone()))
    }

    /// Remembers a token that passed every check.
    pub fn insert(&self, token: &str, verified: Verified, now: u64, leeway: u64) {
        let mut shard = self.shard(token);
        if shard.len() >= self.per_shard {
            shard.retain(|_, v| v.claims.exp.saturating_add(leeway) >= now);
            if shard.len() >= self.per_shard {
                shard.clear();
            }
        }
        shard.insert(token.into(), verified);
    }

    /// Drops one token (its key is gone).
    pub fn remove(&self, token: &str) {
        self.shard(token).remove(token);
    }

    /// How many tokens are held.
    #[must_use]
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len())
            .sum()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(nbf: u64, exp: u64) -> Claims {
        Claims {
            iss: "i".into(),
            aud: "a".into(),
            sub: "s".into(),
            exp,
            iat: nbf,
            nbf,
            jti: "j".into(),
            roles: vec![],
        }
    }

    fn verified(nbf: u64, exp: u64) -> Verified {
        Verified {
            kid: "k1".into(),
            claims: Arc::new(claims(nbf, exp)),
        }
    }

    fn found(cache: &VerifiedTokens, token: &str, now: u64, leeway: u64) -> Result<Option<u64>, TokenError> {
        cache.get(token, now, leeway).map(|hit| hit.map(|v| v.claims.exp))
    }

    #[test]
    fn a_hit_holds_only_while_the_time_claims_do() {
        let cache = VerifiedTokens::new(100);
        cache.insert("token", verified(100, 200), 100, 30);
        assert_eq!(&*cache.get("token", 150, 30).unwrap().unwrap().kid, "k1");
        assert_eq!(
            found(&cache, "token", 230, 30),
            Ok(Some(200)),
            "within the leeway"
        );
        assert_eq!(found(&cache, "token", 231, 30), Err(TokenError::Expired));
        assert_eq!(
            found(&cache, "token", 150, 30),
            Ok(None),
            "an expired entry is dropped"
        );
        cache.insert("token", verified(100, 200), 0, 30);
        assert_eq!(found(&cache, "token", 69, 30), Err(TokenError::NotYetValid));
    }

    #[test]
    fn only_the_same_bytes_match() {
        let cache = VerifiedTokens::new(100);
        cache.insert("a.b.c", verified(0, 10), 0, 0);
        assert_eq!(found(&cache, "a.b.d", 1, 0), Ok(None));
        assert_eq!(found(&cache, "a.b.c ", 1, 0), Ok(None));
        assert_eq!(found(&cache, "a.b.c", 1, 0), Ok(Some(10)));
        cache.remove("a.b.c");
        assert_eq!(found(&cache, "a.b.c", 1, 0), Ok(None));
    }

    #[test]
    fn the_cache_stays_bounded() {
        let cache = VerifiedTokens::new(32);
        for i in 0..1_000 {
            cache.insert(&i.to_string(), verified(0, 10), 0, 0);
        }
        assert!(cache.len() <= 32, "{}", cache.len());
        let cache = VerifiedTokens::new(40);
        for i in 0..1_000 {
            cache.insert(&i.to_string(), verified(0, 10), 0, 0);
        }
        assert!(
            cache.len() <= 40,
            "a bound that is no multiple of the shards: {}",
            cache.len()
        );
        // Expired entries go first: a full shard keeps the live ones.
        let cache = VerifiedTokens::new(SHARDS);
        cache.insert("live", verified(0, 1_000), 0, 0);
        assert!(cache.get("live", 500, 0).unwrap().is_some());
    }
}
