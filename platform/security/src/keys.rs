//! Signing keys on disk.
//!
//! A key directory holds one PKCS#8 PEM file per key, named `<activates-unix-millis>-<kid>.pem`.
//! Rotation publishes a new key at once but dates its activation an activation delay ahead, so
//! every verifier that refetches the JWKS on an unknown `kid` finds it there (publish, then
//! activate); the time is in the file name so every replica agrees on it. The newest key whose
//! activation has come signs. An older key retires when the next one activates; it stays in the
//! JWKS until every token it signed has expired (`retired + token_ttl + leeway`), so rotation
//! never invalidates a live token. Rotation also deletes keys nobody can need any more. The very
//! first key signs at once: no verifier can have fetched a set without it.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::EncodingKey;
use p256::SecretKey;
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};

use crate::jwks::{Jwk, JwkSet};

/// Why keys could not be loaded, created or rotated.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key directory {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("key file {path} is not a PKCS#8 P-256 private key")]
    Malformed { path: PathBuf },
    #[error("no signing key in {path} and key generation is switched off")]
    NoKeys { path: PathBuf },
    #[error(transparent)]
    Exposed(#[from] crate::secret_file::ExposedSecret),
}

/// A private key that can sign, with its public half.
#[derive(Clone)]
pub struct SigningKey {
    pub kid: String,
    pub activates_ms: u64,
    pub(crate) encoding: EncodingKey,
    pub public: Jwk,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("activates_ms", &self.activates_ms)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    fn from_secret(secret: &SecretKey, activates_ms: u64) -> Option<Self> {
        let pem = secret.to_pkcs8_pem(LineEnding::LF).ok()?;
        let encoding = EncodingKey::from_ec_pem(pem.as_bytes()).ok()?;
        let point = p256::EncodedPoint::from(secret.public_key());
        let public = Jwk::p256(point.x()?, point.y()?);
        Some(Self {
            kid: public.kid.clone()?,
            activates_ms,
            encoding,
            public,
        })
    }

    /// A fresh key that lives only in memory (tests, throwaway setups).
    #[must_use]
    pub fn generate() -> Self {
        let secret = SecretKey::random(&mut rand::rngs::OsRng);
        Self::from_secret(&secret, now_ms()).expect("a freshly generated P-256 key encodes")
    }
}

/// The keys in force at one moment: the active signer and every public key still published.
#[derive(Debug, Clone)]
pub struct KeyRing {
    pub active: SigningKey,
    pub published: JwkSet,
}

/// A directory of signing keys.
#[derive(Debug, Clone)]
pub struct KeyStore {
    dir: PathBuf,
    /// How long a retired key stays published: the longest lifetime of a token it signed.
    token_ttl: Duration,
    /// How long a new key is published before it signs.
    activation_delay: Duration,
}

const LEEWAY: Duration = Duration::from_secs(60);

impl KeyStore {
    #[must_use]
    pub fn new(dir: impl Into<PathBuf>, token_ttl: Duration) -> Self {
        Self {
            dir: dir.into(),
            token_ttl,
            activation_delay: Duration::ZERO,
        }
    }

    /// Sets how long a rotated-in key is only published before it starts signing.
    #[must_use]
    pub fn with_activation_delay(mut self, delay: Duration) -> Self {
        self.activation_delay = delay;
        self
    }

    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Loads the key ring, creating the first key when the directory has none and `generate` is on.
    ///
    /// # Errors
    /// The directory cannot be read or written, a key file is malformed, or there is no key and
    /// generation is off.
    pub fn load_or_create(&self, generate: bool) -> Result<KeyRing, KeyError> {
        let keys = self.read_all()?;
        if keys.is_empty() {
            if !generate {
                return Err(KeyError::NoKeys {
                    path: self.dir.clone(),
                });
            }
            self.write_new(now_ms())?;
            return self.load();
        }
        Ok(self.ring(keys, now_ms()))
    }

    /// Loads the key ring.
    ///
    /// # Errors
    /// As [`KeyStore::load_or_create`] with generation off.
    pub fn load(&self) -> Result<KeyRing, KeyError> {
        let keys = self.read_all()?;
        if keys.is_empty() {
            return Err(KeyError::NoKeys {
                path: self.dir.clone(),
            });
        }
        Ok(self.ring(keys, now_ms()))
    }

    /// Creates a new active key and deletes keys whose tokens have all expired.
    ///
    /// # Errors
    /// The directory cannot be read or written.
    pub fn rotate(&self) -> Result<KeyRing, KeyError> {
        let existing = self.read_all()?;
        // The new key must sort after every existing one even if the clock stepped back.
        let delay = u64::try_from(self.activation_delay.as_millis()).unwrap_or(u64::MAX);
        // The new key must sort after every existing one even if the clock stepped back.
        let activates = existing
            .iter()
            .map(|k| k.activates_ms + 1)
            .max()
            .unwrap_or(0)
            .max(now_ms().saturating_add(delay));
        self.write_new(activates)?;
        let keys = self.read_all()?;
        let ring = self.ring(keys.clone(), now_ms());
        for key in keys {
            if ring.published.find(&key.kid).is_none() {
                let path = self.path_for(key.activates_ms, &key.kid);
                std::fs::remove_file(&path).map_err(|source| KeyError::Io { path, source })?;
            }
        }
        Ok(ring)
    }

    fn ring(&self, mut keys: Vec<SigningKey>, now: u64) -> KeyRing {
        keys.sort_by_key(|k| k.activates_ms);
        // The oldest key signs even "too early": there is nothing else to sign with.
        let active = keys.iter().rposition(|k| k.activates_ms <= now).unwrap_or(0);
        let horizon = u64::try_from((self.token_ttl + LEEWAY).as_millis()).unwrap_or(u64::MAX);
        let mut published = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            // A key older than the active one retired when its successor activated.
            let retired = (i < active).then(|| keys[i + 1].activates_ms);
            if retired.is_none_or(|r| r + horizon > now) {
                published.push(key.public.clone());
            }
        }
        published.reverse();
        let active = keys.swap_remove(active);
        KeyRing {
            active,
            published: JwkSet { keys: published },
        }
    }

    fn path_for(&self, activates: u64, kid: &str) -> PathBuf {
        self.dir.join(format!("{activates}-{kid}.pem"))
    }

    fn read_all(&self) -> Result<Vec<SigningKey>, KeyError> {
        let io = |source| KeyError::Io {
            path: self.dir.clone(),
            source,
        };
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(e)),
        };
        let mut keys = Vec::new();
        for entry in entries {
            let path = entry.map_err(io)?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let Some(stem) = name.strip_suffix(".pem") else {
                continue;
            };
            let Some(activates) = stem.split_once('-').and_then(|(ts, _)| ts.parse::<u64>().ok()) else {
                continue;
            };
            keys.push(read_key_file(&path, activates)?);
        }
        Ok(keys)
    }

    fn write_new(&self, activates: u64) -> Result<(), KeyError> {
        std::fs::create_dir_all(&self.dir).map_err(|source| KeyError::Io {
            path: self.dir.clone(),
            source,
        })?;
        let secret = SecretKey::random(&mut rand::rngs::OsRng);
        let key = SigningKey::from_secret(&secret, activates).expect("fresh key encodes");
        let pem = secret.to_pkcs8_pem(LineEnding::LF).expect("fresh key encodes");
        write_private_file(&self.path_for(activates, &key.kid), pem.as_bytes())
    }
}

/// Reads one PKCS#8 PEM private key, refusing a file every user may read.
pub(crate) fn read_key_file(path: &Path, activates_ms: u64) -> Result<SigningKey, KeyError> {
    crate::secret_file::check(path)?;
    let pem = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
        path: path.to_owned(),
        source,
    })?;
    let secret = SecretKey::from_pkcs8_pem(&pem).map_err(|_| KeyError::Malformed {
        path: path.to_owned(),
    })?;
    SigningKey::from_secret(&secret, activates_ms).ok_or_else(|| KeyError::Malformed {
        path: path.to_owned(),
    })
}

/// A fresh P-256 key as PKCS#8 PEM, and the signing key it makes.
pub(crate) fn generate_pem() -> (SigningKey, String) {
    let secret = SecretKey::random(&mut rand::rngs::OsRng);
    let key = SigningKey::from_secret(&secret, now_ms()).expect("fresh key encodes");
    let pem = secret.to_pkcs8_pem(LineEnding::LF).expect("fresh key encodes");
    (key, pem.to_string())
}

/// Writes a file only its owner may read, under a temporary name renamed last, so a reader never
/// sees half of it.
pub(crate) fn write_private_file(path: &Path, contents: &[u8]) -> Result<(), KeyError> {
    use std::io::Write as _;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt as _;

    let tmp = path.with_extension("tmp");
    let io = |source| KeyError::Io {
        path: tmp.clone(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(&tmp).map_err(io)?;
    file.write_all(contents).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    Ok(())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_load_creates_a_key_and_the_second_finds_the_same_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::new(dir.path(), Duration::from_secs(900));
        let first = store.load_or_create(true).unwrap();
        let second = store.load_or_create(true).unwrap();
        assert_eq!(first.active.kid, second.active.kid);
        assert_eq!(second.published.keys.len(), 1);
    }

    #[test]
    fn missing_keys_without_generation_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::new(dir.path(), Duration::from_secs(900));
        assert!(matches!(
            store.load_or_create(false),
            Err(KeyError::NoKeys { .. })
        ));
    }

    #[test]
    fn rotation_keeps_the_old_public_key_published() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::new(dir.path(), Duration::from_secs(900));
        let old = store.load_or_create(true).unwrap().active;
        let ring = store.rotate().unwrap();
        assert_ne!(ring.active.kid, old.kid);
        assert!(ring.published.find(&old.kid).is_some());
        assert!(ring.published.find(&ring.active.kid).is_some());
        assert_eq!(store.load().unwrap().active.kid, ring.active.kid);
    }

    #[test]
    fn a_key_retired_longer_than_the_token_ttl_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::new(dir.path(), Duration::from_secs(900));
        let now = now_ms();
        store.write_new(now - 10_000_000).unwrap();
        store.write_new(now - 5_000_000).unwrap();
        store.write_new(now - 100_000).unwrap();
        let ring = store.load().unwrap();
        // The middle key retired 100 s ago, within 900 s + leeway; the oldest retired 5,000 s ago.
        assert_eq!(ring.published.keys.len(), 2);
        let rotated = store.rotate().unwrap();
        assert_eq!(rotated.published.keys.len(), 3);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 3);
    }

    #[test]
    fn a_rotated_key_is_published_before_it_signs() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::new(dir.path(), Duration::from_secs(900))
            .with_activation_delay(Duration::from_secs(30));
        let first = store.load_or_create(true).unwrap().active;
        let ring = store.rotate().unwrap();
        assert_eq!(
            ring.active.kid, first.kid,
            "the new key waits out the activation delay"
        );
        assert_eq!(ring.published.keys.len(), 2, "but it is published at once");

        let now = now_ms();
        let later = KeyStore::new(dir.path(), Duration::from_secs(900))
            .with_activation_delay(Duration::from_secs(30));
        let keys = later.read_all().unwrap();
        let ring = later.ring(keys, now + 30_001);
        assert_ne!(ring.active.kid, first.kid, "after the delay the new key signs");
        assert!(
            ring.published.find(&first.kid).is_some(),
            "and the old one stays published"
        );
    }

    #[test]
    fn a_key_file_every_user_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::new(dir.path(), Duration::from_secs(900));
        store.load_or_create(true).unwrap();
        let key = std::fs::read_dir(dir.path())
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = store.load().unwrap_err();
        assert!(matches!(err, KeyError::Exposed(_)), "{err}");
        assert!(err.to_string().contains(&key.display().to_string()));
    }

    #[test]
    fn a_corrupt_key_file_is_reported_not_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("1-abc.pem");
        std::fs::write(&path, "not a key").unwrap();
        std::fs::set_permissions(
            &path,
            <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o600),
        )
        .unwrap();
        let store = KeyStore::new(dir.path(), Duration::from_secs(900));
        assert!(matches!(store.load(), Err(KeyError::Malformed { .. })));
    }
}
