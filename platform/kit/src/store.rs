//! What the services' stores share. A struct whose fields are named after the columns its
//! queries select is declared once with [`row_struct!`](crate::row_struct), and reading a row
//! into it follows from the declaration, so the struct and its mapping cannot drift apart.
//! [`placeholders`] writes the parameters of an `IN` list.

#[doc(hidden)]
pub use mercato_storage::StorageError;
#[doc(hidden)]
pub use mercato_storage::sqlx::Row;
#[doc(hidden)]
pub use mercato_storage::sqlx::any::AnyRow;

/// Declares a struct and its `from_row`, which reads each field from the column of the same
/// name. A field that needs a conversion (a status parsed from text, a flag stored as an
/// integer) belongs in a struct that maps its row by hand.
///
/// ```ignore
/// mercato_kit::row_struct! {
///     /// One logged attempt.
///     #[derive(Debug, Clone, PartialEq, Eq)]
///     pub struct Attempt {
///         pub attempt: i64,
///         pub error: Option<String>,
///     }
/// }
/// let attempts = rows.iter().map(Attempt::from_row).collect::<Result<Vec<_>, _>>()?;
/// ```
#[macro_export]
macro_rules! row_struct {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $($(#[$field_meta:meta])* $field_vis:vis $field:ident: $ty:ty),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        $vis struct $name {
            $($(#[$field_meta])* $field_vis $field: $ty),+
        }

        impl $name {
            /// Reads the row's columns named like the fields.
            ///
            /// # Errors
            /// A column is missing or holds another type.
            $vis fn from_row(
                row: &$crate::store::AnyRow,
            ) -> ::std::result::Result<Self, $crate::store::StorageError> {
                use $crate::store::Row as _;
                Ok(Self {
                    $($field: row.try_get(stringify!($field))?),+
                })
            }
        }
    };
}

/// `$1, $2, …, $n`: the parameters of an `IN` list of `n` values, bound in that order.
#[must_use]
pub fn placeholders(n: usize) -> String {
    (1..=n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::placeholders;

    #[test]
    fn placeholders_count_from_one() {
        for (n, list) in [(1, "$1"), (3, "$1, $2, $3")] {
            assert_eq!(placeholders(n), list);
        }
    }
}
