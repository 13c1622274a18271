//! Orders' calls to other services at order creation, over their internal gRPC APIs: prices and
//! availability from inventory, the customer from customers. Each call carries the request's
//! correlation id and goes through the runtime's [guards](mercato_runtime::guard): a breaker per
//! service, retries under a budget (these reads are idempotent), and a per-attempt timeout that
//! never runs past the order request's deadline, which travels on as `x-request-deadline-ms` and
//! `grpc-timeout`.

use std::time::Duration;

use mercato_contracts::grpc::customers::GetCustomerRequest;
use mercato_contracts::grpc::customers::customers_client::CustomersClient;
use mercato_contracts::grpc::inventory::inventory_client::InventoryClient;
use mercato_contracts::grpc::inventory::{GetProductsRequest, Product};
use mercato_runtime::correlation::{CorrelationId, HEADER};
use mercato_runtime::grpc::Calls;
use mercato_runtime::service_token::ServiceTokens;
use mercato_runtime::tls::ClientTls;
use mercato_runtime::{ClientConfig, ClientMetrics, GuardedChannel};
use tonic::transport::Endpoint;

#[cfg(test)]
mod tests;

/// A dependency that could not answer.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("{service} is unavailable: {reason}")]
    Unavailable { service: &'static str, reason: String },
    #[error("invalid {service} address {url:?}")]
    Address { service: &'static str, url: String },
    #[error("invalid settings for calls to {service}: {reason}")]
    Settings { service: &'static str, reason: String },
}

fn channel(
    service: &'static str,
    url: &str,
    config: &ClientConfig,
    metrics: &ClientMetrics,
    tokens: Option<&ServiceTokens>,
    tls: Option<&ClientTls>,
) -> Result<GuardedChannel, DirectoryError> {
    let endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|_| DirectoryError::Address {
            service,
            url: url.to_owned(),
        })?
        .connect_timeout(Duration::from_millis(config.connect_timeout_ms));
    let channel = GuardedChannel::new(
        service,
        mercato_runtime::tls::channel(&endpoint, tls),
        Calls::Idempotent,
        config,
        metrics,
    )
    .map_err(|e| DirectoryError::Settings {
        service,
        reason: e.to_string(),
    })?;
    Ok(match tokens {
        Some(tokens) => channel.with_service_token(tokens.clone(), service),
        None => channel,
    })
}

fn request<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(id) = CorrelationId::current()
        && let Ok(value) = id.as_str().parse()
    {
        request.metadata_mut().insert(HEADER, value);
    }
    request
}

fn unavailable(service: &'static str, status: &tonic::Status) -> DirectoryError {
    DirectoryError::Unavailable {
        service,
        reason: format!("{:?}: {}", status.code(), status.message()),
    }
}

/// The mutual TLS of the calls to each, when `[tls]` is on.
#[derive(Debug, Clone, Default)]
pub struct DirectoryTls {
    pub inventory: Option<ClientTls>,
    pub customers: Option<ClientTls>,
}

/// Inventory's and customers' internal APIs.
#[derive(Debug, Clone)]
pub struct Directory {
    inventory: InventoryClient<GuardedChannel>,
    customers: CustomersClient<GuardedChannel>,
}

impl Directory {
    /// Lazily connected clients; nothing is dialled until the first call. The calls are guarded
    /// with `config`'s settings (each attempt limited to its `timeout_ms`), over `tls` when on;
    /// the breakers and call counts are reported through `metrics`. With `tokens`, each call
    /// carries a service token for the service it goes to.
    ///
    /// # Errors
    /// A URL that is not a valid endpoint, or an invalid setting.
    pub fn new(
        inventory_url: &str,
        customers_url: &str,
        config: &ClientConfig,
        metrics: &ClientMetrics,
        tokens: Option<&ServiceTokens>,
        tls: &DirectoryTls,
    ) -> Result<Self, DirectoryError> {
        let to = |service, url, tls| channel(service, url, config, metrics, tokens, tls);
        Ok(Self {
            inventory: InventoryClient::new(to("inventory", inventory_url, tls.inventory.as_ref())?),
            customers: CustomersClient::new(to("customers", customers_url, tls.customers.as_ref())?),
        })
    }

    /// Prices and availability; unknown SKUs come back separately.
    ///
    /// # Errors
    /// Inventory did not answer.
    pub async fn products(&self, skus: Vec<String>) -> Result<(Vec<Product>, Vec<String>), DirectoryError> {
        let response = self
            .inventory
            .clone()
            .get_products(request(GetProductsRequest { skus }))
            .await
            .map_err(|s| unavailable("inventory", &s))?
            .into_inner();
        Ok((response.products, response.unknown_skus))
    }

    /// Whether customers has a profile for the customer.
    ///
    /// # Errors
    /// Customers did not answer.
    pub async fn customer_exists(&self, customer_id: &str) -> Result<bool, DirectoryError> {
        match self
            .customers
            .clone()
            .get_customer(request(GetCustomerRequest {
                customer_id: customer_id.to_owned(),
            }))
            .await
        {
            Ok(_) => Ok(true),
            Err(status) if status.code() == tonic::Code::NotFound => Ok(false),
            Err(status) => Err(unavailable("customers", &status)),
        }
    }
}
