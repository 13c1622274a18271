//! `/api/products`: the public catalogue, and the admin's stock and price changes.

use std::sync::Arc;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use mercato_contracts::openapi::{NotAdmin, PageParams, PageQueryRefused};
use mercato_runtime::{Caller, Json, Problem, page};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::catalogue::Catalogue;
use crate::domain::{Money, Product, Sku};

/// The role that may change stock and prices.
const ADMIN: &str = "admin";

/// A new price as the admin sent it, in `Money`'s shape but unchecked, so that a bad amount and
/// a bad currency are both named in one answer.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PriceInput {
    #[schema(minimum = 0)]
    #[serde(deserialize_with = "mercato_contracts::number::whole_number")]
    amount_minor: i64,
    #[schema(pattern = "^[A-Z]{3}$", example = "EUR")]
    currency: String,
}

/// A product as clients see it; how much is on hand and held stays inside.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Product)]
pub struct ProductBody {
    sku: String,
    name: String,
    description: String,
    price: Money,
    available: i64,
}

impl From<Product> for ProductBody {
    fn from(p: Product) -> Self {
        let available = p.available();
        Self {
            price: p.price,
            sku: p.sku.into_string(),
            name: p.name,
            description: p.description,
            available,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ProductPage)]
pub struct PageBody {
    items: Vec<ProductBody>,
    next_page_token: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StockBody {
    /// Units on hand.
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    #[serde(deserialize_with = "mercato_contracts::number::whole_number")]
    quantity: i64,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PriceBody {
    price: PriceInput,
}

/// The first value of `name` in the query string.
fn param<'a>(query: &'a [(String, String)], name: &str) -> Option<&'a str> {
    query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

#[utoipa::path(
    get,
    path = "/api/products",
    operation_id = "list_products",
    tag = "inventory",
    summary = "The catalogue, by SKU",
    params(PageParams),
    responses(
        (status = 200, description = "A page of products", body = PageBody),
        PageQueryRefused,
    )
)]
pub async fn list(
    State(catalogue): State<Arc<Catalogue>>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<PageBody>, Problem> {
    let Query(query) = query.map_err(|e| Problem::bad_request(e.body_text()))?;
    let request = page::parse::<Sku>(param(&query, "page_size"), param(&query, "page_token"))?;
    let page = catalogue.page(request.size, request.after.as_ref()).await?;
    Ok(Json(PageBody {
        items: page.items.into_iter().map(ProductBody::from).collect(),
        next_page_token: page.next_after.as_ref().map(page::encode),
    }))
}

/// A path segment that does not decode names no product.
fn sku_of(path: Result<Path<String>, PathRejection>) -> Result<String, Problem> {
    path.map(|Path(sku)| sku)
        .map_err(|_| Problem::not_found("there is no product at this address"))
}

#[utoipa::path(
    get,
    path = "/api/products/{sku}",
    operation_id = "get_product",
    tag = "inventory",
    summary = "One product",
    params(("sku" = String, Path, description = "The product's SKU")),
    responses(
        (status = 200, description = "The product", body = ProductBody),
        (status = 404, description = "No such product"),
    )
)]
pub async fn get(
    State(catalogue): State<Arc<Catalogue>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<ProductBody>, Problem> {
    let sku = sku_of(path)?;
    Ok(Json(catalogue.product(&sku).await?.into()))
}

/// The role is checked before the body, so a caller without it learns nothing about the
/// product or what the body should be.
#[utoipa::path(
    put,
    path = "/api/products/{sku}/stock",
    operation_id = "put_stock",
    tag = "inventory",
    summary = "Set the units on hand (admin)",
    security(("bearer" = [])),
    params(("sku" = String, Path, description = "The product's SKU")),
    request_body = StockBody,
    responses(
        (status = 200, description = "The product as changed", body = ProductBody),
        NotAdmin,
        (status = 404, description = "No such product"),
        (status = 409, description = "More units are held than the new level"),
    )
)]
pub async fn put_stock(
    State(catalogue): State<Arc<Catalogue>>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
    body: Result<Json<StockBody>, Problem>,
) -> Result<Json<ProductBody>, Problem> {
    caller.require_role(ADMIN)?;
    let sku = sku_of(path)?;
    let Json(body) = body?;
    let product = catalogue.set_stock(&sku, body.quantity).await?;
    tracing::info!(admin = %caller.subject, sku = %product.sku, on_hand = product.on_hand.value(), "stock set");
    Ok(Json(product.into()))
}

#[utoipa::path(
    put,
    path = "/api/products/{sku}/price",
    operation_id = "put_price",
    tag = "inventory",
    summary = "Set the price (admin)",
    security(("bearer" = [])),
    params(("sku" = String, Path, description = "The product's SKU")),
    request_body = PriceBody,
    responses(
        (status = 200, description = "The product as changed", body = ProductBody),
        NotAdmin,
        (status = 404, description = "No such product"),
    )
)]
pub async fn put_price(
    State(catalogue): State<Arc<Catalogue>>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
    body: Result<Json<PriceBody>, Problem>,
) -> Result<Json<ProductBody>, Problem> {
    caller.require_role(ADMIN)?;
    let sku = sku_of(path)?;
    let Json(body) = body?;
    let product = catalogue
        .set_price(&sku, body.price.amount_minor, &body.price.currency)
        .await?;
    tracing::info!(admin = %caller.subject, sku = %product.sku, amount_minor = product.price.amount_minor,
        currency = %product.price.currency, "price set");
    Ok(Json(product.into()))
}
