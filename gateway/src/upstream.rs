//! The instances behind each upstream name.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http::Uri;

use crate::StartError;

#[derive(Debug)]
struct Pool {
    instances: Vec<Uri>,
    next: AtomicUsize,
}

/// Every upstream's instances, picked in turn.
#[derive(Debug, Clone)]
pub struct Upstreams {
    pools: Arc<BTreeMap<String, Pool>>,
}

impl Upstreams {
    /// # Errors
    /// An upstream without instances, or an instance URL that is not `http://host:port`.
    pub fn new(config: &BTreeMap<String, Vec<String>>) -> Result<Self, StartError> {
        let mut pools = BTreeMap::new();
        for (name, urls) in config {
            let key = || format!("upstreams.{name}");
            if urls.is_empty() {
                return Err(StartError::Config {
                    key: key(),
                    message: "has no instances".into(),
                });
            }
            let mut instances = Vec::with_capacity(urls.len());
            for url in urls {
                let uri: Uri = url
                    .trim_end_matches('/')
                    .parse()
                    .map_err(|_| StartError::Config {
                        key: key(),
                        message: format!("{url:?} is not a URL"),
                    })?;
                if uri.scheme_str() != Some("http") || uri.authority().is_none() {
                    return Err(StartError::Config {
                        key: key(),
                        message: format!("{url:?} must be http://host:port"),
                    });
                }
                instances.push(uri);
            }
            pools.insert(
                name.clone(),
                Pool {
                    instances,
                    next: AtomicUsize::new(0),
                },
            );
        }
        Ok(Self {
            pools: Arc::new(pools),
        })
    }

    /// The names of the upstreams.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.pools.keys().map(String::as_str)
    }

    /// The next instance of `name`, round robin.
    #[must_use]
    pub fn pick(&self, name: &str) -> Option<&Uri> {
        let pool = self.pools.get(name)?;
        let i = pool.next.fetch_add(1, Ordering::Relaxed) % pool.instances.len();
        pool.instances.get(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instances_are_picked_in_turn() {
        let config = BTreeMap::from([(
            "a".to_owned(),
            vec!["http://127.0.0.1:1".to_owned(), "http://127.0.0.1:2".to_owned()],
        )]);
        let u = Upstreams::new(&config).unwrap();
        let picks: Vec<_> = (0..4).map(|_| u.pick("a").unwrap().port_u16().unwrap()).collect();
        assert_eq!(picks, [1, 2, 1, 2]);
        assert!(u.pick("b").is_none());
    }

    #[test]
    fn non_http_instances_are_refused() {
        let config = BTreeMap::from([("a".to_owned(), vec!["ftp://x".to_owned()])]);
        assert!(Upstreams::new(&config).is_err());
    }
}
