//! Who may call what between services, once mutual TLS names the caller: the one list.
//!
//! - an internal gRPC method: only the services listed for it ([`INTERNAL_RPCS`]); any other
//!   gRPC call is refused;
//! - identity's signing keys (`/.well-known/jwks.json`): every service, since each verifies tokens;
//! - identity's token endpoint (`/api/identity/token`): every service, for its service tokens
//!   (identity still checks each service's own credential and whom it may call);
//! - every other HTTP route: the gateway, which forwards the public API.

/// The gateway's service name, the one caller of the public API.
pub const GATEWAY: &str = "gateway";

/// Internal gRPC methods (`/package.Service/Method`) and the services that may call them.
pub const INTERNAL_RPCS: &[(&str, &[&str])] = &[
    ("/mercato.customers.v1.Customers/GetCustomer", &["orders"]),
    ("/mercato.inventory.v1.Inventory/GetProducts", &["orders"]),
];

/// HTTP paths every service may read.
const EVERY_SERVICE: &[&str] = &["/.well-known/jwks.json", "/api/identity/token"];

/// Whether service `caller` may call `path` (`grpc` for a gRPC call) on any service.
#[must_use]
pub fn may_call(caller: &str, path: &str, grpc: bool) -> bool {
    if grpc {
        return INTERNAL_RPCS
            .iter()
            .any(|(method, callers)| *method == path && callers.contains(&caller));
    }
    if EVERY_SERVICE.contains(&path) {
        return true;
    }
    caller == GATEWAY
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grpc::customers::customers_server::SERVICE_NAME as CUSTOMERS;
    use crate::grpc::inventory::inventory_server::SERVICE_NAME as INVENTORY;

    #[test]
    fn the_listed_methods_are_the_generated_services_methods() {
        assert_eq!(INTERNAL_RPCS[0].0, format!("/{CUSTOMERS}/GetCustomer"));
        assert_eq!(INTERNAL_RPCS[1].0, format!("/{INVENTORY}/GetProducts"));
    }

    #[test]
    fn orders_alone_reads_customers_and_products() {
        for (method, _) in INTERNAL_RPCS {
            assert!(may_call("orders", method, true));
            for other in ["notifications", "payments", "gateway", "customers", "identity"] {
                assert!(!may_call(other, method, true), "{other} {method}");
            }
        }
        assert!(!may_call("orders", "/mercato.inventory.v1.Inventory/Other", true));
    }

    #[test]
    fn public_routes_are_the_gateway_s_and_keys_everyone_s() {
        assert!(may_call(GATEWAY, "/api/orders", false));
        assert!(!may_call("notifications", "/api/orders", false));
        assert!(may_call("orders", "/.well-known/jwks.json", false));
        assert!(may_call("orders", "/api/identity/token", false));
        assert!(!may_call("orders", "/api/identity/register", false));
        assert!(!may_call(
            GATEWAY,
            "/mercato.inventory.v1.Inventory/GetProducts",
            true
        ));
    }
}
