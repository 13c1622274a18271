//! The tokens this process has verified, so that a client presenting its token again (as every
//! client does, for the token's whole life) costs a lookup instead of an ES256 signature check
//! (about 300 µs of CPU in the gateway).
//!
//! An entry is keyed by the whole token and found by comparing every byte, so only the very
//! same bytes match. The map hashes only the token's last bytes, the end of its signature, with
//! a key chosen at random per process ([`SignatureTail`]): SipHash over a whole token cost more
//! than the rest of the lookup. Only tokens that passed every check are stored, so their
//! size is what the identity service issues (under 1 KiB), not what a client sends, and the
//! bytes hashed are the signer's random output, which no client chooses: no one can fill one
//! bucket, and a lookup of any other token costs one bucket's comparisons. A hit
//! is still checked against the clock (`exp`, `nbf`, with the verifier's leeway) and against the
//! key source (the signing key's `kid` must still be published), so a cached token is refused
//! exactly when a fresh check would refuse it; what it skips is only the signature check that
//! already passed. Failures are never cached. The cache is bounded: a full shard first drops its
//! expired entries, then everything.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
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

type Shard = HashMap<Box<str>, Verified, SignatureTail>;

/// How many of a token's last bytes are hashed: 96 bits of an ES256 signature.
const TAIL: usize = 16;

/// Hashes a token by its last [`TAIL`] bytes and its length, keyed at random per process; see
/// the module docs for why that is enough here.
#[derive(Debug, Clone, Copy)]
struct SignatureTail {
    key: u64,
}

impl SignatureTail {
    fn new() -> Self {
        Self { key: rand::random() }
    }
}

impl BuildHasher for SignatureTail {
    type Hasher = TailHasher;

    fn build_hasher(&self) -> TailHasher {
        TailHasher { state: self.key }
    }
}

/// See [`SignatureTail`].
#[derive(Debug)]
struct TailHasher {
    state: u64,
}

/// The high and low halves of a full product, folded (as foldhash and aHash mix).
fn folded_multiply(a: u64, b: u64) -> u64 {
    let product = u128::from(a) * u128::from(b);
    (product as u64) ^ ((product >> 64) as u64)
}

impl Hasher for TailHasher {
    fn write(&mut self, bytes: &[u8]) {
        let tail = &bytes[bytes.len().saturating_sub(TAIL)..];
        let mut words = [0u8; TAIL];
        words[..tail.len()].copy_from_slice(tail);
        let (low, high) = words.split_at(8);
        let low = u64::from_le_bytes(low.try_into().unwrap_or_default());
        let high = u64::from_le_bytes(high.try_into().unwrap_or_default());
        // Two rounds, so that every byte reaches every bit of the result, low bits included
        // (the map picks a bucket by them).
        let mixed = folded_multiply(self.state ^ low, (bytes.len() as u64) ^ 0x9e37_79b9_7f4a_7c15);
        self.state = folded_multiply(mixed ^ high, 0x85eb_ca6b_c2b2_ae35);
    }

    fn write_u8(&mut self, i: u8) {
        // `str`'s hash ends with a 0xff; nothing to mix for it.
        self.state ^= u64::from(i);
    }

    fn finish(&self) -> u64 {
        self.state
    }
}

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
            shards: {
                let hasher = SignatureTail::new();
                (0..SHARDS)
                    .map(|_| Mutex::new(HashMap::with_hasher(hasher)))
                    .collect()
            },
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
    fn tokens_differing_only_before_their_tail_are_told_apart() {
        let cache = VerifiedTokens::new(100);
        let tail = "x".repeat(TAIL);
        cache.insert(&format!("a.{tail}"), verified(0, 10), 0, 0);
        cache.insert(&format!("b.{tail}"), verified(0, 20), 0, 0);
        assert_eq!(found(&cache, &format!("a.{tail}"), 1, 0), Ok(Some(10)));
        assert_eq!(found(&cache, &format!("b.{tail}"), 1, 0), Ok(Some(20)));
        assert_eq!(found(&cache, &format!("c.{tail}"), 1, 0), Ok(None));
        assert_eq!(found(&cache, &tail, 1, 0), Ok(None));
    }

    #[test]
    fn the_hash_spreads_signature_tails_and_depends_on_the_key() {
        let a = SignatureTail { key: 1 };
        let b = SignatureTail { key: 2 };
        let tokens: Vec<String> = (0..1_000).map(|i| format!("h.p.sig{i:016}")).collect();
        let buckets: std::collections::BTreeSet<u64> =
            tokens.iter().map(|t| a.hash_one(t.as_str()) % 256).collect();
        assert!(
            buckets.len() > 200,
            "1,000 tails fell in {} of 256 buckets",
            buckets.len()
        );
        assert_ne!(a.hash_one("h.p.s"), b.hash_one("h.p.s"));
        assert_eq!(a.hash_one("h.p.s"), a.hash_one(String::from("h.p.s").as_str()));
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
