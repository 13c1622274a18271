//! The console's files, embedded in the binary: nothing to build or install, and what is served
//! is what was reviewed.

use axum::extract::Path;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use mercato_runtime::Problem;

/// No inline script or style, nothing from elsewhere, no framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// Every file a page may load, with its media type.
pub const FILES: [(&str, &str, &str); 8] = [
    (
        "console.css",
        "text/css; charset=utf-8",
        include_str!("../../console/console.css"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../../console/app.js"),
    ),
    (
        "chart.js",
        "text/javascript; charset=utf-8",
        include_str!("../../console/chart.js"),
    ),
    (
        "system.js",
        "text/javascript; charset=utf-8",
        include_str!("../../console/system.js"),
    ),
    (
        "orders.js",
        "text/javascript; charset=utf-8",
        include_str!("../../console/orders.js"),
    ),
    (
        "messages.js",
        "text/javascript; charset=utf-8",
        include_str!("../../console/messages.js"),
    ),
    (
        "traffic.js",
        "text/javascript; charset=utf-8",
        include_str!("../../console/traffic.js"),
    ),
    (
        "funnel.js",
        "text/javascript; charset=utf-8",
        include_str!("../../console/funnel.js"),
    ),
];

const INDEX: &str = include_str!("../../console/index.html");

pub async fn index() -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], INDEX).into_response()
}

pub async fn file(Path(name): Path<String>) -> Response {
    match FILES.iter().find(|(n, _, _)| *n == name) {
        Some((_, media, body)) => ([(header::CONTENT_TYPE, *media)], *body).into_response(),
        None => Problem::not_found(format!("the console has no file {name:?}")).into_response(),
    }
}

/// The headers every console answer carries; the JSON answers are never cached, since they
/// hold what only an admin may see.
pub async fn secure_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    let set = [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::CACHE_CONTROL, "no-store"),
    ];
    for (name, value) in set {
        headers.insert(name, HeaderValue::from_static(value));
    }
    if response.status() == StatusCode::OK {
        response.headers_mut().remove(header::PRAGMA);
    }
    response
}

/// Bytes of the page and everything it loads.
#[must_use]
pub fn page_bytes() -> usize {
    INDEX.len() + FILES.iter().map(|(_, _, body)| body.len()).sum::<usize>()
}
