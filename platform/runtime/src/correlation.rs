//! The correlation id that ties together everything one client request causes.
//!
//! Accepted from `x-correlation-id` when it is sane, generated otherwise, echoed on the response,
//! held in a task-local for the request's lifetime, and added by [`crate::client`] to every call
//! the request makes.

use std::sync::Arc;

use http::{HeaderMap, HeaderValue};

/// The header that carries the id.
pub const HEADER: &str = "x-correlation-id";

const MAX_LEN: usize = 128;

/// A request's correlation id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorrelationId(Arc<str>);

tokio::task_local! {
    static CURRENT: CorrelationId;
}

impl CorrelationId {
    #[must_use]
    pub fn generate() -> Self {
        Self(uuid::Uuid::now_v7().to_string().into())
    }

    /// The id a client sent, if it is short and printable; anything else is not trusted into logs.
    #[must_use]
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        let value = headers.get(HEADER)?.to_str().ok()?;
        let ok = !value.is_empty()
            && value.len() <= MAX_LEN
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
        ok.then(|| Self(value.into()))
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    #[must_use]
    pub fn header_value(&self) -> HeaderValue {
        HeaderValue::from_str(&self.0).expect("validated or generated ids are valid header values")
    }

    /// Runs `fut` with this id as the current one.
    pub async fn scope<F: Future>(self, fut: F) -> F::Output {
        CURRENT.scope(self, fut).await
    }

    /// The id of the request being handled by this task, if any.
    #[must_use]
    pub fn current() -> Option<Self> {
        CURRENT.try_with(Clone::clone).ok()
    }
}

impl std::fmt::Display for CorrelationId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(HEADER, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn accepts_a_sane_client_id() {
        assert_eq!(
            CorrelationId::from_headers(&headers("abc-123")).unwrap().as_str(),
            "abc-123"
        );
    }

    #[test]
    fn refuses_ids_that_could_forge_log_lines() {
        assert!(CorrelationId::from_headers(&headers("a b")).is_none());
        assert!(CorrelationId::from_headers(&headers(&"x".repeat(200))).is_none());
        assert!(CorrelationId::from_headers(&HeaderMap::new()).is_none());
    }

    #[tokio::test]
    async fn the_current_id_is_visible_inside_the_scope_only() {
        let id = CorrelationId::generate();
        let seen = id.clone().scope(async { CorrelationId::current() }).await;
        assert_eq!(seen, Some(id));
        assert_eq!(CorrelationId::current(), None);
    }
}
