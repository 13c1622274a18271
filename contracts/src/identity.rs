//! Events of the identity service (category `identity`).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The bus category of identity's events.
pub const CATEGORY: &str = "identity";

/// The longest display name, in characters.
pub const NAME_MAX_CHARS: usize = 100;

/// A person's display name as every service takes it (identity at registration, customers on
/// each change of profile), trimmed: 1 to [`NAME_MAX_CHARS`] characters, no control characters.
///
/// # Errors
/// A message saying what is wrong with the name.
pub fn display_name(raw: &str) -> Result<&str, &'static str> {
    let name = raw.trim();
    if name.is_empty() {
        return Err("must not be empty");
    }
    if name.chars().count() > NAME_MAX_CHARS {
        return Err("must be at most 100 characters");
    }
    if name.chars().any(char::is_control) {
        return Err("must not contain control characters");
    }
    Ok(name)
}

/// A person registered. Stream: the user id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UserRegistered {
    pub user_id: String,
    pub email: String,
    pub name: String,
}

crate::events!(UserRegistered = 1);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_display_name_is_trimmed_and_bounded() {
        assert_eq!(display_name(" Ada Lovelace "), Ok("Ada Lovelace"));
        assert_eq!(
            display_name(&"é".repeat(NAME_MAX_CHARS)).map(str::len),
            Ok(2 * NAME_MAX_CHARS)
        );
        assert_eq!(display_name("   "), Err("must not be empty"));
        assert_eq!(
            display_name(&"x".repeat(NAME_MAX_CHARS + 1)),
            Err("must be at most 100 characters")
        );
        assert_eq!(
            display_name("a\u{0}b"),
            Err("must not contain control characters")
        );
    }
}
