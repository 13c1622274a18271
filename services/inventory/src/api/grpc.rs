//! The internal gRPC API (`mercato.inventory.v1.Inventory`), served on the HTTP listener: what
//! orders needs to price and check an order.

use std::sync::Arc;

use mercato_contracts::grpc::inventory::inventory_server::Inventory;
use mercato_contracts::grpc::inventory::{GetProductsRequest, GetProductsResponse, Money, Product};
use tonic::{Request, Response, Status};

use crate::catalogue::Catalogue;
use crate::domain::Sku;

/// The most SKUs one `GetProducts` may name; an order has far fewer lines.
pub const MAX_SKUS: usize = 100;

/// The gRPC face of the catalogue.
#[derive(Debug, Clone)]
pub struct InventoryGrpc {
    catalogue: Arc<Catalogue>,
}

impl InventoryGrpc {
    #[must_use]
    pub fn new(catalogue: Arc<Catalogue>) -> Self {
        Self { catalogue }
    }
}

#[tonic::async_trait]
impl Inventory for InventoryGrpc {
    async fn get_products(
        &self,
        request: Request<GetProductsRequest>,
    ) -> Result<Response<GetProductsResponse>, Status> {
        let requested = request.into_inner().skus;
        if requested.len() > MAX_SKUS {
            return Err(Status::invalid_argument(format!(
                "at most {MAX_SKUS} skus per call, got {}",
                requested.len()
            )));
        }
        let mut unknown_skus = Vec::new();
        let mut wanted: Vec<(String, Sku)> = Vec::new();
        for raw in requested {
            match Sku::parse(&raw) {
                Ok(sku) if wanted.iter().any(|(_, w)| *w == sku) => {}
                Ok(sku) => wanted.push((raw, sku)),
                // Text that cannot be a SKU is unknown like any other.
                Err(_) if unknown_skus.contains(&raw) => {}
                Err(_) => unknown_skus.push(raw),
            }
        }
        let skus: Vec<Sku> = wanted.iter().map(|(_, sku)| sku.clone()).collect();
        let mut found = self.catalogue.products(&skus).await?;
        let mut products = Vec::with_capacity(found.len());
        // Answered in the order asked; unknown ones as the caller spelled them.
        for (raw, sku) in wanted {
            match found.iter().position(|p| p.sku == sku) {
                Some(i) => {
                    let p = found.swap_remove(i);
                    let available = p.available();
                    products.push(Product {
                        price: Some(Money {
                            amount_minor: p.price.amount_minor,
                            currency: p.price.currency.to_string(),
                        }),
                        sku: p.sku.into_string(),
                        name: p.name,
                        available,
                    });
                }
                None => unknown_skus.push(raw),
            }
        }
        Ok(Response::new(GetProductsResponse {
            products,
            unknown_skus,
        }))
    }
}
