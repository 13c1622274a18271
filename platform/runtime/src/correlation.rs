//! The correlation id that ties together everything one client request causes.
//!
//! Accepted from `x-correlation-id` when it is sane, generated otherwise, echoed on the response,
//! held in a task-local for the request's lifetime, and added by [`crate::client`] to every call
//! the request makes.

use std::cell::Cell;
use std::time::{SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue};

/// The header that carries the id.
pub const HEADER: &str = "x-correlation-id";

/// [`HEADER`] as a header name, for the maps of every request: a string is parsed into a name
/// again on each use.
pub const NAME: HeaderName = HeaderName::from_static(HEADER);

const MAX_LEN: usize = 128;

/// A request's correlation id, held as the header value it travels in: a client's is the very
/// value it sent, and each copy (request, response, calls it makes) shares the same bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorrelationId(HeaderValue);

tokio::task_local! {
    static CURRENT: CorrelationId;
}

thread_local! {
    /// The bits of this thread's next id: random at first, then counted up, so that an id costs
    /// an increment rather than `uuid`'s version 7 generator, which asks the kernel for random
    /// bytes and takes a process-wide lock for every id. Unique within a thread for 2^56 ids;
    /// two threads (or processes) meet only if their random starts fall within as many ids of
    /// each other in the same millisecond.
    static NEXT: Cell<u128> = Cell::new(uuid::Uuid::new_v4().as_u128());
}

impl CorrelationId {
    /// A new id: a version 7 UUID (the time in milliseconds, then 74 bits that are this
    /// thread's counter, started at random).
    #[must_use]
    pub fn generate() -> Self {
        let bits = NEXT.with(|next| {
            let bits = next.get();
            next.set(bits.wrapping_add(1));
            bits
        });
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX));
        // The low 80 bits; the version and variant overwrite 6 of the highest, never the
        // counted ones.
        let mut counter = [0u8; 10];
        counter.copy_from_slice(&bits.to_be_bytes()[6..]);
        let id = uuid::Builder::from_unix_timestamp_millis(millis, &counter).into_uuid();
        let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let text = id.hyphenated().encode_lower(&mut text);
        Self(HeaderValue::from_str(text).expect("a UUID is a valid header value"))
    }

    /// The id a client sent, if it is short and printable; anything else is not trusted into logs.
    #[must_use]
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        let value = headers.get(&NAME)?;
        let bytes = value.as_bytes();
        let ok = !bytes.is_empty()
            && bytes.len() <= MAX_LEN
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(b));
        ok.then(|| Self(value.clone()))
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        // Validated or generated: printable ASCII only.
        self.0.to_str().unwrap_or_default()
    }

    #[must_use]
    pub fn header_value(&self) -> HeaderValue {
        self.0.clone()
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
        f.write_str(self.as_str())
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

    #[test]
    fn generated_ids_are_distinct_version_7_uuids_also_across_threads() {
        let ids = || (0..1000).map(|_| CorrelationId::generate()).collect::<Vec<_>>();
        let mut all = ids();
        all.extend(std::thread::spawn(ids).join().unwrap());
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let mut seen = std::collections::HashSet::new();
        for id in &all {
            let uuid = uuid::Uuid::parse_str(id.as_str()).unwrap();
            assert_eq!(uuid.get_version(), Some(uuid::Version::SortRand), "{id}");
            assert_eq!(uuid.get_variant(), uuid::Variant::RFC4122, "{id}");
            let (secs, _) = uuid.get_timestamp().unwrap().to_unix();
            assert!(now.abs_diff(secs) < 60, "{id} is not from now");
            assert!(seen.insert(id.as_str().to_owned()), "{id} twice");
        }
    }

    #[tokio::test]
    async fn the_current_id_is_visible_inside_the_scope_only() {
        let id = CorrelationId::generate();
        let seen = id.clone().scope(async { CorrelationId::current() }).await;
        assert_eq!(seen, Some(id));
        assert_eq!(CorrelationId::current(), None);
    }
}
