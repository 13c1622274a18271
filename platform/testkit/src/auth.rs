//! Tokens for testing a service without the identity service: a signing key, a real JWKS
//! endpoint on a loopback port that publishes it, and tokens for any subject and roles.

use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use mercato_security::{Claims, JwkSet, SigningKey, VerifierConfig};

/// An issuer of test tokens with its JWKS served over HTTP.
#[derive(Debug)]
pub struct TestIssuer {
    key: SigningKey,
    jwks_url: String,
    config: VerifierConfig,
    server: tokio::task::JoinHandle<()>,
}

impl TestIssuer {
    /// Starts the JWKS endpoint.
    ///
    /// # Panics
    /// When no loopback port can be bound.
    pub async fn start() -> Self {
        let key = SigningKey::generate();
        let set = Arc::new(JwkSet {
            keys: vec![key.public.clone()],
        });
        let app = Router::new().route(
            "/.well-known/jwks.json",
            get(move || {
                let set = Arc::clone(&set);
                async move { axum::Json((*set).clone()) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("bound address");
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            key,
            jwks_url: format!("http://{addr}/.well-known/jwks.json"),
            config: VerifierConfig::default(),
            server,
        }
    }

    /// Where the keys are published.
    #[must_use]
    pub fn jwks_url(&self) -> &str {
        &self.jwks_url
    }

    /// The issuer and audience the tokens carry, for the service under test.
    #[must_use]
    pub fn config(&self) -> VerifierConfig {
        self.config.clone()
    }

    /// A valid access token for `subject` with `roles`.
    ///
    /// # Panics
    /// Never for a generated key.
    #[must_use]
    pub fn token(&self, subject: &str, roles: &[&str]) -> String {
        let mut claims = self.claims(subject, &self.config.audience);
        claims.roles = roles.iter().map(|r| (*r).to_owned()).collect();
        mercato_security::sign(&claims, &self.key).expect("a generated key signs")
    }

    /// Claims valid for 15 minutes from `subject` to `audience`, to change before signing.
    #[must_use]
    pub fn claims(&self, subject: &str, audience: &str) -> Claims {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Claims {
            iss: self.config.issuer.clone(),
            aud: audience.to_owned(),
            sub: subject.to_owned(),
            exp: now + 900,
            iat: now,
            nbf: now,
            jti: uuid::Uuid::new_v4().to_string(),
            roles: Vec::new(),
        }
    }

    /// A valid service token from the service `subject` to the service `audience`.
    #[must_use]
    pub fn service_token(&self, subject: &str, audience: &str) -> String {
        self.sign_service(&self.claims(subject, audience))
    }

    /// `claims` signed as a service token with the published key.
    ///
    /// # Panics
    /// Never for a generated key.
    #[must_use]
    pub fn sign_service(&self, claims: &Claims) -> String {
        mercato_security::sign_service(claims, &self.key).expect("a generated key signs")
    }
}

impl Drop for TestIssuer {
    fn drop(&mut self) {
        self.server.abort();
    }
}
