//! Times on the HTTP APIs: RFC 3339 in UTC, to the millisecond the services store.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// `unix_ms` (milliseconds since the Unix epoch) as RFC 3339 in UTC; empty for a time past
/// what RFC 3339 can write.
#[must_use]
pub fn rfc3339(unix_ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::rfc3339;

    #[test]
    fn times_are_rfc3339_in_utc_with_milliseconds() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }
}
