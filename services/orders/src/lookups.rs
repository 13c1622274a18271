//! What order placement looks up in other services, cached: whether the customer has a profile,
//! and each product's name and price. Entries are dropped on `CustomerUpdated` and
//! `ProductChanged` on every instance (see [`Lookups::invalidators`]), so a new price is used as
//! soon as the event arrives, not after the TTL.
//!
//! Availability is not cached and not used here: whether stock is there is decided by the
//! reservation the saga asks inventory for.

use std::sync::Arc;

use futures_util::future::try_join_all;
use mercato_cache::{Cache, CacheConfig, CacheError, CacheMetrics, Invalidator};
use mercato_contracts::customers::{self, CustomerUpdated};
use mercato_contracts::inventory::{self, ProductChanged};
use mercato_messaging::Event as _;
use serde::{Deserialize, Serialize};

use crate::directory::{Directory, DirectoryError};

/// A product as an order line needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PricedProduct {
    pub sku: String,
    pub name: String,
    pub amount_minor: i64,
    pub currency: String,
}

/// [`Directory`] behind the caches `customers` and `products`.
#[derive(Debug, Clone)]
pub struct Lookups {
    directory: Directory,
    /// Only customers that exist are cached; an absent profile is asked for again, since it is
    /// created shortly after registration.
    customers: Cache<bool>,
    /// By sku; unknown skus are not cached.
    products: Cache<PricedProduct>,
}

impl Lookups {
    /// # Errors
    /// A Redis URL that cannot be parsed.
    pub fn new(
        directory: Directory,
        config: &CacheConfig,
        metrics: &CacheMetrics,
    ) -> Result<Self, CacheError> {
        Ok(Self {
            directory,
            customers: Cache::new("customers", config, metrics)?,
            products: Cache::new("products", config, metrics)?,
        })
    }

    /// The background tasks that keep the caches current: one per category.
    #[must_use]
    pub fn invalidators(&self) -> [Invalidator; 2] {
        [
            Invalidator::new(customers::CATEGORY).on(CustomerUpdated::TYPE, &self.customers),
            Invalidator::new(inventory::CATEGORY).on(ProductChanged::TYPE, &self.products),
        ]
    }

    /// Whether customers has a profile for the customer.
    ///
    /// # Errors
    /// Customers did not answer.
    pub async fn customer_exists(&self, customer_id: &str) -> Result<bool, DirectoryError> {
        let found = self
            .customers
            .get_or_load(customer_id, || async {
                Ok(self.directory.customer_exists(customer_id).await?.then_some(true))
            })
            .await
            .map_err(|e| owned("customers", e))?;
        Ok(found.is_some())
    }

    /// Each sku's product (one lookup per sku, side by side), and the skus inventory does not
    /// know.
    ///
    /// # Errors
    /// Inventory did not answer.
    pub async fn products(
        &self,
        skus: &[String],
    ) -> Result<(Vec<PricedProduct>, Vec<String>), DirectoryError> {
        let found = try_join_all(skus.iter().map(|sku| async move {
            self.products
                .get_or_load(sku, || self.load_product(sku))
                .await
                .map(|product| (sku, product))
                .map_err(|e| owned("inventory", e))
        }))
        .await?;
        let mut products = Vec::with_capacity(found.len());
        let mut unknown = Vec::new();
        for (sku, product) in found {
            match product {
                Some(product) => products.push(product),
                None => unknown.push(sku.clone()),
            }
        }
        Ok((products, unknown))
    }

    async fn load_product(&self, sku: &str) -> Result<Option<PricedProduct>, DirectoryError> {
        let (products, _unknown) = self.directory.products(vec![sku.to_owned()]).await?;
        Ok(products.into_iter().find(|p| p.sku == sku).map(|p| {
            let price = p.price.unwrap_or_default();
            PricedProduct {
                sku: p.sku,
                name: p.name,
                amount_minor: price.amount_minor,
                currency: price.currency,
            }
        }))
    }
}

/// The loader's error back from the cache, where callers waiting on one load share it.
fn owned(service: &'static str, shared: Arc<DirectoryError>) -> DirectoryError {
    Arc::try_unwrap(shared).unwrap_or_else(|shared| DirectoryError::Unavailable {
        service,
        reason: shared.to_string(),
    })
}
