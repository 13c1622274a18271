//! Identity's domain types: parsed at the edge, valid by construction. No I/O, no serde.

mod email;
mod name;
mod password;
mod role;

pub use email::Email;
pub use name::DisplayName;
pub use password::Password;
pub use role::Role;

/// A registered user as the domain sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub email: Email,
    pub name: DisplayName,
    pub roles: Vec<Role>,
}
