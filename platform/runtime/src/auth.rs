//! The verified caller of a request.
//!
//! A service installs its [`Verifier`] as a request extension; handlers that need a caller take a
//! [`Caller`] argument. The token is verified here too, not only at the gateway: a service never
//! trusts identity headers a client could have forged by reaching it directly.

use axum::extract::FromRequestParts;
use http::request::Parts;
use http::{HeaderMap, header};
use mercato_security::{Claims, JwksClient, JwksClientConfig, TokenError, Verifier, VerifierConfig};

use crate::problem::Problem;

/// The authenticated subject of a request and its roles.
#[derive(Debug, Clone)]
pub struct Caller {
    pub subject: String,
    pub roles: Vec<String>,
    pub claims: Claims,
}

impl Caller {
    #[must_use]
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }

    /// `403` unless the caller has `role`.
    ///
    /// # Errors
    /// [`Problem::forbidden`] naming the missing role.
    pub fn require_role(&self, role: &str) -> Result<(), Problem> {
        if self.has_role(role) {
            Ok(())
        } else {
            Err(Problem::forbidden(format!("this action needs the {role} role")))
        }
    }
}

/// The bearer token of a request: `Ok(None)` when there is no `Authorization` header.
///
/// # Errors
/// The header is present but is not `Bearer <token>`.
pub fn bearer_token(headers: &HeaderMap) -> Result<Option<&str>, Problem> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    // UTF-8 rather than `to_str`'s visible-ASCII check, which costs a branch per byte of a
    // long token: a token with anything but base64url and dots fails verification anyway.
    let value = std::str::from_utf8(value.as_bytes())
        .map_err(|_| Problem::unauthorized("the Authorization header is not readable", true))?;
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(Problem::unauthorized(
            "use the Bearer authentication scheme",
            true,
        ));
    }
    Ok(Some(token))
}

/// The answer for a token that failed verification.
#[must_use]
pub fn token_problem(error: &TokenError) -> Problem {
    if error.is_transient() {
        tracing::warn!(%error, "cannot verify tokens");
        Problem::unavailable("tokens cannot be verified right now", 1)
    } else {
        Problem::unauthorized(error.to_string(), true)
    }
}

/// Verifies the request's bearer token.
///
/// # Errors
/// `401` for a missing or bad token, `503` when keys are unavailable.
pub async fn authenticate(verifier: &Verifier, headers: &HeaderMap) -> Result<Claims, Problem> {
    let token = bearer_token(headers)?
        .ok_or_else(|| Problem::unauthorized("this resource needs a bearer token", false))?;
    verifier.verify(token).await.map_err(|e| token_problem(&e))
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let Some(verifier) = parts.extensions.get::<Verifier>().cloned() else {
            tracing::error!("a route takes a Caller but the service installed no Verifier");
            return Err(Problem::internal());
        };
        let claims = authenticate(&verifier, &parts.headers).await?;
        Ok(Self {
            subject: claims.sub.clone(),
            roles: claims.roles.clone(),
            claims,
        })
    }
}

/// A verifier for a service that checks tokens against identity's published keys.
#[must_use]
pub fn jwks_verifier(auth: VerifierConfig, jwks_url: &str) -> Verifier {
    jwks_verifier_over(auth, jwks_url, None)
}

/// As [`jwks_verifier`], fetching the keys over mutual TLS when `tls` is given.
#[must_use]
pub fn jwks_verifier_over(
    auth: VerifierConfig,
    jwks_url: &str,
    tls: Option<&rustls::ClientConfig>,
) -> Verifier {
    Verifier::new(auth, jwks(jwks_url, tls))
}

/// A verifier of service tokens meant for `service`, against identity's published keys, fetched
/// over mutual TLS when `tls` is given.
#[must_use]
pub fn service_token_verifier(
    auth: &VerifierConfig,
    service: &str,
    jwks_url: &str,
    tls: Option<&rustls::ClientConfig>,
) -> Verifier {
    let config = VerifierConfig {
        audience: service.to_owned(),
        ..auth.clone()
    };
    Verifier::for_service_tokens(config, jwks(jwks_url, tls))
}

fn jwks(url: &str, tls: Option<&rustls::ClientConfig>) -> std::sync::Arc<JwksClient> {
    let config = JwksClientConfig {
        url: url.to_owned(),
        max_age: std::time::Duration::from_secs(300),
        min_refresh_interval: std::time::Duration::from_secs(1),
        timeout: std::time::Duration::from_secs(2),
    };
    std::sync::Arc::new(match tls {
        Some(tls) => JwksClient::with_http(
            config,
            crate::tls::reqwest_builder(reqwest::Client::builder(), tls),
        ),
        None => JwksClient::new(config),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn token(value: &'static [u8]) -> Result<Option<String>, u16> {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_bytes(value).unwrap());
        bearer_token(&headers)
            .map(|t| t.map(str::to_owned))
            .map_err(|problem| problem.status)
    }

    #[test]
    fn a_bearer_token_is_taken_from_its_scheme_trimmed() {
        assert_eq!(token(b"Bearer a.b.c"), Ok(Some("a.b.c".into())));
        assert_eq!(token(b"bearer  a.b.c "), Ok(Some("a.b.c".into())));
        assert_eq!(bearer_token(&HeaderMap::new()).unwrap(), None);
    }

    #[test]
    fn another_scheme_an_empty_token_or_unreadable_bytes_are_401() {
        assert_eq!(token(b"Basic dXNlcjpwYXNz"), Err(401));
        assert_eq!(token(b"Bearer"), Err(401));
        assert_eq!(token(b"Bearer   "), Err(401));
        assert_eq!(token(b"Bearer \xff\xfe"), Err(401), "not UTF-8");
    }
}
