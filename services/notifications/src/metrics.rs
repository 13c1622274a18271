//! `mercato_notifications_total{kind, channel, outcome}`: what became of each notification.
//!
//! Outcomes: `delivered` (a mailbox message written), `queued` (an email written for the
//! worker), `skipped` (no email: the customer turned it off, no address is known, or email is
//! not configured), `sent`, `retried` and `failed` (an email attempt's end).

use mercato_runtime::resilience::register_metrics;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Labels {
    kind: String,
    channel: String,
    outcome: String,
}

/// The notifications counter family.
#[derive(Debug, Clone)]
pub struct NotificationMetrics {
    notifications: Family<Labels, Counter>,
}

impl NotificationMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            notifications: Family::default(),
        };
        register_metrics!(registry, {
            metrics.notifications => "mercato_notifications", "Notifications by kind, channel and outcome (delivered, queued, skipped, sent, retried, failed)";
        });
        metrics
    }

    pub fn record(&self, kind: &str, channel: &str, outcome: &str) {
        self.notifications
            .get_or_create(&Labels {
                kind: kind.to_owned(),
                channel: channel.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }
}
