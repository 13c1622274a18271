//! `GET /api/openapi.json`: the OpenAPI 3.1 description of the public API, for every service
//! behind the gateway in one document (`gateway/api/openapi.json`). The file is generated from
//! the services' handlers by `mercato openapi`; a test in `mercato` fails when it is stale.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, header};

/// The document, as shipped with the gateway.
pub const DOCUMENT: &str = include_str!("../api/openapi.json");

/// Serves the document.
pub async fn serve() -> Response {
    let mut response = DOCUMENT.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::GatewayConfig;

    fn document() -> serde_json::Value {
        serde_json::from_str(DOCUMENT).expect("the document is JSON")
    }

    #[test]
    fn is_openapi_3_1_with_every_reference_resolving() {
        let doc = document();
        assert_eq!(doc["openapi"], "3.1.0");
        let text = DOCUMENT;
        for piece in text.split("\"#/components/").skip(1) {
            let path: Vec<&str> = piece.split('"').next().unwrap().split('/').collect();
            assert!(
                !doc["components"][path[0]][path[1]].is_null(),
                "unresolved reference {path:?}"
            );
        }
    }

    #[test]
    fn every_route_the_gateway_serves_is_described() {
        let doc = document();
        let paths: Vec<&String> = doc["paths"].as_object().unwrap().keys().collect();
        for route in GatewayConfig::default().routes {
            assert!(
                paths.iter().any(|p| p.starts_with(route.prefix.as_str())),
                "no path under {} in the OpenAPI document",
                route.prefix
            );
        }
    }
}
