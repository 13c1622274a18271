//! Inventory's own metric: what became of reservations.

use mercato_runtime::resilience::register_metrics;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// How a reservation command or expiry ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Reserved,
    OutOfStock,
    UnknownProduct,
    Released,
    Expired,
    Committed,
    /// An expired hold was committed and its units were gone.
    CommitFailed,
}

impl Outcome {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reserved => "reserved",
            Self::OutOfStock => "out_of_stock",
            Self::UnknownProduct => "unknown_product",
            Self::Released => "released",
            Self::Expired => "expired",
            Self::Committed => "committed",
            Self::CommitFailed => "commit_failed",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

/// `mercato_inventory_reservations_total{outcome}`.
#[derive(Debug, Clone)]
pub struct ReservationMetrics {
    outcomes: Family<OutcomeLabels, Counter>,
}

impl ReservationMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            outcomes: Family::default(),
        };
        register_metrics!(registry, {
            metrics.outcomes => "mercato_inventory_reservations", "Reservation commands and expiries that committed, by outcome";
        });
        metrics
    }

    pub fn record(&self, outcome: Outcome) {
        self.outcomes
            .get_or_create(&OutcomeLabels {
                outcome: outcome.as_str(),
            })
            .inc();
    }
}
