//! Orders whose saga is running, each as this process's last append left it (the order, its
//! read-model row and the card its charge will use), so that a reply is decided and recorded
//! without reading the order's stream, its row and its card back.
//!
//! An entry is only a guess, and every use of it is checked. A decision to append names the
//! version the entry holds, and a stream that moved on (another process appended) refuses it:
//! the order is then read from its stream and decided again. A decision to append nothing
//! checks nothing, so it is never taken from an entry: the order is read first. An entry whose
//! transaction rolled back is forgotten with it (the saga's handler hears of every rollback), so
//! an entry never stands for a version that another process may have reached with other events.
//! An entry leaves when its saga is done.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use crate::domain::{Order, Step};
use crate::metrics::Times;
use crate::store::OrderView;

/// At most this many orders are remembered; past it, new ones are read from their streams.
pub const CAPACITY: usize = 10_000;

/// What this process wrote for an order in its last append.
#[derive(Debug, Clone, PartialEq)]
pub struct Remembered {
    pub order: Order,
    /// The order's read-model row as that append wrote it, at the order's version.
    pub view: OrderView,
    /// The card the order's charge will use, until the charge has been asked for.
    pub card: Option<String>,
}

impl Remembered {
    /// When the order's stream began and last changed: its row's first and last times.
    #[must_use]
    pub fn times(&self) -> Times {
        Times {
            placed_at: self.view.created_at,
            last_at: self.view.updated_at,
        }
    }
}

/// The running sagas' orders, by id.
#[derive(Debug)]
pub struct InFlight {
    orders: Mutex<HashMap<String, Remembered>>,
    capacity: usize,
}

impl Default for InFlight {
    fn default() -> Self {
        Self::with_capacity(CAPACITY)
    }
}

impl InFlight {
    #[must_use]
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            orders: Mutex::default(),
            capacity,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Remembered>> {
        // Each change is one map operation: the map is whole whatever panicked while holding it.
        self.orders.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The order as this process last appended to it, if it is remembered.
    #[must_use]
    pub fn get(&self, order_id: &str) -> Option<Remembered> {
        self.lock().get(order_id).cloned()
    }

    /// Remembers an order as an append left it; forgets it once its saga is done.
    pub fn put(&self, remembered: Remembered) {
        let mut orders = self.lock();
        let id = &remembered.order.id;
        if remembered.order.step == Step::Done {
            orders.remove(id);
        } else if orders.len() < self.capacity || orders.contains_key(id) {
            orders.insert(id.clone(), remembered);
        }
    }

    /// Forgets `order_id`: it changed in a way not remembered here.
    pub fn forget(&self, order_id: &str) {
        self.lock().remove(order_id);
    }

    /// How many orders are remembered.
    #[must_use]
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use mercato_contracts::money::{Currency, Money};
    use mercato_kit::aggregate::Aggregate as _;

    use super::*;
    use crate::domain::{Fact, Line, Reply};

    fn placed(id: &str) -> Order {
        let lines = vec![Line {
            sku: "MUG-001".into(),
            name: "Mug".into(),
            quantity: 1,
            unit_price: Money::new(1_250, Currency::EUR),
        }];
        Order::replay(Order::place(id, "c1", lines, 99).unwrap()).unwrap()
    }

    fn remembered(order: Order) -> Remembered {
        Remembered {
            view: OrderView::pending(&order, 1),
            order,
            card: None,
        }
    }

    #[test]
    fn an_order_is_remembered_until_its_saga_is_done() {
        let in_flight = InFlight::default();
        let order = placed("o1");
        in_flight.put(remembered(order.clone()));
        assert_eq!(in_flight.get("o1"), Some(remembered(order.clone())));
        let charging = order
            .react(Reply::StockReserved)
            .into_iter()
            .fold(order, |o, f| o.with(f));
        in_flight.put(remembered(charging.clone()));
        assert_eq!(in_flight.get("o1").unwrap().order.version, charging.version);
        let confirmed = charging
            .react(Reply::PaymentCaptured)
            .into_iter()
            .fold(charging, |o, f| o.with(f));
        assert!(matches!(confirmed.step, Step::Done));
        in_flight.put(remembered(confirmed));
        assert!(in_flight.is_empty(), "a done saga is forgotten");
    }

    #[test]
    fn past_its_capacity_new_orders_are_not_remembered_but_known_ones_are_updated() {
        let in_flight = InFlight::with_capacity(1);
        in_flight.put(remembered(placed("o1")));
        in_flight.put(remembered(placed("o2")));
        assert!(in_flight.get("o2").is_none());
        let moved = placed("o1").with(Fact::StockReserved);
        in_flight.put(remembered(moved.clone()));
        assert_eq!(in_flight.get("o1").unwrap().order, moved);
        in_flight.forget("o1");
        assert!(in_flight.is_empty());
    }
}
