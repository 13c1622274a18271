//! The defence against forged-token floods: token checks cost CPU (an ES256 signature check is
//! hundreds of microseconds), so they are rationed per client address before any is made.
//!
//! - A screen rejects tokens that cannot be valid with no decoding: too long, not three
//!   base64url segments, or a signature segment of the wrong length for ES256.
//! - Each failed authentication (a screened-out or refused token) counts against the client's
//!   address in a GCRA of its own (`[gateway.preauth]`); once an address has used up its
//!   failure burst, its requests that need a token get `429` with `Retry-After` before any token
//!   work, until the failure rate allows another. A valid token is never counted, and a client
//!   whose tokens verify is never slowed by it. Public routes stay open: there an address over
//!   its bound is served as if it had sent no token.
//!
//! The counts are kept in this process only: the point is to protect this process's CPU.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use mercato_resilience::register_metrics;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;

use crate::config::PreauthConfig;
use crate::forwarded::IpText;
use crate::rate_limit::gcra::Quota;
use crate::rate_limit::{Clock, LocalLimiter};

/// An ES256 signature is 64 bytes: 86 base64url characters without padding.
const ES256_SIGNATURE_CHARS: usize = 86;

/// Failed authentications per client address.
#[derive(Debug)]
pub struct Preauth {
    failures: LocalLimiter,
    quota: Quota,
    clock: Arc<dyn Clock>,
    max_token_bytes: usize,
    screened_out: Counter,
    refused: Counter,
}

impl Preauth {
    #[must_use]
    pub fn new(config: &PreauthConfig, clock: Arc<dyn Clock>, registry: &mut Registry) -> Self {
        let this = Self {
            failures: LocalLimiter::new(config.max_addresses),
            quota: Quota::per_minute(config.failures_per_minute, config.failure_burst),
            clock,
            max_token_bytes: config.max_token_bytes,
            screened_out: Counter::default(),
            refused: Counter::default(),
        };
        register_metrics!(registry, {
            this.screened_out => "gateway_tokens_screened_out", "Bearer tokens refused by their shape, before any decoding or signature check";
            this.refused => "gateway_preauth_refused", "Requests refused with 429 because their address failed authentication too often";
        });
        this
    }

    /// `Err(retry_after)` when `client` has used up its failed authentications.
    ///
    /// # Errors
    /// The wait until `client` may try a token again.
    pub fn admit(&self, client: IpAddr) -> Result<(), Duration> {
        let decision = self
            .failures
            .peek(IpText::new(client).as_str(), self.clock.now_us(), self.quota);
        match decision.retry_after {
            Some(wait) if !decision.allowed => {
                self.refused.inc();
                Err(wait)
            }
            _ => Ok(()),
        }
    }

    /// Counts a failed authentication against `client`.
    pub fn failed(&self, client: IpAddr) {
        self.failures
            .check(IpText::new(client).as_str(), self.clock.now_us(), self.quota);
    }

    /// Whether `token` could be an ES256 JWT at all; counted when it could not.
    #[must_use]
    pub fn screen(&self, token: &str) -> bool {
        let plausible = plausible_es256_jwt(token, self.max_token_bytes);
        if !plausible {
            self.screened_out.inc();
        }
        plausible
    }
}

/// How many bytes of `chunk` are not unpadded base64url or a dot (as a flag: 0 or 1), and how
/// many are dots. Arithmetic without branches or early exit, so that the compiler checks many
/// bytes per instruction: every valid token is scanned whole anyway, and a table lookup a
/// byte cost twice as much.
fn scan(chunk: &[u8]) -> (u8, u8) {
    let mut bad = 0_u8;
    let mut dots = 0_u8;
    for &b in chunk {
        let letter = u8::from((b | 0x20).wrapping_sub(b'a') < 26);
        let digit = u8::from(b.wrapping_sub(b'0') < 10);
        let dot = u8::from(b == b'.');
        let good = letter | digit | u8::from(b == b'-') | u8::from(b == b'_') | dot;
        bad |= 1 ^ good;
        dots += dot;
    }
    (bad, dots)
}

/// Three non-empty base64url segments, the last as long as an ES256 signature.
fn plausible_es256_jwt(token: &str, max_bytes: usize) -> bool {
    if token.len() > max_bytes {
        return false;
    }
    let bytes = token.as_bytes();
    // Chunks short enough that a chunk's count of dots fits its byte.
    let chunks = bytes.chunks_exact(32);
    let (mut bad, tail_dots) = scan(chunks.remainder());
    let mut dots = usize::from(tail_dots);
    for chunk in chunks {
        let (b, d) = scan(chunk);
        bad |= b;
        dots += usize::from(d);
    }
    if bad != 0 || dots != 2 {
        return false;
    }
    let (Some(first), Some(last)) = (
        bytes.iter().position(|&b| b == b'.'),
        bytes.iter().rposition(|&b| b == b'.'),
    ) else {
        return false;
    };
    first > 0 && last > first + 1 && bytes.len() - last - 1 == ES256_SIGNATURE_CHARS
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rate_limit::ManualClock;

    fn preauth(clock: Arc<ManualClock>) -> Preauth {
        let config = PreauthConfig {
            failures_per_minute: 60,
            failure_burst: 3,
            ..PreauthConfig::default()
        };
        Preauth::new(&config, clock, &mut Registry::default())
    }

    #[test]
    fn only_the_shape_of_an_es256_jwt_passes_the_screen() {
        let p = preauth(Arc::new(ManualClock::default()));
        let sig = "A".repeat(86);
        assert!(p.screen(&format!("eyJh.eyJz.{sig}")));
        assert!(!p.screen(&format!("eyJh.eyJz.{sig}A")), "a 65-byte signature");
        assert!(!p.screen(&format!("eyJh.eyJz.{}", "A".repeat(85))));
        assert!(!p.screen(&format!("eyJh.eyJz.{sig}.x")), "four segments");
        assert!(!p.screen(&format!("eyJh..{sig}")), "an empty segment");
        assert!(!p.screen(&format!("eyJh.ey+z.{sig}")), "not base64url");
        assert!(!p.screen(&format!("{}.eyJz.{sig}", "e".repeat(5000))), "too long");
        assert!(!p.screen("not-a-token"));
        assert!(!p.screen(&format!(".eyJz.{sig}")), "an empty header");
        assert!(!p.screen(&format!("eyJh.eyJz.{sig}.")), "a trailing dot");
        assert!(!p.screen(&format!("eyJh.eyJé.{sig}")), "not ASCII");
        assert!(!p.screen(&format!("eyJh eyJz.{sig}")), "a space");
    }

    #[test]
    fn an_address_is_refused_after_its_failure_burst_and_admitted_again_at_the_failure_rate() {
        let clock = Arc::new(ManualClock::starting_at(1_000_000_000));
        let p = preauth(Arc::clone(&clock));
        let attacker: IpAddr = "203.0.113.9".parse().unwrap();
        let other: IpAddr = "198.51.100.1".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(p.admit(attacker), Ok(()));
            p.failed(attacker);
        }
        assert_eq!(p.admit(attacker), Err(Duration::from_secs(1)));
        assert_eq!(p.admit(other), Ok(()), "addresses are counted apart");
        clock.advance(Duration::from_secs(1));
        assert_eq!(p.admit(attacker), Ok(()));
        p.failed(attacker);
        assert!(p.admit(attacker).is_err());
    }
}
