//! The gateway's part of a trace: a client span around each proxied call, whose `traceparent`
//! replaces whatever the client sent, so an upstream never continues a trace the gateway did
//! not accept. While tracing is off this only drops the client's header.

use http::{HeaderMap, HeaderName};
use mercato_runtime::trace::{self, TRACEPARENT};

/// [`TRACEPARENT`] as a header name: a string is parsed into a name again on every use.
const TRACEPARENT_NAME: HeaderName = HeaderName::from_static(TRACEPARENT);

/// The span of the call to `upstream`, with its `traceparent` written onto `headers`.
pub fn proxy_span(upstream: &str, method: &http::Method, headers: &mut HeaderMap) -> tracing::Span {
    headers.remove(TRACEPARENT_NAME);
    let span = trace::client_span(upstream, method.as_str());
    trace::context::inject(&span, headers);
    span
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clients_traceparent_is_not_passed_on_while_tracing_is_off() {
        let mut headers = HeaderMap::new();
        headers.insert(
            TRACEPARENT,
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
                .parse()
                .unwrap(),
        );
        let span = proxy_span("orders", &http::Method::GET, &mut headers);
        assert!(span.is_disabled());
        assert!(headers.get(TRACEPARENT).is_none());
    }
}
