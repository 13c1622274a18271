//! What a notification is and how it reads, with no I/O: kinds and channels, locales, money in
//! words and figures, the built-in templates, and which channels a message goes to.

mod kind;
mod locale;
mod money;
mod recipient;
mod templates;

pub use kind::{Channel, Kind};
pub use locale::Locale;
pub use mercato_contracts::money::Money;
pub use money::format_money;
pub use recipient::{Recipient, channels};
pub use templates::{CancelReason, Line, Message, Rendered, render};
