//! Orders whose saga is running, each as this process's last append left it, so that a reply is
//! decided without reading the order's stream back and decoding every event of it again.
//!
//! An entry is only a guess, and every use of it is checked. A decision to append names the
//! version the entry holds, and a stream that moved on (another process appended, or the
//! transaction that wrote the entry rolled back) refuses it: the order is then read from its
//! stream and decided again. A decision to append nothing checks nothing, so it is never taken
//! from an entry: the order is read first. An entry leaves when its saga is done.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use crate::domain::{Order, Step};
use crate::metrics::Times;

/// At most this many orders are remembered; past it, new ones are read from their streams.
pub const CAPACITY: usize = 10_000;

/// The running sagas' orders, by id.
#[derive(Debug)]
pub struct InFlight {
    orders: Mutex<HashMap<String, (Order, Times)>>,
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

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Order, Times)>> {
        // Each change is one map operation: the map is whole whatever panicked while holding it.
        self.orders.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The order as this process last appended to it, if it is remembered.
    #[must_use]
    pub fn get(&self, order_id: &str) -> Option<(Order, Times)> {
        self.lock().get(order_id).cloned()
    }

    /// Remembers `order` as an append left it; forgets it once its saga is done.
    pub fn put(&self, order: Order, times: Times) {
        let mut orders = self.lock();
        if order.step == Step::Done {
            orders.remove(&order.id);
        } else if orders.len() < self.capacity || orders.contains_key(&order.id) {
            orders.insert(order.id.clone(), (order, times));
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

    const TIMES: Times = Times {
        placed_at: 1,
        last_at: 2,
    };

    #[test]
    fn an_order_is_remembered_until_its_saga_is_done() {
        let in_flight = InFlight::default();
        let order = placed("o1");
        in_flight.put(order.clone(), TIMES);
        assert_eq!(in_flight.get("o1"), Some((order.clone(), TIMES)));
        let charging = order
            .react(Reply::StockReserved)
            .into_iter()
            .fold(order, |o, f| o.with(f));
        in_flight.put(charging.clone(), TIMES);
        assert_eq!(in_flight.get("o1").unwrap().0.version, charging.version);
        let confirmed = charging
            .react(Reply::PaymentCaptured)
            .into_iter()
            .fold(charging, |o, f| o.with(f));
        assert!(matches!(confirmed.step, Step::Done));
        in_flight.put(confirmed, TIMES);
        assert!(in_flight.is_empty(), "a done saga is forgotten");
    }

    #[test]
    fn past_its_capacity_new_orders_are_not_remembered_but_known_ones_are_updated() {
        let in_flight = InFlight::with_capacity(1);
        in_flight.put(placed("o1"), TIMES);
        in_flight.put(placed("o2"), TIMES);
        assert!(in_flight.get("o2").is_none());
        let moved = placed("o1").with(Fact::StockReserved);
        in_flight.put(moved.clone(), TIMES);
        assert_eq!(in_flight.get("o1").unwrap().0, moved);
        in_flight.forget("o1");
        assert!(in_flight.is_empty());
    }
}
