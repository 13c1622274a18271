//! `mercato.customers.v1.Customers`: the internal API other services call (orders, at checkout).
//! Served on the same listener as the HTTP API.

use std::sync::Arc;

use mercato_contracts::grpc::customers::customers_server::{Customers as CustomersApi, CustomersServer};
use mercato_contracts::grpc::customers::{Address, Customer, GetCustomerRequest, Preferences};
use tonic::{Request, Response, Status};

use crate::profiles::{CustomerError, Customers};

/// The gRPC face of the customer read model.
#[derive(Debug, Clone)]
pub struct CustomersGrpc {
    customers: Arc<Customers>,
}

#[tonic::async_trait]
impl CustomersApi for CustomersGrpc {
    async fn get_customer(&self, request: Request<GetCustomerRequest>) -> Result<Response<Customer>, Status> {
        let id = request.into_inner().customer_id;
        if id.is_empty() || id.len() > 128 {
            return Err(Status::invalid_argument(
                "customer_id must be 1 to 128 characters",
            ));
        }
        let profile = match self.customers.profile(&id).await {
            Ok(p) => p,
            Err(CustomerError::NotFound) => return Err(Status::not_found("no such customer")),
            Err(e) => {
                tracing::warn!(error = %e, "GetCustomer failed");
                return Err(Status::unavailable("customers cannot answer right now"));
            }
        };
        Ok(Response::new(Customer {
            id: profile.id,
            email: profile.email,
            name: profile.name,
            addresses: profile
                .addresses
                .into_iter()
                .map(|a| Address {
                    line1: a.line1,
                    line2: a.line2,
                    city: a.city,
                    postal_code: a.postal_code,
                    country: a.country,
                })
                .collect(),
            preferences: Some(Preferences {
                email: profile.preferences.email,
                sms: profile.preferences.sms,
                marketing_opt_in: profile.preferences.marketing_opt_in,
                locale: profile.preferences.locale,
            }),
        }))
    }
}

/// The gRPC routes, to merge into the service's router.
pub fn router(customers: Arc<Customers>) -> axum::Router {
    tonic::service::Routes::new(CustomersServer::new(CustomersGrpc { customers })).into_axum_router()
}
