//! The `products` table.

use mercato_kit::store::placeholders;
use mercato_storage::sqlx::any::AnyRow;
use mercato_storage::sqlx::{self, Any, Row as _};
use mercato_storage::{StorageError, Tx, now_millis};

use super::corrupt;
use crate::domain::{Currency, Money, Product, Quantity, Sku, price};

const COLUMNS: &str = "sku, name, description, price_minor, currency, on_hand, reserved";

fn product_of(row: &AnyRow) -> Result<Product, StorageError> {
    let sku: String = row.try_get("sku")?;
    let bad = |what: &dyn std::fmt::Display| corrupt("products", &sku, what);
    let currency = Currency::parse(&row.try_get::<String, _>("currency")?).map_err(|e| bad(&e))?;
    Ok(Product {
        sku: Sku::parse(&sku).map_err(|e| bad(&e))?,
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        price: price(row.try_get("price_minor")?, currency).map_err(|e| bad(&e))?,
        on_hand: Quantity::new(row.try_get("on_hand")?).map_err(|e| bad(&e))?,
        reserved: Quantity::new(row.try_get("reserved")?).map_err(|e| bad(&e))?,
    })
}

/// One product.
///
/// # Errors
/// The database failed or holds a malformed row.
pub async fn find<'e, E>(executor: E, sku: &Sku) -> Result<Option<Product>, StorageError>
where
    E: sqlx::Executor<'e, Database = Any>,
{
    let sql = format!("SELECT {COLUMNS} FROM products WHERE sku = $1");
    let row = sqlx::query(&sql)
        .bind(sku.as_str())
        .fetch_optional(executor)
        .await?;
    row.as_ref().map(product_of).transpose()
}

/// Up to `limit` products after `after`, in SKU order.
///
/// # Errors
/// The database failed or holds a malformed row.
pub async fn page<'e, E>(executor: E, after: Option<&Sku>, limit: usize) -> Result<Vec<Product>, StorageError>
where
    E: sqlx::Executor<'e, Database = Any>,
{
    let sql = format!("SELECT {COLUMNS} FROM products WHERE sku > $1 ORDER BY sku LIMIT $2");
    let rows = sqlx::query(&sql)
        // Every SKU sorts after the empty string.
        .bind(after.map_or("", Sku::as_str))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(executor)
        .await?;
    rows.iter().map(product_of).collect()
}

/// The products among `skus` that exist, in SKU order.
///
/// # Errors
/// The database failed or holds a malformed row.
pub async fn find_many<'e, E>(executor: E, skus: &[Sku]) -> Result<Vec<Product>, StorageError>
where
    E: sqlx::Executor<'e, Database = Any>,
{
    if skus.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT {COLUMNS} FROM products WHERE sku IN ({}) ORDER BY sku",
        placeholders(skus.len())
    );
    let mut query = sqlx::query(&sql);
    for sku in skus {
        query = query.bind(sku.as_str());
    }
    let rows = query.fetch_all(executor).await?;
    rows.iter().map(product_of).collect()
}

/// How many products there are.
///
/// # Errors
/// The database failed.
pub async fn count<'e, E>(executor: E) -> Result<i64, StorageError>
where
    E: sqlx::Executor<'e, Database = Any>,
{
    let row = sqlx::query("SELECT COUNT(*) AS n FROM products")
        .fetch_one(executor)
        .await?;
    Ok(row.try_get::<i64, _>("n")?)
}

/// Adds `product` unless its SKU exists; true when it was added.
///
/// # Errors
/// The database failed.
pub async fn insert(tx: &mut Tx, product: &Product) -> Result<bool, StorageError> {
    let done = sqlx::query(
        "INSERT INTO products (sku, name, description, price_minor, currency, on_hand, reserved, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (sku) DO NOTHING",
    )
    .bind(product.sku.as_str())
    .bind(&product.name)
    .bind(&product.description)
    .bind(product.price.amount_minor)
    .bind(product.price.currency.as_str())
    .bind(product.on_hand.value())
    .bind(product.reserved.value())
    .bind(now_millis())
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Sets the stock level unless it would fall below what is held; the product after the change,
/// or `None` when it does not exist or holds more than `on_hand`.
///
/// # Errors
/// The database failed.
pub async fn set_on_hand(tx: &mut Tx, sku: &Sku, on_hand: Quantity) -> Result<Option<Product>, StorageError> {
    let sql = format!(
        "UPDATE products SET on_hand = $1, updated_at = $3 WHERE sku = $2 AND reserved <= $1
         RETURNING {COLUMNS}"
    );
    let row = sqlx::query(&sql)
        .bind(on_hand.value())
        .bind(sku.as_str())
        .bind(now_millis())
        .fetch_optional(&mut **tx)
        .await?;
    row.as_ref().map(product_of).transpose()
}

/// Sets the price; the product after the change, `None` when it does not exist.
///
/// # Errors
/// The database failed.
pub async fn set_price(tx: &mut Tx, sku: &Sku, price: &Money) -> Result<Option<Product>, StorageError> {
    let sql = format!(
        "UPDATE products SET price_minor = $1, currency = $2, updated_at = $4 WHERE sku = $3
         RETURNING {COLUMNS}"
    );
    let row = sqlx::query(&sql)
        .bind(price.amount_minor)
        .bind(price.currency.as_str())
        .bind(sku.as_str())
        .bind(now_millis())
        .fetch_optional(&mut **tx)
        .await?;
    row.as_ref().map(product_of).transpose()
}

/// A change to one product's stock, made by one conditional statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StockMove {
    /// Holds units if that many are available.
    ///
    /// The availability check and the increment are one statement: on PostgreSQL a concurrent
    /// holder waits for the row and re-checks the condition against the committed value; on
    /// SQLite writers are serialised. Either way `reserved` never passes `on_hand`.
    Hold,
    /// Gives back held units; refused if fewer are held (a broken invariant).
    Unhold,
    /// Sells held units: they leave both the stock and the holds.
    SellHeld,
    /// Sells units that are not held, if that many are available.
    Take,
    /// Undoes [`StockMove::Take`].
    PutBack,
}

impl StockMove {
    fn sql(self) -> &'static str {
        match self {
            Self::Hold => {
                "UPDATE products SET reserved = reserved + $1, updated_at = $3
                 WHERE sku = $2 AND on_hand - reserved >= $1"
            }
            Self::Unhold => {
                "UPDATE products SET reserved = reserved - $1, updated_at = $3
                 WHERE sku = $2 AND reserved >= $1"
            }
            Self::SellHeld => {
                "UPDATE products SET on_hand = on_hand - $1, reserved = reserved - $1, updated_at = $3
                 WHERE sku = $2 AND reserved >= $1"
            }
            Self::Take => {
                "UPDATE products SET on_hand = on_hand - $1, updated_at = $3
                 WHERE sku = $2 AND on_hand - reserved >= $1"
            }
            Self::PutBack => "UPDATE products SET on_hand = on_hand + $1, updated_at = $3 WHERE sku = $2",
        }
    }
}

/// Makes `stock_move` with `quantity` units of `sku`; false when the stock does not allow it
/// (or for an unknown SKU).
///
/// # Errors
/// The database failed.
pub async fn apply(
    tx: &mut Tx,
    stock_move: StockMove,
    sku: &Sku,
    quantity: Quantity,
) -> Result<bool, StorageError> {
    let done = sqlx::query(stock_move.sql())
        .bind(quantity.value())
        .bind(sku.as_str())
        .bind(now_millis())
        .execute(&mut **tx)
        .await?;
    Ok(done.rows_affected() == 1)
}
