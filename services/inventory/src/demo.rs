//! The demo catalogue `mercato up` starts with, so a fresh shop has something to sell.

use mercato_storage::{Db, StorageError};

use crate::domain::{Currency, Product, Quantity, Sku, price};
use crate::store::products;

/// (sku, name, description, price in euro cents, units on hand)
const DEMO: &[(&str, &str, &str, i64, i64)] = &[
    (
        "BAG-TOTE",
        "Canvas tote bag",
        "Heavy cotton canvas, long handles, fits a laptop.",
        1_800,
        60,
    ),
    (
        "BOOK-RUST",
        "The Rust field guide",
        "A paperback tour of ownership, traits and async.",
        3_900,
        25,
    ),
    (
        "CAP-NVY",
        "Baseball cap, navy",
        "Six panels, embroidered logo, adjustable strap.",
        1_900,
        40,
    ),
    (
        "HOOD-GRY-L",
        "Hoodie, grey, L",
        "Brushed fleece inside, kangaroo pocket.",
        4_900,
        30,
    ),
    (
        "MUG-001",
        "Enamel mug",
        "A 350 ml camping mug that survives being dropped.",
        1_200,
        100,
    ),
    (
        "NOTE-A5",
        "Dotted notebook A5",
        "120 pages of 100 g paper, lies flat.",
        900,
        150,
    ),
    (
        "STICK-PACK",
        "Sticker pack",
        "Ten weatherproof vinyl stickers.",
        500,
        500,
    ),
    (
        "TEE-BLK-M",
        "T-shirt, black, M",
        "Organic cotton, regular fit.",
        2_500,
        80,
    ),
];

/// Fills an empty catalogue with a few products and their stock; returns how many it added.
/// A catalogue that has any product is left alone, so running it on every start is safe.
///
/// # Errors
/// The database failed.
pub async fn seed_demo_catalogue(db: &Db) -> Result<usize, StorageError> {
    let mut tx = db.begin().await?;
    if products::count(&mut *tx).await? > 0 {
        return Ok(0);
    }
    let mut added = 0;
    for (sku, name, description, cents, on_hand) in DEMO {
        let product = demo_product(sku, name, description, *cents, *on_hand)?;
        // Two first starts racing on PostgreSQL both see an empty table; the key decides.
        if products::insert(&mut tx, &product).await? {
            added += 1;
        }
    }
    tx.commit().await?;
    Ok(added)
}

/// The table above is ours; a mistake in it is a configuration error, caught by the unit test.
fn demo_product(
    sku: &str,
    name: &str,
    description: &str,
    cents: i64,
    on_hand: i64,
) -> Result<Product, StorageError> {
    let invalid = |what: &str| StorageError::Config(format!("demo product {sku}: invalid {what}"));
    Ok(Product {
        sku: Sku::parse(sku).map_err(|_| invalid("sku"))?,
        name: name.to_owned(),
        description: description.to_owned(),
        price: price(cents, Currency::EUR).map_err(|_| invalid("price"))?,
        on_hand: Quantity::new(on_hand).map_err(|_| invalid("on_hand"))?,
        reserved: Quantity::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_demo_product_is_valid_and_sorted() {
        let skus: Vec<_> = DEMO
            .iter()
            .map(|(sku, name, description, cents, on_hand)| {
                demo_product(sku, name, description, *cents, *on_hand)
                    .unwrap()
                    .sku
            })
            .collect();
        let mut sorted = skus.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(skus, sorted);
    }
}
