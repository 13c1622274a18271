//! `[gateway.auth]`: what checking clients' tokens may hold in memory.

use mercato_runtime::settings::{InvalidSetting, Validate};
use mercato_security::verified::MIN_CAPACITY;
use serde::{Deserialize, Serialize};

/// The most verified tokens a gateway may be told to remember: about 1.5 GiB.
pub const MAX_VERIFIED_TOKENS: usize = 1 << 20;

/// Tokens that passed their signature check are remembered, so that a client's next request
/// with the same token costs a lookup instead of an ES256 check (about 300 µs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Most tokens remembered at once, each about 1.5 KiB with its claims; past it, expired ones
    /// are dropped first, then the rest of a full shard. Size it to the clients active within
    /// a token's lifetime: fewer cost a signature check each time they are forgotten.
    pub verified_tokens_max: usize,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            verified_tokens_max: mercato_security::verified::CAPACITY,
        }
    }
}

impl Validate for AuthConfig {
    fn validate(&self) -> Result<(), InvalidSetting> {
        if !(MIN_CAPACITY..=MAX_VERIFIED_TOKENS).contains(&self.verified_tokens_max) {
            return Err(InvalidSetting::new(
                "auth.verified_tokens_max",
                format!("must be between {MIN_CAPACITY} and {MAX_VERIFIED_TOKENS}"),
            ));
        }
        Ok(())
    }
}
