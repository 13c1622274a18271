//! Parsing an order request into domain values, naming every bad field.

use std::collections::BTreeMap;

use mercato_runtime::FieldError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub const MAX_LINES: usize = 50;
pub const MAX_QUANTITY: i64 = 100;

// The schema keywords below state the checks of `validate`, so a client can make them first.

/// One line; lines of one SKU are merged, and a SKU adds up to at most 100 units.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = OrderItem)]
pub struct ItemBody {
    #[schema(pattern = "^[A-Za-z0-9-]{1,32}$", example = "MUG-001")]
    pub sku: String,
    #[schema(minimum = 1, maximum = 100)]
    #[serde(deserialize_with = "mercato_contracts::number::whole_number")]
    pub quantity: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CardPayment)]
pub struct PaymentBody {
    /// The payment provider's card token.
    #[schema(pattern = "^[A-Za-z0-9_]{1,64}$", example = "tok_visa")]
    pub card_token: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ShippingAddress)]
pub struct AddressBody {
    #[schema(
        max_length = 200,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f][^\\u0000-\\u001f\\u007f-\\u009f]*$"
    )]
    pub line1: String,
    #[serde(default)]
    #[schema(max_length = 200, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$")]
    pub line2: Option<String>,
    #[schema(
        max_length = 100,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f][^\\u0000-\\u001f\\u007f-\\u009f]*$"
    )]
    pub city: String,
    #[schema(
        max_length = 16,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f][^\\u0000-\\u001f\\u007f-\\u009f]*$"
    )]
    pub postal_code: String,
    /// ISO 3166-1 alpha-2.
    #[schema(pattern = "^[A-Za-z]{2}$", example = "DE")]
    pub country: String,
}

/// `POST /api/orders`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlaceOrder {
    #[schema(min_items = 1, max_items = 50)]
    pub items: Vec<ItemBody>,
    pub payment: PaymentBody,
    pub shipping_address: AddressBody,
}

/// A valid request: lines merged by SKU, in the client's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidOrder {
    pub lines: Vec<(String, i64)>,
    pub card_token: String,
}

fn is_sku(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-')
}

fn text(errors: &mut Vec<FieldError>, field: &str, value: &str, max: usize) {
    let value = value.trim();
    if value.is_empty() || value.chars().count() > max || value.chars().any(char::is_control) {
        errors.push(FieldError::new(
            field,
            format!("must be 1 to {max} printable characters"),
        ));
    }
}

impl PlaceOrder {
    /// # Errors
    /// Every invalid field, by path.
    pub fn validate(&self) -> Result<ValidOrder, Vec<FieldError>> {
        let mut errors = Vec::new();
        if self.items.is_empty() {
            errors.push(FieldError::new("items", "must hold at least one item"));
        }
        if self.items.len() > MAX_LINES {
            errors.push(FieldError::new(
                "items",
                format!("must hold at most {MAX_LINES} items"),
            ));
        }
        let mut merged: BTreeMap<String, i64> = BTreeMap::new();
        let mut order = Vec::new();
        for (i, item) in self.items.iter().enumerate().take(MAX_LINES) {
            let sku = item.sku.trim().to_ascii_uppercase();
            if !is_sku(&sku) {
                errors.push(FieldError::new(
                    format!("items[{i}].sku"),
                    "must be 1 to 32 letters, digits or dashes",
                ));
            }
            if !(1..=MAX_QUANTITY).contains(&item.quantity) {
                errors.push(FieldError::new(
                    format!("items[{i}].quantity"),
                    format!("must be 1 to {MAX_QUANTITY}"),
                ));
            }
            if !merged.contains_key(&sku) {
                order.push(sku.clone());
            }
            let total = merged.entry(sku).or_default();
            *total = total.saturating_add(item.quantity.max(0));
            if *total > MAX_QUANTITY {
                errors.push(FieldError::new(
                    format!("items[{i}].quantity"),
                    format!("adds up to more than {MAX_QUANTITY} of one product"),
                ));
            }
        }
        let token = self.payment.card_token.trim();
        if token.is_empty()
            || token.len() > 64
            || !token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            errors.push(FieldError::new(
                "payment.card_token",
                "must be a card token such as tok_visa",
            ));
        }
        let a = &self.shipping_address;
        text(&mut errors, "shipping_address.line1", &a.line1, 200);
        if let Some(line2) = a.line2.as_deref().filter(|l| !l.trim().is_empty()) {
            text(&mut errors, "shipping_address.line2", line2, 200);
        }
        text(&mut errors, "shipping_address.city", &a.city, 100);
        text(&mut errors, "shipping_address.postal_code", &a.postal_code, 16);
        let country = a.country.trim();
        if country.len() != 2 || !country.bytes().all(|b| b.is_ascii_alphabetic()) {
            errors.push(FieldError::new(
                "shipping_address.country",
                "must be an ISO 3166-1 alpha-2 code such as DE",
            ));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let lines = order
            .into_iter()
            .map(|sku| {
                let q = merged[&sku];
                (sku, q)
            })
            .collect();
        Ok(ValidOrder {
            lines,
            card_token: token.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(items: Vec<(&str, i64)>) -> PlaceOrder {
        PlaceOrder {
            items: items
                .into_iter()
                .map(|(s, q)| ItemBody {
                    sku: s.into(),
                    quantity: q,
                })
                .collect(),
            payment: PaymentBody {
                card_token: "tok_visa".into(),
            },
            shipping_address: AddressBody {
                line1: "1 Main St".into(),
                line2: None,
                city: "Berlin".into(),
                postal_code: "10115".into(),
                country: "DE".into(),
            },
        }
    }

    #[test]
    fn merges_lines_of_one_sku_in_request_order() {
        let valid = order(vec![("mug-001", 1), ("TEE-1", 2), ("MUG-001", 3)])
            .validate()
            .unwrap();
        assert_eq!(valid.lines, [("MUG-001".to_owned(), 4), ("TEE-1".to_owned(), 2)]);
    }

    #[test]
    fn names_bad_quantities_and_skus() {
        let errors = order(vec![("MUG-001", -1), ("bad sku!", 1), ("X", 0)])
            .validate()
            .unwrap_err();
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["items[0].quantity", "items[1].sku", "items[2].quantity"]);
    }

    #[test]
    fn an_empty_or_huge_order_is_refused() {
        assert_eq!(order(vec![]).validate().unwrap_err()[0].field, "items");
        let huge: Vec<_> = (0..51).map(|_| ("MUG-001", 1)).collect();
        assert!(order(huge).validate().is_err());
    }
}
