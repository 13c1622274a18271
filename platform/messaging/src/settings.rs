//! The messaging sections (`[bus]`, `[relay]`, `[inbox]`) checked by the one convention.

use mercato_runtime::settings::{InvalidSetting, Validate, ensure, positive};

use crate::{BusConfig, InboxConfig, RelayConfig};

impl Validate for BusConfig {
    fn validate(&self) -> Result<(), InvalidSetting> {
        ensure(
            self.url.starts_with("sqlite:") || self.is_nats(),
            "url",
            "must start with sqlite: (embedded) or nats://",
        )?;
        positive(self.ack_wait_ms, "ack_wait_ms")?;
        positive(self.publish_timeout_ms, "publish_timeout_ms")?;
        positive(self.duplicate_window_secs, "duplicate_window_secs")?;
        positive(self.retention_secs, "retention_secs")?;
        ensure(
            (1..=5).contains(&self.replicas),
            "replicas",
            "must be between 1 and 5",
        )
    }
}

impl Validate for RelayConfig {
    fn validate(&self) -> Result<(), InvalidSetting> {
        positive(self.batch_size as u64, "batch_size")?;
        positive(self.poll_interval_ms, "poll_interval_ms")?;
        positive(self.retry_delay_ms, "retry_delay_ms")?;
        positive(self.retention_secs, "retention_secs")
    }
}

impl Validate for InboxConfig {
    fn validate(&self) -> Result<(), InvalidSetting> {
        positive(u64::from(self.max_attempts), "max_attempts")?;
        ensure(
            !self.backoff_ms.is_empty(),
            "backoff_ms",
            "must list at least one delay",
        )?;
        positive(self.batch_size as u64, "batch_size")?;
        positive(self.fetch_wait_ms, "fetch_wait_ms")?;
        positive(self.workers as u64, "workers")?;
        // The bus's ack wait is added where both sections are known (the binary's config).
        self.retention_outlasts_redelivery(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid() {
        assert_eq!(BusConfig::default().validate(), Ok(()));
        assert_eq!(RelayConfig::default().validate(), Ok(()));
        assert_eq!(InboxConfig::default().validate(), Ok(()));
    }

    #[test]
    fn settings_that_cannot_work_are_named_by_their_key() {
        let bus = BusConfig {
            url: "amqp://x".into(),
            ..BusConfig::default()
        };
        assert_eq!(bus.validate().unwrap_err().key, "url");
        let relay = RelayConfig {
            batch_size: 0,
            ..RelayConfig::default()
        };
        assert_eq!(relay.validate().unwrap_err().key, "batch_size");
        let inbox = InboxConfig {
            backoff_ms: Vec::new(),
            ..InboxConfig::default()
        };
        assert_eq!(inbox.validate().unwrap_err().key, "backoff_ms");
        let inbox = InboxConfig {
            max_attempts: 0,
            ..InboxConfig::default()
        };
        assert_eq!(inbox.validate().unwrap_err().key, "max_attempts");
    }

    #[test]
    fn a_dedup_window_a_redelivery_could_outlast_is_refused_by_its_key() {
        let inbox = InboxConfig {
            max_attempts: 2,
            backoff_ms: vec![1_000],
            max_reorder_waits: 10,
            reorder_delay_ms: 100,
            retention_secs: 5,
            ..InboxConfig::default()
        };
        // 2 × 1 s of ack wait, 2 × 1 s of backoff, 10 × 100 ms of reorder waits.
        assert_eq!(inbox.redelivery_horizon_ms(1_000), 5_000);
        let refused = inbox.retention_outlasts_redelivery(1_000).unwrap_err();
        assert_eq!(refused.key, "retention_secs");
        assert!(refused.reason.contains("5000 ms"), "{}", refused.reason);
        assert_eq!(inbox.retention_outlasts_redelivery(999), Ok(()));
        assert_eq!(
            InboxConfig {
                retention_secs: 3,
                ..inbox
            }
            .validate()
            .unwrap_err()
            .key,
            "retention_secs"
        );
    }
}
