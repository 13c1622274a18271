//! Events of the identity service (category `identity`).

use serde::{Deserialize, Serialize};

/// The bus category of identity's events.
pub const CATEGORY: &str = "identity";

/// A person registered. Stream: the user id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRegistered {
    pub user_id: String,
    pub email: String,
    pub name: String,
}

crate::events!(UserRegistered = 1);
