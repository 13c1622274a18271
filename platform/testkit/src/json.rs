//! Reading the JSON a service answered with.

use serde_json::Value;

/// The string `field` of each element of the JSON array `items`, in order.
///
/// # Panics
/// When `items` is not an array or an element has no string `field`: the answer is not what
/// the test expects.
#[must_use]
pub fn field_of_each<'a>(items: &'a Value, field: &str) -> Vec<&'a str> {
    items
        .as_array()
        .unwrap_or_else(|| panic!("an array, not {items}"))
        .iter()
        .map(|item| {
            item[field]
                .as_str()
                .unwrap_or_else(|| panic!("a string {field} in {item}"))
        })
        .collect()
}
