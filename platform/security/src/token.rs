//! Access tokens: claims, signing, verification.
//!
//! Verification follows RFC 8725: the algorithm is pinned (ES256 only, so `none` and HS/RS
//! confusion are impossible), the token type must be `at+jwt`, issuer and audience are pinned,
//! `exp` and `nbf` are checked with a small leeway, and the key is looked up by `kid` in a trusted
//! [`KeySource`], never taken from the token.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};

use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation, decode, decode_header, encode};
use serde::{Deserialize, Serialize};

use crate::jwks::{Jwk, JwkSet};
use crate::keys::SigningKey;
use crate::verified::{Verified, VerifiedTokens};

/// The `typ` header of an access token (RFC 9068).
pub const ACCESS_TOKEN_TYPE: &str = "at+jwt";

/// The `typ` header of a service token: a type of its own, so a verifier of customers' access
/// tokens refuses a service token (and the other way round) before looking at any claim.
pub const SERVICE_TOKEN_TYPE: &str = "svc+jwt";

/// The claims Mercato puts in an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub exp: u64,
    pub iat: u64,
    pub nbf: u64,
    pub jti: String,
    #[serde(default)]
    pub roles: Vec<String>,
}

/// Why a token was refused, or could not be checked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is not a well-formed JWT")]
    Malformed,
    #[error("the token's algorithm is not accepted")]
    UnsupportedAlgorithm,
    #[error("the token is not of the type accepted here")]
    WrongType,
    #[error("the token was signed by an unknown key")]
    UnknownKey,
    #[error("the token's signature is invalid")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token was issued by another issuer")]
    WrongIssuer,
    #[error("the token is meant for another audience")]
    WrongAudience,
    #[error("the signing keys could not be fetched: {0}")]
    KeysUnavailable(String),
    #[error("the token could not be signed: {0}")]
    Signing(String),
}

impl TokenError {
    /// True when the fault is ours (keys unreachable), not the token's: answer 503, not 401.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::KeysUnavailable(_))
    }
}

/// Signs `claims` as an ES256 access token with `key`.
///
/// # Errors
/// [`TokenError::Signing`] if the key cannot sign.
pub fn sign(claims: &Claims, key: &SigningKey) -> Result<String, TokenError> {
    sign_as(claims, key, ACCESS_TOKEN_TYPE)
}

/// Signs `claims` as an ES256 service token ([`SERVICE_TOKEN_TYPE`]) with `key`.
///
/// # Errors
/// [`TokenError::Signing`] if the key cannot sign.
pub fn sign_service(claims: &Claims, key: &SigningKey) -> Result<String, TokenError> {
    sign_as(claims, key, SERVICE_TOKEN_TYPE)
}

/// Signs any claims with `key`, `typ` in the header.
pub(crate) fn sign_as<C: Serialize>(claims: &C, key: &SigningKey, typ: &str) -> Result<String, TokenError> {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(key.kid.clone());
    header.typ = Some(typ.into());
    encode(&header, claims, &key.encoding).map_err(|e| TokenError::Signing(e.to_string()))
}

/// A boxed future, so that key sources can be used as trait objects.
pub type KeyFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Option<Arc<DecodingKey>>, TokenError>> + Send + 'a>>;

/// Where a verifier finds the public key for a `kid`. Implementations must be trusted sources.
pub trait KeySource: Send + Sync {
    /// The key for `kid`, `Ok(None)` when the source has no such key.
    fn key<'a>(&'a self, kid: &'a str) -> KeyFuture<'a>;
}

/// Converts a published key to a verification key, refusing anything but P-256/ES256.
pub(crate) fn decoding_key(jwk: &Jwk) -> Option<DecodingKey> {
    let is_es256 = jwk.kty == "EC"
        && jwk.crv.as_deref() == Some("P-256")
        && jwk.alg.as_deref().is_none_or(|a| a == "ES256");
    if !is_es256 {
        return None;
    }
    DecodingKey::from_ec_components(jwk.x.as_deref()?, jwk.y.as_deref()?).ok()
}

/// A key set with its verification keys decoded once, when the set is loaded: a lookup per
/// request is then a map lookup, not a key built from its JWK.
#[derive(Debug, Default)]
pub struct PublishedKeys {
    set: JwkSet,
    decoding: HashMap<String, Arc<DecodingKey>>,
}

impl PublishedKeys {
    /// Decodes the usable (ES256, with a `kid`) keys of `set`.
    #[must_use]
    pub fn new(set: JwkSet) -> Self {
        let decoding = set
            .keys
            .iter()
            .filter_map(|jwk| Some((jwk.kid.clone()?, Arc::new(decoding_key(jwk)?))))
            .collect();
        Self { set, decoding }
    }

    /// The verification key for `kid`, if the set publishes a usable one.
    #[must_use]
    pub fn get(&self, kid: &str) -> Option<Arc<DecodingKey>> {
        self.decoding.get(kid).cloned()
    }

    /// The set as published.
    #[must_use]
    pub fn set(&self) -> &JwkSet {
        &self.set
    }
}

/// A key source over a key set held in memory (the identity service's own keys).
#[derive(Debug, Default)]
pub struct LocalKeys {
    keys: RwLock<PublishedKeys>,
}

impl LocalKeys {
    #[must_use]
    pub fn new(set: JwkSet) -> Self {
        Self {
            keys: RwLock::new(PublishedKeys::new(set)),
        }
    }

    /// Replaces the key set, after a rotation was picked up.
    pub fn replace(&self, set: JwkSet) {
        let keys = PublishedKeys::new(set);
        *self
            .keys
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = keys;
    }
}

impl KeySource for LocalKeys {
    fn key<'a>(&'a self, kid: &'a str) -> KeyFuture<'a> {
        let keys = self
            .keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Box::pin(std::future::ready(Ok(keys.get(kid))))
    }
}

/// What a verifier pins; the same settings tell the identity service what to put in tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VerifierConfig {
    pub issuer: String,
    pub audience: String,
    /// Clock skew tolerated on `exp` and `nbf`.
    pub leeway_secs: u64,
}

impl Default for VerifierConfig {
    fn default() -> Self {
        Self {
            issuer: "mercato-identity".into(),
            audience: "mercato".into(),
            leeway_secs: 30,
        }
    }
}

/// Verifies access tokens against a trusted key source, remembering the ones that passed (see
/// [`crate::verified`]); clones share what they remember.
#[derive(Clone)]
pub struct Verifier {
    config: VerifierConfig,
    /// The `typ` a token must carry: customers' access tokens, or service tokens.
    typ: &'static str,
    keys: Arc<dyn KeySource>,
    verified: Arc<VerifiedTokens>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("config", &self.config)
            .field("typ", &self.typ)
            .finish_non_exhaustive()
    }
}

const MAX_KID_LEN: usize = 128;

impl Verifier {
    /// A verifier of customers' access tokens (`at+jwt`).
    #[must_use]
    pub fn new(config: VerifierConfig, keys: Arc<dyn KeySource>) -> Self {
        Self::of_type(config, ACCESS_TOKEN_TYPE, keys)
    }

    /// A verifier of service tokens (`svc+jwt`); `config.audience` is the service itself.
    #[must_use]
    pub fn for_service_tokens(config: VerifierConfig, keys: Arc<dyn KeySource>) -> Self {
        Self::of_type(config, SERVICE_TOKEN_TYPE, keys)
    }

    fn of_type(config: VerifierConfig, typ: &'static str, keys: Arc<dyn KeySource>) -> Self {
        Self {
            config,
            typ,
            keys,
            verified: Arc::new(VerifiedTokens::new(crate::verified::CAPACITY)),
        }
    }

    /// This verifier remembering at most `capacity` verified tokens (at least
    /// [`crate::verified::MIN_CAPACITY`]) instead of [`crate::verified::CAPACITY`]; what it
    /// remembered so far is forgotten.
    #[must_use]
    pub fn with_verified_capacity(mut self, capacity: usize) -> Self {
        self.verified = Arc::new(VerifiedTokens::new(capacity));
        self
    }

    /// How many verified tokens this verifier (and its clones) remember now.
    #[must_use]
    pub fn verified_tokens(&self) -> usize {
        self.verified.len()
    }

    /// The verdict on `token` if it is one this verifier verified before (`None` otherwise): its
    /// claims while its time claims hold and its signing key is still published. Costs a lookup,
    /// no signature check, so a caller may ask before any screening meant for unknown tokens.
    pub async fn verify_known(&self, token: &str) -> Option<Result<Arc<Claims>, TokenError>> {
        let now = jsonwebtoken::get_current_timestamp();
        let verified = match self.verified.get(token, now, self.config.leeway_secs) {
            Ok(Some(verified)) => verified,
            Ok(None) => return None,
            Err(error) => return Some(Err(error)),
        };
        // The signature passed before; the key that made it must still be published.
        Some(match self.keys.key(&verified.kid).await {
            Ok(Some(_)) => Ok(verified.claims),
            Ok(None) => {
                self.verified.remove(token);
                Err(TokenError::UnknownKey)
            }
            Err(error) => Err(error),
        })
    }

    /// Checks `token` and returns its claims.
    ///
    /// # Errors
    /// A [`TokenError`] naming the first check that failed.
    pub async fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        self.verify_shared(token).await.map(Arc::unwrap_or_clone)
    }

    /// As [`verify`](Self::verify), the claims shared with the verifier's memory of the token
    /// instead of copied (every request of a client presents the same token).
    ///
    /// # Errors
    /// A [`TokenError`] naming the first check that failed.
    pub async fn verify_shared(&self, token: &str) -> Result<Arc<Claims>, TokenError> {
        match self.verify_known(token).await {
            Some(known) => known,
            None => self.verify_unknown(token).await,
        }
    }

    /// Checks a token [`verify_known`](Self::verify_known) did not know, signature included,
    /// and remembers it when it passes.
    ///
    /// # Errors
    /// A [`TokenError`] naming the first check that failed.
    pub async fn verify_unknown(&self, token: &str) -> Result<Arc<Claims>, TokenError> {
        let now = jsonwebtoken::get_current_timestamp();
        let leeway = self.config.leeway_secs;
        let (kid, claims) = self.verify_fully(token).await?;
        let claims = Arc::new(claims);
        let verified = Verified {
            kid: kid.into(),
            claims: Arc::clone(&claims),
        };
        self.verified.insert(token, verified, now, leeway);
        Ok(claims)
    }

    async fn verify_fully(&self, token: &str) -> Result<(String, Claims), TokenError> {
        let header = decode_header(token).map_err(|_| TokenError::Malformed)?;
        if header.alg != Algorithm::ES256 {
            return Err(TokenError::UnsupportedAlgorithm);
        }
        if !header
            .typ
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case(self.typ))
        {
            return Err(TokenError::WrongType);
        }
        let kid = header.kid.ok_or(TokenError::Malformed)?;
        if kid.is_empty() || kid.len() > MAX_KID_LEN {
            return Err(TokenError::UnknownKey);
        }
        let key = self.keys.key(&kid).await?.ok_or(TokenError::UnknownKey)?;
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[&self.config.audience]);
        validation.leeway = self.config.leeway_secs;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "nbf", "iat", "iss", "aud", "sub"]);
        decode::<Claims>(token, &key, &validation)
            .map(|data| (kid, data.claims))
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                match e.kind() {
                    ErrorKind::InvalidSignature => TokenError::BadSignature,
                    ErrorKind::ExpiredSignature => TokenError::Expired,
                    ErrorKind::ImmatureSignature => TokenError::NotYetValid,
                    ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
                    ErrorKind::InvalidAudience => TokenError::WrongAudience,
                    ErrorKind::InvalidAlgorithm => TokenError::UnsupportedAlgorithm,
                    _ => TokenError::Malformed,
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn claims(exp_in: i64) -> Claims {
        let now = now();
        Claims {
            iss: "mercato".into(),
            aud: "mercato-api".into(),
            sub: "user-1".into(),
            exp: now.saturating_add_signed(exp_in),
            iat: now,
            nbf: now,
            jti: "j".into(),
            roles: vec!["customer".into()],
        }
    }

    fn setup() -> (SigningKey, Verifier) {
        let key = SigningKey::generate();
        let (keys, config) = trusting(&key);
        (key, Verifier::new(config, keys))
    }

    /// A key source publishing `key`, and what the tests' tokens pin.
    fn trusting(key: &SigningKey) -> (Arc<LocalKeys>, VerifierConfig) {
        let keys = LocalKeys::new(JwkSet {
            keys: vec![key.public.clone()],
        });
        let config = VerifierConfig {
            issuer: "mercato".into(),
            audience: "mercato-api".into(),
            leeway_secs: 30,
        };
        (Arc::new(keys), config)
    }

    fn forge(header: &serde_json::Value, claims: &Claims, signature: &[u8]) -> String {
        let h = URL_SAFE_NO_PAD.encode(header.to_string());
        let c = URL_SAFE_NO_PAD.encode(serde_json::to_string(claims).unwrap());
        format!("{h}.{c}.{}", URL_SAFE_NO_PAD.encode(signature))
    }

    #[tokio::test]
    async fn a_signed_token_verifies_and_keeps_its_claims() {
        let (key, verifier) = setup();
        let c = claims(900);
        let token = sign(&c, &key).unwrap();
        assert_eq!(verifier.verify(&token).await.unwrap(), c);
    }

    #[tokio::test]
    async fn a_token_verified_before_is_refused_once_its_key_is_withdrawn() {
        let key = SigningKey::generate();
        let keys = Arc::new(LocalKeys::new(JwkSet {
            keys: vec![key.public.clone()],
        }));
        let verifier = Verifier::new(
            VerifierConfig {
                issuer: "mercato".into(),
                audience: "mercato-api".into(),
                leeway_secs: 30,
            },
            keys.clone(),
        );
        let token = sign(&claims(900), &key).unwrap();
        for _ in 0..2 {
            assert_eq!(verifier.verify(&token).await.unwrap().sub, "user-1");
        }
        keys.replace(JwkSet::default());
        assert_eq!(verifier.verify(&token).await, Err(TokenError::UnknownKey));
        keys.replace(JwkSet {
            keys: vec![key.public.clone()],
        });
        assert!(verifier.verify(&token).await.is_ok(), "checked in full again");
    }

    #[tokio::test]
    async fn a_verified_token_altered_by_one_byte_is_checked_in_full_and_refused() {
        let (key, verifier) = setup();
        let token = sign(&claims(900), &key).unwrap();
        verifier.verify(&token).await.unwrap();
        let mut altered = token.clone().into_bytes();
        let last = altered.len() - 2;
        altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
        let altered = String::from_utf8(altered).unwrap();
        assert_eq!(verifier.verify(&altered).await, Err(TokenError::BadSignature));
    }

    #[tokio::test]
    async fn expired_tokens_are_refused() {
        let (key, verifier) = setup();
        let token = sign(&claims(-120), &key).unwrap();
        assert_eq!(verifier.verify(&token).await, Err(TokenError::Expired));
    }

    #[tokio::test]
    async fn alg_none_is_refused() {
        let (key, verifier) = setup();
        let header = serde_json::json!({"alg": "none", "typ": "at+jwt", "kid": key.kid});
        let token = forge(&header, &claims(900), b"");
        assert_eq!(verifier.verify(&token).await, Err(TokenError::Malformed));
    }

    #[tokio::test]
    async fn hmac_with_the_public_key_as_secret_is_refused() {
        let (key, verifier) = setup();
        let secret = serde_json::to_vec(&key.public).unwrap();
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(key.kid.clone());
        header.typ = Some(ACCESS_TOKEN_TYPE.into());
        let token = encode(
            &header,
            &claims(900),
            &jsonwebtoken::EncodingKey::from_secret(&secret),
        )
        .unwrap();
        assert_eq!(
            verifier.verify(&token).await,
            Err(TokenError::UnsupportedAlgorithm)
        );
    }

    #[tokio::test]
    async fn a_tampered_payload_fails_the_signature() {
        let (key, verifier) = setup();
        let token = sign(&claims(900), &key).unwrap();
        let mut parts: Vec<&str> = token.split('.').collect();
        let mut admin = claims(900);
        admin.roles = vec!["admin".into()];
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_string(&admin).unwrap());
        parts[1] = &payload;
        assert_eq!(
            verifier.verify(&parts.join(".")).await,
            Err(TokenError::BadSignature)
        );
    }

    #[tokio::test]
    async fn a_key_outside_the_trusted_set_is_unknown() {
        let (_, verifier) = setup();
        let stranger = SigningKey::generate();
        let token = sign(&claims(900), &stranger).unwrap();
        assert_eq!(verifier.verify(&token).await, Err(TokenError::UnknownKey));
    }

    #[tokio::test]
    async fn issuer_and_audience_are_pinned() {
        let (key, verifier) = setup();
        let mut c = claims(900);
        c.iss = "evil".into();
        assert_eq!(
            verifier.verify(&sign(&c, &key).unwrap()).await,
            Err(TokenError::WrongIssuer)
        );
        let mut c = claims(900);
        c.aud = "other".into();
        assert_eq!(
            verifier.verify(&sign(&c, &key).unwrap()).await,
            Err(TokenError::WrongAudience)
        );
    }

    #[tokio::test]
    async fn a_token_without_the_access_type_is_refused() {
        let (key, verifier) = setup();
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(key.kid.clone());
        let token = encode(&header, &claims(900), &key.encoding).unwrap();
        assert_eq!(verifier.verify(&token).await, Err(TokenError::WrongType));
    }

    #[tokio::test]
    async fn access_and_service_tokens_are_never_taken_for_each_other() {
        let (key, customers) = setup();
        let (keys, config) = trusting(&key);
        let services = Verifier::for_service_tokens(config, keys);
        let service_token = sign_service(&claims(900), &key).unwrap();
        let access_token = sign(&claims(900), &key).unwrap();
        assert_eq!(customers.verify(&service_token).await, Err(TokenError::WrongType));
        assert_eq!(services.verify(&access_token).await, Err(TokenError::WrongType));
        assert!(services.verify(&service_token).await.is_ok());
        assert!(customers.verify(&access_token).await.is_ok());
    }

    #[tokio::test]
    async fn garbage_is_malformed() {
        let (_, verifier) = setup();
        for junk in ["", "abc", "a.b.c", "....", "eyJ.eyJ.x"] {
            assert_eq!(verifier.verify(junk).await, Err(TokenError::Malformed), "{junk}");
        }
    }
}
