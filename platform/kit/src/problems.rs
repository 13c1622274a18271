//! Problems the services' handlers share beyond those of the runtime.

use mercato_runtime::{FieldError, Problem};

/// The validation problem naming each refused field and why, from a domain error's
/// `(field, message)` pairs.
pub fn invalid_fields<F, M>(fields: impl IntoIterator<Item = (F, M)>) -> Problem
where
    F: Into<String>,
    M: Into<String>,
{
    Problem::validation(
        fields
            .into_iter()
            .map(|(field, message)| FieldError::new(field, message))
            .collect(),
    )
}
