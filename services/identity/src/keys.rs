//! The identity service's signing keys, shared by the token endpoint and the JWKS, reloaded from
//! the key directory on an interval so that `mercato keys rotate` takes effect without a restart.

use std::sync::{Arc, RwLock};

use mercato_security::{JwkSet, KeyError, KeyRing, KeyStore, LocalKeys, SigningKey};

/// The key ring in force, and the verification keys derived from it.
#[derive(Clone)]
pub struct Keys {
    store: KeyStore,
    ring: Arc<RwLock<KeyRing>>,
    local: Arc<LocalKeys>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("dir", &self.store.dir())
            .finish_non_exhaustive()
    }
}

impl Keys {
    /// Loads the key directory, creating the first key when allowed.
    ///
    /// # Errors
    /// See [`KeyStore::load_or_create`].
    pub fn open(store: KeyStore, generate: bool) -> Result<Self, KeyError> {
        let ring = store.load_or_create(generate)?;
        let local = Arc::new(LocalKeys::new(ring.published.clone()));
        Ok(Self {
            store,
            ring: Arc::new(RwLock::new(ring)),
            local,
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, KeyRing> {
        self.ring
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    #[must_use]
    pub fn active(&self) -> SigningKey {
        self.read().active.clone()
    }

    #[must_use]
    pub fn published(&self) -> JwkSet {
        self.read().published.clone()
    }

    /// The verification keys, for this service's own [`mercato_security::Verifier`].
    #[must_use]
    pub fn local(&self) -> Arc<LocalKeys> {
        Arc::clone(&self.local)
    }

    /// Reads the directory again; true when the active key changed.
    ///
    /// # Errors
    /// See [`KeyStore::load`]; the keys in force stay as they were.
    pub fn reload(&self) -> Result<bool, KeyError> {
        let fresh = self.store.load()?;
        let changed = fresh.active.kid != self.read().active.kid;
        self.local.replace(fresh.published.clone());
        *self
            .ring
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = fresh;
        Ok(changed)
    }
}
