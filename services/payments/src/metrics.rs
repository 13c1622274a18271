//! Payments' own metrics, beside the runtime's HTTP metrics and the platform's outbox and
//! consumer metrics.

use std::time::Duration;

use mercato_runtime::resilience::register_metrics;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

const CALL_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0,
];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    operation: &'static str,
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: &'static str,
}

fn call_histogram() -> Histogram {
    Histogram::new(CALL_BUCKETS)
}

/// `mercato_payments_charges_total{outcome}` (captured, declined, provider_unavailable),
/// `mercato_payments_refunds_total`, `mercato_payments_provider_calls_total{operation,result}`
/// and `mercato_payments_provider_call_duration_seconds{operation}`.
#[derive(Debug, Clone)]
pub struct PaymentMetrics {
    charges: Family<OutcomeLabels, Counter>,
    refunds: Counter,
    calls: Family<CallLabels, Counter>,
    latency: Family<OperationLabels, Histogram, fn() -> Histogram>,
}

impl PaymentMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            charges: Family::default(),
            refunds: Counter::default(),
            calls: Family::default(),
            latency: Family::new_with_constructor(call_histogram),
        };
        register_metrics!(registry, {
            metrics.charges => "mercato_payments_charges", "Payments settled, by outcome";
            metrics.refunds => "mercato_payments_refunds", "Captured payments refunded";
            metrics.calls => "mercato_payments_provider_calls", "Calls to the payment provider, by operation and result";
            metrics.latency => "mercato_payments_provider_call_duration_seconds", "Time the payment provider took to answer (or to time out)";
        });
        metrics
    }

    pub(crate) fn settled(&self, outcome: &'static str) {
        self.charges.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    pub(crate) fn refunded(&self) {
        self.refunds.inc();
    }

    pub(crate) fn call(&self, operation: &'static str, result: &'static str, elapsed: Duration) {
        self.calls.get_or_create(&CallLabels { operation, result }).inc();
        self.latency
            .get_or_create(&OperationLabels { operation })
            .observe(elapsed.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_and_calls_are_rendered_with_their_labels() {
        let mut registry = Registry::default();
        let metrics = PaymentMetrics::register(&mut registry);
        metrics.settled("captured");
        metrics.call("charge", "ok", Duration::from_millis(20));
        let text = mercato_runtime::metrics::render(&registry);
        assert!(text.contains(r#"mercato_payments_charges_total{outcome="captured"} 1"#));
        assert!(text.contains(r#"mercato_payments_provider_calls_total{operation="charge",result="ok"} 1"#));
        assert!(text.contains("mercato_payments_provider_call_duration_seconds_bucket"));
    }
}
