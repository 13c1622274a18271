//! Service tokens: how one service proves to another who it is (OAuth 2 `client_credentials`).
//!
//! A service authenticates to identity's token endpoint with a key of its own (`private_key_jwt`,
//! RFC 7523: a short assertion it signs with ES256) or a client secret, both read from files in
//! `[service_tokens] keys_dir`:
//!
//! - `<service>.pem`: the service's private key (PKCS#8), mounted into that service only;
//! - `<service>.pub.jwk`: its public half, which identity reads;
//! - `<service>.secret`: a client secret, when keys are not used (identity and the service both
//!   read it).
//!
//! Identity answers with a short-lived token whose `sub` is the service and whose `aud` is the
//! one service it may call with it; its `typ` is [`SERVICE_TOKEN_TYPE`], so it is never taken for
//! a customer's access token, nor a customer's for it.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, Validation, decode, decode_header};
use serde::{Deserialize, Serialize};

use crate::jwks::Jwk;
use crate::keys::{KeyError, SigningKey};

/// `client_assertion_type` of a `private_key_jwt` assertion (RFC 7523 §2.2).
pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The longest an assertion may live: it is made for one request.
pub const MAX_ASSERTION_SECS: u64 = 300;

/// `[service_tokens]`: whether internal APIs require service tokens, and who may call whom.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceTokensConfig {
    /// Internal APIs refuse calls without a service token, and clients fetch and send one.
    pub enabled: bool,
    /// Lifetime of an issued service token.
    pub ttl_secs: u64,
    /// Where the services' keys and secrets are (see the module docs).
    pub keys_dir: PathBuf,
    /// Create a missing key pair for every service at start (one process holding all of them:
    /// embedded mode); off when keys come from mounted secrets.
    pub generate_keys: bool,
    /// The services each service may ask a token for: caller → callees.
    pub calls: BTreeMap<String, Vec<String>>,
}

impl Default for ServiceTokensConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            ttl_secs: 300,
            keys_dir: PathBuf::from("{data_dir}/service-keys"),
            generate_keys: true,
            calls: BTreeMap::from([(
                "orders".to_owned(),
                vec!["customers".to_owned(), "inventory".to_owned()],
            )]),
        }
    }
}

impl ServiceTokensConfig {
    /// Whether `caller` may hold a token for `callee`.
    #[must_use]
    pub fn may_call(&self, caller: &str, callee: &str) -> bool {
        self.calls
            .get(caller)
            .is_some_and(|callees| callees.iter().any(|c| c == callee))
    }

    /// The services that call others: the clients identity knows.
    pub fn callers(&self) -> impl Iterator<Item = &str> {
        self.calls.keys().map(String::as_str)
    }
}

/// A service name usable as a file name: lower-case letters, digits and dashes.
#[must_use]
pub fn is_service_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn private_key_path(dir: &Path, service: &str) -> PathBuf {
    dir.join(format!("{service}.pem"))
}

fn public_key_path(dir: &Path, service: &str) -> PathBuf {
    dir.join(format!("{service}.pub.jwk"))
}

fn secret_path(dir: &Path, service: &str) -> PathBuf {
    dir.join(format!("{service}.secret"))
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Creates `service`'s key pair in `dir` unless its private key is there, and writes the public
/// half of whichever private key is there. Processes sharing `dir` may race: the private key is
/// linked into place only if absent, so one wins and every process then publishes the same
/// public half.
///
/// # Errors
/// The directory or files cannot be written, or the private key there cannot be read.
pub fn ensure_client_key(dir: &Path, service: &str) -> Result<(), KeyError> {
    let private = private_key_path(dir, service);
    if !private.exists() {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let (_, pem) = crate::keys::generate_pem();
        let tmp = dir.join(format!(".{service}.{}.pem", uuid_like()));
        crate::keys::write_private_file(&tmp, pem.as_bytes())?;
        let linked = std::fs::hard_link(&tmp, &private);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(io(&private)(e)),
            _ => {}
        }
    }
    let key = crate::keys::read_key_file(&private, 0)?;
    let public = public_key_path(dir, service);
    let tmp = dir.join(format!(".{service}.{}.jwk", uuid_like()));
    let jwk = serde_json::to_vec(&key.public).expect("a JWK serializes");
    std::fs::write(&tmp, jwk).map_err(io(&tmp))?;
    std::fs::rename(&tmp, &public).map_err(io(&public))
}

/// A name no other process picks at the same moment.
fn uuid_like() -> String {
    use rand::RngCore as _;
    format!("{}-{:016x}", std::process::id(), rand::rngs::OsRng.next_u64())
}

/// How a service authenticates to the token endpoint.
#[derive(Clone)]
pub enum ClientCredential {
    /// `private_key_jwt`: assertions signed with this key.
    Key(Box<SigningKey>),
    /// `client_secret_post`.
    Secret(String),
}

impl std::fmt::Debug for ClientCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Key(key) => f.debug_tuple("Key").field(&key.kid).finish(),
            Self::Secret(_) => f.write_str("Secret(***)"),
        }
    }
}

/// Reads a secret file, refusing one every user may read; trailing whitespace is not part of it.
fn read_secret(path: &Path) -> Result<Option<String>, KeyError> {
    crate::secret_file::check(path)?;
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text.trim_end().to_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(path)(e)),
    }
}

/// `service`'s own credential from `dir`: its private key if present, else its secret.
///
/// # Errors
/// A file others may read, a malformed key, or neither file.
pub fn client_credential(dir: &Path, service: &str) -> Result<ClientCredential, KeyError> {
    let private = private_key_path(dir, service);
    if private.exists() {
        return crate::keys::read_key_file(&private, 0).map(|key| ClientCredential::Key(Box::new(key)));
    }
    read_secret(&secret_path(dir, service))?
        .map(ClientCredential::Secret)
        .ok_or(KeyError::NoKeys { path: private })
}

/// What identity knows of a client: its public key and its secret, each if present.
#[derive(Default)]
pub struct KnownClient {
    pub public_key: Option<jsonwebtoken::DecodingKey>,
    pub secret: Option<String>,
}

/// Reads what identity holds for `service` in `dir`, each time: a key replaced on disk is used
/// by the next request.
///
/// # Errors
/// A file others may read, or one that cannot be read or parsed.
pub fn known_client(dir: &Path, service: &str) -> Result<KnownClient, KeyError> {
    let public = public_key_path(dir, service);
    let public_key = match std::fs::read(&public) {
        Ok(bytes) => {
            let jwk: Jwk =
                serde_json::from_slice(&bytes).map_err(|_| KeyError::Malformed { path: public.clone() })?;
            Some(crate::token::decoding_key(&jwk).ok_or(KeyError::Malformed { path: public })?)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io(&public)(e)),
    };
    Ok(KnownClient {
        public_key,
        secret: read_secret(&secret_path(dir, service))?,
    })
}

/// Compares two secrets in time that depends only on their digests.
#[must_use]
pub fn secrets_match(given: &str, known: &str) -> bool {
    use sha2::{Digest as _, Sha256};
    let (a, b) = (Sha256::digest(given.as_bytes()), Sha256::digest(known.as_bytes()));
    a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The claims of a client assertion (RFC 7523 §3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssertionClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub exp: u64,
    pub iat: u64,
    pub jti: String,
}

/// An assertion that `client` is calling, for the token endpoint of `issuer`, valid `lifetime`
/// seconds.
///
/// # Errors
/// The key cannot sign.
pub fn sign_assertion(
    client: &str,
    issuer: &str,
    key: &SigningKey,
    now: u64,
    lifetime: u64,
    jti: &str,
) -> Result<String, crate::TokenError> {
    let claims = AssertionClaims {
        iss: client.to_owned(),
        sub: client.to_owned(),
        aud: issuer.to_owned(),
        exp: now + lifetime,
        iat: now,
        jti: jti.to_owned(),
    };
    crate::token::sign_as(&claims, key, "JWT")
}

/// Why an assertion was refused. Each is an `invalid_client` answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssertionError {
    #[error("the client assertion is not a well-formed ES256 JWT")]
    Malformed,
    #[error("the client assertion's iss and sub must both name the client")]
    NotTheClient,
    #[error("the client assertion's signature does not verify with the client's key")]
    BadSignature,
    #[error("the client assertion has expired")]
    Expired,
    #[error("the client assertion lives longer than {MAX_ASSERTION_SECS} s")]
    TooLong,
    #[error("the client assertion is meant for another audience")]
    WrongAudience,
    #[error("the client assertion was used before")]
    Replayed,
}

/// The client an assertion names, read before its signature is checked (to find its key).
///
/// # Errors
/// [`AssertionError::Malformed`] when the payload cannot be read.
pub fn assertion_subject(assertion: &str) -> Result<String, AssertionError> {
    #[derive(Deserialize)]
    struct Subject {
        sub: String,
    }
    let payload = assertion.split('.').nth(1).ok_or(AssertionError::Malformed)?;
    let bytes = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| AssertionError::Malformed)?;
    serde_json::from_slice::<Subject>(&bytes)
        .map(|s| s.sub)
        .map_err(|_| AssertionError::Malformed)
}

/// Checks assertions for one token endpoint and remembers their `jti` until they expire, so an
/// assertion is accepted once (RFC 7523 §3 item 7).
#[derive(Debug)]
pub struct AssertionChecker {
    issuer: String,
    leeway_secs: u64,
    seen: Mutex<HashMap<(String, String), u64>>,
}

impl AssertionChecker {
    /// Assertions must name `issuer` (identity's issuer) as their audience.
    #[must_use]
    pub fn new(issuer: &str, leeway_secs: u64) -> Self {
        Self {
            issuer: issuer.to_owned(),
            leeway_secs,
            seen: Mutex::default(),
        }
    }

    /// Checks `assertion` from `client` against its public `key` at `now`.
    ///
    /// # Errors
    /// The first check that failed.
    pub fn check(
        &self,
        assertion: &str,
        client: &str,
        key: &jsonwebtoken::DecodingKey,
        now: u64,
    ) -> Result<AssertionClaims, AssertionError> {
        let header = decode_header(assertion).map_err(|_| AssertionError::Malformed)?;
        if header.alg != Algorithm::ES256 {
            return Err(AssertionError::Malformed);
        }
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_audience(&[&self.issuer]);
        validation.set_issuer(&[client]);
        validation.sub = Some(client.to_owned());
        validation.leeway = self.leeway_secs;
        validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
        let claims = decode::<AssertionClaims>(assertion, key, &validation)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                match e.kind() {
                    ErrorKind::InvalidSignature => AssertionError::BadSignature,
                    ErrorKind::ExpiredSignature => AssertionError::Expired,
                    ErrorKind::InvalidAudience => AssertionError::WrongAudience,
                    ErrorKind::InvalidIssuer | ErrorKind::InvalidSubject => AssertionError::NotTheClient,
                    _ => AssertionError::Malformed,
                }
            })?
            .claims;
        if claims.exp > now + MAX_ASSERTION_SECS + self.leeway_secs {
            return Err(AssertionError::TooLong);
        }
        if claims.jti.is_empty() || claims.jti.len() > 256 {
            return Err(AssertionError::Malformed);
        }
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Only signed assertions get here, so what is kept grows with the clients' own calls.
        let leeway = self.leeway_secs;
        seen.retain(|_, exp| exp.saturating_add(leeway) >= now);
        let entry = (client.to_owned(), claims.jti.clone());
        if seen.contains_key(&entry) {
            return Err(AssertionError::Replayed);
        }
        seen.insert(entry, claims.exp);
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn decoding(key: &SigningKey) -> jsonwebtoken::DecodingKey {
        crate::token::decoding_key(&key.public).unwrap()
    }

    #[test]
    fn an_assertion_is_accepted_once() {
        let key = SigningKey::generate();
        let checker = AssertionChecker::new("mercato-identity", 30);
        let assertion = sign_assertion("orders", "mercato-identity", &key, now(), 60, "a").unwrap();
        assert_eq!(assertion_subject(&assertion).unwrap(), "orders");
        assert_eq!(
            checker
                .check(&assertion, "orders", &decoding(&key), now())
                .unwrap()
                .sub,
            "orders"
        );
        assert_eq!(
            checker.check(&assertion, "orders", &decoding(&key), now()),
            Err(AssertionError::Replayed)
        );
    }

    #[test]
    fn bad_assertions_are_refused_by_reason() {
        let key = SigningKey::generate();
        let other = SigningKey::generate();
        let checker = AssertionChecker::new("mercato-identity", 30);
        let at = now();
        let check = |assertion: &str, client: &str, key: &SigningKey| {
            checker.check(assertion, client, &decoding(key), at)
        };
        let good = |jti: &str| sign_assertion("orders", "mercato-identity", &key, at, 60, jti).unwrap();
        assert_eq!(
            check(&good("1"), "orders", &other),
            Err(AssertionError::BadSignature)
        );
        assert_eq!(
            check(&good("2"), "payments", &key),
            Err(AssertionError::NotTheClient)
        );
        let expired = sign_assertion("orders", "mercato-identity", &key, at - 600, 60, "3").unwrap();
        assert_eq!(check(&expired, "orders", &key), Err(AssertionError::Expired));
        let long = sign_assertion("orders", "mercato-identity", &key, at, 3_600, "4").unwrap();
        assert_eq!(check(&long, "orders", &key), Err(AssertionError::TooLong));
        let elsewhere = sign_assertion("orders", "evil", &key, at, 60, "5").unwrap();
        assert_eq!(
            check(&elsewhere, "orders", &key),
            Err(AssertionError::WrongAudience)
        );
        assert_eq!(check("a.b.c", "orders", &key), Err(AssertionError::Malformed));
        assert_eq!(assertion_subject("junk"), Err(AssertionError::Malformed));
    }

    #[test]
    fn a_generated_key_pair_is_read_back_by_both_ends() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        ensure_client_key(dir.path(), "orders").unwrap();
        let ClientCredential::Key(key) = client_credential(dir.path(), "orders").unwrap() else {
            panic!("a key was generated");
        };
        let known = known_client(dir.path(), "orders").unwrap();
        let assertion = sign_assertion("orders", "i", &key, now(), 60, "j").unwrap();
        let checker = AssertionChecker::new("i", 0);
        assert!(
            checker
                .check(&assertion, "orders", known.public_key.as_ref().unwrap(), now())
                .is_ok()
        );
        ensure_client_key(dir.path(), "orders").unwrap();
        let ClientCredential::Key(again) = client_credential(dir.path(), "orders").unwrap() else {
            panic!("the key is still there");
        };
        assert_eq!(again.kid, key.kid, "an existing key is kept");
        let private = dir.path().join("orders.pem");
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            client_credential(dir.path(), "orders"),
            Err(KeyError::Exposed(_))
        ));
    }

    #[test]
    fn a_secret_file_is_the_credential_when_there_is_no_key() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            client_credential(dir.path(), "orders"),
            Err(KeyError::NoKeys { .. })
        ));
        let path = dir.path().join("orders.secret");
        std::fs::write(&path, "s3cret\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let credential = client_credential(dir.path(), "orders").unwrap();
        assert_eq!(format!("{credential:?}"), "Secret(***)", "never printed");
        let known = known_client(dir.path(), "orders").unwrap();
        assert!(secrets_match("s3cret", known.secret.as_deref().unwrap()));
        assert!(!secrets_match("s3cre", known.secret.as_deref().unwrap()));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o604)).unwrap();
        assert!(known_client(dir.path(), "orders").is_err());
    }

    #[test]
    fn only_plain_service_names_are_names() {
        for good in ["orders", "payment-sandbox", "a1"] {
            assert!(is_service_name(good), "{good}");
        }
        for bad in ["", "../x", "Orders", "a/b", "a.b"] {
            assert!(!is_service_name(bad), "{bad}");
        }
    }
}
