//! The one convention for checking settings: every settings type implements [`Validate`] and
//! refuses with an [`InvalidSetting`] that names the exact key, as a user writes it.
//!
//! A section checks its own keys and prefixes those of the sections it holds with
//! [`InvalidSetting::within`] (or [`section`]), so a refusal deep inside reads
//! `orders.grpc_timeout_ms`, never a key of some other setting.

/// A setting that cannot work: its key (dotted, relative to the section that checked it) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct InvalidSetting {
    pub key: String,
    pub reason: String,
}

impl InvalidSetting {
    #[must_use]
    pub fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            reason: reason.into(),
        }
    }

    /// The same refusal seen from the section that holds this one: `section.key`.
    #[must_use]
    pub fn within(mut self, section: &str) -> Self {
        if !section.is_empty() {
            self.key = format!("{section}.{}", self.key);
        }
        self
    }
}

/// Settings that can say whether they can work.
pub trait Validate {
    /// # Errors
    /// The first setting that cannot work.
    fn validate(&self) -> Result<(), InvalidSetting>;
}

/// `Err` naming `key` unless `ok`.
///
/// # Errors
/// `ok` is false.
pub fn ensure(ok: bool, key: &str, reason: &str) -> Result<(), InvalidSetting> {
    if ok {
        Ok(())
    } else {
        Err(InvalidSetting::new(key, reason))
    }
}

/// Checks a section held under `name`, prefixing the key of a refusal.
///
/// # Errors
/// The first setting of the section that cannot work.
pub fn section(name: &str, settings: &impl Validate) -> Result<(), InvalidSetting> {
    settings.validate().map_err(|e| e.within(name))
}

/// `must be greater than 0` for a duration, count or size that must not be zero.
///
/// # Errors
/// `value` is zero.
pub fn positive(value: u64, key: &str) -> Result<(), InvalidSetting> {
    ensure(value > 0, key, "must be greater than 0")
}

/// `must be between a and b` for a setting outside `range` (both ends allowed).
///
/// # Errors
/// `value` is outside `range`.
pub fn within<T: PartialOrd + std::fmt::Display>(
    value: T,
    range: std::ops::RangeInclusive<T>,
    key: &str,
) -> Result<(), InvalidSetting> {
    let reason = format!("must be between {} and {}", range.start(), range.end());
    ensure(range.contains(&value), key, &reason)
}

impl Validate for mercato_storage::DatabaseConfig {
    fn validate(&self) -> Result<(), InvalidSetting> {
        mercato_storage::Backend::of_url(&self.url).map_err(|e| InvalidSetting::new("url", e.to_string()))?;
        positive(u64::from(self.max_connections), "max_connections")?;
        positive(self.acquire_timeout_ms, "acquire_timeout_ms")
    }
}

impl Validate for mercato_security::VerifierConfig {
    fn validate(&self) -> Result<(), InvalidSetting> {
        ensure(!self.issuer.is_empty(), "issuer", "must not be empty")?;
        ensure(!self.audience.is_empty(), "audience", "must not be empty")
    }
}

impl Validate for mercato_security::ServiceTokensConfig {
    fn validate(&self) -> Result<(), InvalidSetting> {
        within(self.ttl_secs, 5..=3_600, "ttl_secs")?;
        for (caller, callees) in &self.calls {
            let names_ok = std::iter::once(caller)
                .chain(callees)
                .all(|n| mercato_security::service_token::is_service_name(n));
            ensure(
                names_ok,
                &format!("calls.{caller}"),
                "services are named with lower-case letters, digits and dashes",
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Inner(u64);
    impl Validate for Inner {
        fn validate(&self) -> Result<(), InvalidSetting> {
            positive(self.0, "poll_ms")
        }
    }
    struct Outer(Inner);
    impl Validate for Outer {
        fn validate(&self) -> Result<(), InvalidSetting> {
            section("inner", &self.0)
        }
    }

    #[test]
    fn a_refusal_names_the_key_from_the_outermost_section() {
        let refusal = section("top", &Outer(Inner(0))).unwrap_err();
        assert_eq!(refusal.key, "top.inner.poll_ms");
        assert_eq!(refusal.to_string(), "top.inner.poll_ms: must be greater than 0");
        assert_eq!(section("top", &Outer(Inner(1))), Ok(()));
    }

    #[test]
    fn within_lets_both_ends_pass_and_names_the_range_it_refuses() {
        assert_eq!(within(5, 5..=3_600, "ttl_secs"), Ok(()));
        assert_eq!(within(3_600, 5..=3_600, "ttl_secs"), Ok(()));
        let refusal = within(3_601, 5..=3_600, "ttl_secs").unwrap_err();
        assert_eq!(refusal.to_string(), "ttl_secs: must be between 5 and 3600");
        let refusal = within(f64::NAN, 0.0..=1.0, "sample_ratio").unwrap_err();
        assert_eq!(refusal.reason, "must be between 0 and 1");
    }

    #[test]
    fn an_empty_section_name_adds_no_dot() {
        assert_eq!(InvalidSetting::new("k", "r").within("").key, "k");
    }
}
