//! The catalogue's values and the stock rules. No I/O, no serde.

mod money;
mod product;
mod quantity;
mod reservation;
mod sku;

pub use money::{Currency, InvalidCurrency, Money, NegativeAmount};
pub use product::{BelowReserved, Product, check_stock_level};
pub use quantity::{InvalidQuantity, Quantity};
pub use reservation::{
    CommitAction, InvalidLines, ReleaseAction, ReservationLine, ReservationState, UnknownState,
    requested_lines,
};
pub use sku::{InvalidSku, Sku};
