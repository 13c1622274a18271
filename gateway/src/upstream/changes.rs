//! Changes at run time through the admin API: instances added and removed, the split moved.
//! Each change swaps a whole list or one number, so an attempt sees the old state or the new.

use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};

use http::Uri;

use super::shared::UpstreamState;
use super::{Group, Instance, InstanceView, Upstream, UpstreamView, Upstreams};

/// Why an instance list could not change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeError {
    #[error("{0}")]
    InvalidUrl(String),
    #[error("{url} is already an instance of {upstream}")]
    Exists { upstream: String, url: String },
    #[error("{url} is not an instance of {upstream}")]
    NotFound { upstream: String, url: String },
    #[error("the {group} group of {upstream} would have no instances while it takes traffic")]
    WouldEmpty { upstream: String, group: &'static str },
}

/// `url` as an instance address: `http://host:port` (or `https://` for a service over mutual
/// TLS), nothing after it.
///
/// # Errors
/// A description of what is wrong with it.
pub fn parse_instance(url: &str) -> Result<Uri, String> {
    let uri: Uri = url
        .trim_end_matches('/')
        .parse()
        .map_err(|_| format!("{url:?} is not a URL"))?;
    let bare = uri
        .path_and_query()
        .is_none_or(|p| p.as_str() == "/" || p.as_str().is_empty());
    let scheme = uri.scheme_str();
    if !matches!(scheme, Some("http" | "https")) || uri.authority().is_none() || !bare {
        return Err(format!("{url:?} must be http://host:port or https://host:port"));
    }
    Ok(uri)
}

impl Upstreams {
    /// Adds an instance to a group.
    ///
    /// # Errors
    /// A bad URL, or one the upstream has already.
    pub fn add(&self, name: &str, group: Group, url: &str) -> Result<InstanceView, ChangeError> {
        let upstream = self.upstream_or_not_found(name, url)?;
        let uri = parse_instance(url).map_err(ChangeError::InvalidUrl)?;
        let instance = self.instance(name, uri).map_err(ChangeError::InvalidUrl)?;
        let mut slot = upstream.groups[group.index()]
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let exists = [Group::Blue, Group::Green].iter().any(|g| {
            let list = if *g == group {
                Arc::clone(&slot)
            } else {
                upstream.instances(*g)
            };
            list.iter().any(|i| i.url() == instance.url())
        });
        if exists {
            return Err(ChangeError::Exists {
                upstream: name.to_owned(),
                url: instance.url().to_owned(),
            });
        }
        let mut next = Vec::clone(&slot);
        next.push(Arc::clone(&instance));
        *slot = Arc::new(next);
        tracing::info!(
            upstream = name,
            group = group.as_str(),
            instance = instance.url(),
            "instance added"
        );
        Ok(instance.view())
    }

    /// Removes an instance from whichever group holds it. A group that takes traffic keeps at
    /// least one instance.
    ///
    /// # Errors
    /// Unknown instance, or the last one of a group in use.
    pub fn remove(&self, name: &str, url: &str) -> Result<(), ChangeError> {
        let upstream = self.upstream_or_not_found(name, url)?;
        let wanted = url.trim_end_matches('/');
        for group in [Group::Blue, Group::Green] {
            let mut slot = upstream.groups[group.index()]
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            let Some(position) = slot.iter().position(|i| i.url() == wanted) else {
                continue;
            };
            if slot.len() == 1 && upstream.share(group) > 0 {
                return Err(ChangeError::WouldEmpty {
                    upstream: name.to_owned(),
                    group: group.as_str(),
                });
            }
            let mut next = Vec::clone(&slot);
            let removed = next.remove(position);
            *slot = Arc::new(next);
            self.metrics.forget_instance(name, removed.url());
            tracing::info!(
                upstream = name,
                group = group.as_str(),
                instance = wanted,
                "instance removed"
            );
            return Ok(());
        }
        Err(ChangeError::NotFound {
            upstream: name.to_owned(),
            url: wanted.to_owned(),
        })
    }

    /// Sends `green_percent` of requests to green, the rest to blue, from the next attempt on.
    ///
    /// # Errors
    /// A group that would get traffic but has no instances.
    pub fn set_split(&self, name: &str, green_percent: u8) -> Result<UpstreamView, ChangeError> {
        let upstream = self.upstream_or_not_found(name, "")?;
        let green_percent = green_percent.min(100);
        for (group, share) in [(Group::Blue, 100 - green_percent), (Group::Green, green_percent)] {
            if share > 0 && upstream.instances(group).is_empty() {
                return Err(ChangeError::WouldEmpty {
                    upstream: name.to_owned(),
                    group: group.as_str(),
                });
            }
        }
        let before = upstream.green_percent.swap(green_percent, Ordering::SeqCst);
        self.metrics.set_green_percent(name, green_percent);
        tracing::warn!(
            upstream = name,
            from = before,
            to = green_percent,
            "green share changed"
        );
        Ok(self.view(upstream))
    }

    /// The upstream's admin state now.
    #[must_use]
    pub fn state(&self, name: &str) -> Option<UpstreamState> {
        let upstream = self.map.get(name)?;
        let urls = |g: Group| upstream.instances(g).iter().map(|i| i.url().to_owned()).collect();
        Some(UpstreamState {
            blue: urls(Group::Blue),
            green: urls(Group::Green),
            green_percent: upstream.green_percent.load(Ordering::SeqCst),
        })
    }

    /// Makes the upstream's instances and split `state`, keeping the instances that stay;
    /// `Ok(false)` when it already was.
    ///
    /// # Errors
    /// An unknown upstream, a bad URL, or a state that leaves a group with traffic empty.
    pub fn apply(&self, name: &str, state: &UpstreamState) -> Result<bool, ChangeError> {
        let upstream = self.upstream_or_not_found(name, "")?;
        if self.state(name).as_ref() == Some(state) {
            return Ok(false);
        }
        let green_percent = state.green_percent.min(100);
        for (group, urls, share) in [
            (Group::Blue, &state.blue, 100 - green_percent),
            (Group::Green, &state.green, green_percent),
        ] {
            if share > 0 && urls.is_empty() {
                return Err(ChangeError::WouldEmpty {
                    upstream: name.to_owned(),
                    group: group.as_str(),
                });
            }
        }
        let existing: Vec<Arc<Instance>> = [Group::Blue, Group::Green]
            .iter()
            .flat_map(|g| upstream.instances(*g).iter().cloned().collect::<Vec<_>>())
            .collect();
        let mut next = [Vec::new(), Vec::new()];
        for (group, urls) in [(Group::Blue, &state.blue), (Group::Green, &state.green)] {
            for url in urls {
                let uri = parse_instance(url).map_err(ChangeError::InvalidUrl)?;
                let wanted = url.trim_end_matches('/');
                let instance = match existing.iter().find(|i| i.url() == wanted) {
                    Some(kept) => Arc::clone(kept),
                    None => self.instance(name, uri).map_err(ChangeError::InvalidUrl)?,
                };
                next[group.index()].push(instance);
            }
        }
        for gone in existing
            .iter()
            .filter(|i| next.iter().flatten().all(|n| n.url() != i.url()))
        {
            self.metrics.forget_instance(name, gone.url());
        }
        for (group, instances) in [Group::Blue, Group::Green].into_iter().zip(next) {
            *upstream.groups[group.index()]
                .write()
                .unwrap_or_else(PoisonError::into_inner) = Arc::new(instances);
        }
        upstream.green_percent.store(green_percent, Ordering::SeqCst);
        self.metrics.set_green_percent(name, green_percent);
        Ok(true)
    }

    fn upstream_or_not_found(&self, name: &str, url: &str) -> Result<&Arc<Upstream>, ChangeError> {
        self.map.get(name).ok_or_else(|| ChangeError::NotFound {
            upstream: name.to_owned(),
            url: url.to_owned(),
        })
    }
}
