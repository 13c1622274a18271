//! What inventory does on request: read the catalogue, and the admin's stock and price changes,
//! each committed together with the `ProductChanged` it publishes.

use mercato_contracts::inventory::ProductChanged;
use mercato_messaging::{Context, Envelope, EnvelopeError, Outbox};
use mercato_runtime::correlation::CorrelationId;
use mercato_storage::{Db, StorageError, Tx};

use crate::domain::{Currency, Product, Quantity, Sku, check_stock_level, price};
use crate::store::products;

/// Why a catalogue operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CatalogueError {
    #[error("no product {0:?}")]
    NotFound(String),
    /// Fields that break the rules, as (field, message).
    #[error("invalid fields")]
    Invalid(Vec<(&'static str, String)>),
    #[error("the product kept changing underneath; try again")]
    Contended,
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
}

/// One page of the catalogue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub items: Vec<Product>,
    /// Where the next page starts, when there is one.
    pub next_after: Option<Sku>,
}

/// How often a stock change is tried when holds changed under it.
const ATTEMPTS: usize = 3;

/// The catalogue operations.
#[derive(Debug, Clone)]
pub struct Catalogue {
    db: Db,
    outbox: Outbox,
}

impl Catalogue {
    #[must_use]
    pub fn new(db: Db, outbox: Outbox) -> Self {
        Self { db, outbox }
    }

    /// Up to `size` products after `after`, in SKU order.
    ///
    /// # Errors
    /// The database failed.
    pub async fn page(&self, size: usize, after: Option<&Sku>) -> Result<Page, CatalogueError> {
        // One more than asked tells whether another page follows without a second query.
        let mut items = products::page(self.db.pool(), after, size + 1).await?;
        let next_after = if items.len() > size {
            items.truncate(size);
            items.last().map(|p| p.sku.clone())
        } else {
            None
        };
        Ok(Page { items, next_after })
    }

    /// # Errors
    /// [`CatalogueError::NotFound`], also for text that cannot be a SKU.
    pub async fn product(&self, raw_sku: &str) -> Result<Product, CatalogueError> {
        let sku = known_sku(raw_sku)?;
        products::find(self.db.pool(), &sku)
            .await?
            .ok_or_else(|| CatalogueError::NotFound(raw_sku.to_owned()))
    }

    /// The products among `skus` that exist, in SKU order.
    ///
    /// # Errors
    /// The database failed.
    pub async fn products(&self, skus: &[Sku]) -> Result<Vec<Product>, CatalogueError> {
        Ok(products::find_many(self.db.pool(), skus).await?)
    }

    /// Sets the units on hand; it may not fall below what orders hold.
    ///
    /// # Errors
    /// [`CatalogueError::NotFound`]; [`CatalogueError::Invalid`] naming `quantity`.
    pub async fn set_stock(&self, raw_sku: &str, quantity: i64) -> Result<Product, CatalogueError> {
        let sku = known_sku(raw_sku)?;
        let on_hand = Quantity::new(quantity).map_err(|e| invalid("quantity", e))?;
        let mut tx = self.db.begin().await?;
        let mut attempt = 0;
        let product = loop {
            attempt += 1;
            if let Some(product) = products::set_on_hand(&mut tx, &sku, on_hand).await? {
                break product;
            }
            let current = products::find(&mut *tx, &sku)
                .await?
                .ok_or_else(|| CatalogueError::NotFound(raw_sku.to_owned()))?;
            check_stock_level(on_hand, current.reserved).map_err(|e| invalid("quantity", e))?;
            // Holds were released between the update and the read (PostgreSQL reads committed
            // data per statement): the level is acceptable now, so try again.
            if attempt >= ATTEMPTS {
                return Err(CatalogueError::Contended);
            }
        };
        self.publish_change(tx, &product).await?;
        Ok(product)
    }

    /// Sets the price.
    ///
    /// # Errors
    /// [`CatalogueError::NotFound`]; [`CatalogueError::Invalid`] naming `price.amount_minor`
    /// and/or `price.currency`.
    pub async fn set_price(
        &self,
        raw_sku: &str,
        amount_minor: i64,
        currency: &str,
    ) -> Result<Product, CatalogueError> {
        let sku = known_sku(raw_sku)?;
        let mut errors = Vec::new();
        let currency = Currency::parse(currency)
            .map_err(|e| errors.push(("price.currency", e.to_string())))
            .ok();
        if amount_minor < 0 {
            errors.push(("price.amount_minor", "must not be negative".to_owned()));
        }
        let price = match currency.map(|c| price(amount_minor, c)) {
            Some(Ok(price)) if errors.is_empty() => price,
            _ => return Err(CatalogueError::Invalid(errors)),
        };
        let mut tx = self.db.begin().await?;
        let product = products::set_price(&mut tx, &sku, &price)
            .await?
            .ok_or_else(|| CatalogueError::NotFound(raw_sku.to_owned()))?;
        self.publish_change(tx, &product).await?;
        Ok(product)
    }

    /// Appends `ProductChanged` in `tx` and commits.
    async fn publish_change(&self, mut tx: Tx, product: &Product) -> Result<(), CatalogueError> {
        let context = Context {
            correlation_id: CorrelationId::current().map(|c| c.to_string()),
            ..Context::default()
        };
        let mut envelope = Envelope::new(
            crate::NAME,
            product.sku.as_str(),
            &product_changed(product),
            &context,
        )?;
        mercato_messaging::outbox::append(&mut tx, &mut envelope).await?;
        tx.commit().await?;
        self.outbox.committed();
        Ok(())
    }
}

/// The event that tells caches about a product's new state.
#[must_use]
pub fn product_changed(product: &Product) -> ProductChanged {
    ProductChanged {
        sku: product.sku.as_str().to_owned(),
        name: product.name.clone(),
        price: product.price,
        available: product.available(),
    }
}

/// Text that cannot be a SKU names no product.
fn known_sku(raw: &str) -> Result<Sku, CatalogueError> {
    Sku::parse(raw).map_err(|_| CatalogueError::NotFound(raw.to_owned()))
}

fn invalid(field: &'static str, message: impl std::fmt::Display) -> CatalogueError {
    CatalogueError::Invalid(vec![(field, message.to_string())])
}
