//! `[gateway.console]`: the operations console served at `/console`.

use mercato_runtime::settings::{InvalidSetting, Validate};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleConfig {
    pub enabled: bool,
    /// How often every instance's `/ready` and `/metrics` are read for the charts.
    pub sample_interval_ms: u64,
    /// Samples kept per instance: the charts' window is this many intervals.
    pub samples: usize,
    /// The upstream whose token endpoint signs an admin in.
    pub identity_upstream: String,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            sample_interval_ms: 5_000,
            samples: 60,
            identity_upstream: "identity".into(),
        }
    }
}

impl Validate for ConsoleConfig {
    fn validate(&self) -> Result<(), InvalidSetting> {
        if self.sample_interval_ms < 100 {
            return Err(InvalidSetting::new("sample_interval_ms", "must be at least 100"));
        }
        if !(2..=1_000).contains(&self.samples) {
            return Err(InvalidSetting::new("samples", "must be between 2 and 1000"));
        }
        if self.identity_upstream.is_empty() {
            return Err(InvalidSetting::new("identity_upstream", "must name an upstream"));
        }
        Ok(())
    }
}
