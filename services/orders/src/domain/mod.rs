//! The order and its checkout saga, as rules over events. No I/O, no serde of its own (money is
//! the contracts' `Money`).
//!
//! The order's stream records both what happened to the order and what the saga asked other
//! services to do (reserve, charge, commit, release, refund): the saga's state is the order's
//! state, persisted by the same append, and the requests reach inventory and payments through
//! the outbox of that append. Every reply is decided here, against the current state, so a late
//! or duplicated reply can only ever lead to a compensation, never to a second effect.

mod order;

pub use mercato_contracts::money::Money;
pub use order::{CancelReason, Decision, Fact, InvalidLines, Line, Order, Reply, Status, Step, total};
