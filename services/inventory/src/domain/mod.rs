//! The catalogue's values and the stock rules. No I/O; money is the contracts' one `Money`.

mod product;
mod quantity;
mod reservation;
mod sku;

pub use mercato_contracts::money::{Currency, InvalidCurrency, Money};
pub use product::{BelowReserved, NegativeAmount, Product, check_stock_level, price};
pub use quantity::{InvalidQuantity, Quantity};
pub use reservation::{
    CommitAction, InvalidLines, ReleaseAction, ReservationLine, ReservationState, UnknownState,
    requested_lines,
};
pub use sku::{InvalidSku, Sku};
