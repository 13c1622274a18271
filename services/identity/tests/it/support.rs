//! The identity service on a free loopback port over a fresh database, and helpers to talk to it.

use std::net::SocketAddr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mercato_identity::{Config, IdentityConfig};
use mercato_kit::ServiceSettings;
use mercato_messaging::Bus;
use mercato_security::VerifierConfig;
use mercato_testkit::TestBackend;
use mercato_testkit::service::{Api, Backing, Instance};
use serde_json::{Value, json};

pub use mercato_testkit::PATIENCE;
pub use mercato_testkit::problem::{expect_problem_of, invalid_fields};

/// A password every test user can share: it meets the policy.
pub const PASSWORD: &str = "correct horse battery";

/// A running identity service. Dropping it stops the service, then its bus and database.
pub struct TestApp {
    pub addr: SocketAddr,
    /// `url`, `get`, `post` and the `http` client, reached through `Deref`.
    pub api: Api,
    /// The configuration the service was built from (database URL, key directory).
    pub config: Config,
    /// The bus the service publishes to.
    pub bus: Bus,
    instance: Instance,
    // Declared last so the service is told to stop before its bus and database go.
    _backing: Backing,
}

/// How a token request is encoded.
#[derive(Debug, Clone, Copy)]
pub enum Body {
    Form,
    Json,
}

impl Body {
    pub const BOTH: [Self; 2] = [Self::Form, Self::Json];
}

/// The two tokens of a successful grant.
#[derive(Debug, Clone)]
pub struct Tokens {
    pub access: String,
    pub refresh: String,
}

pub async fn spawn_app(backend: TestBackend) -> TestApp {
    spawn_app_with(backend, |_| {}).await
}

/// Spawns the service after `customise` has adjusted its configuration.
pub async fn spawn_app_with(backend: TestBackend, customise: impl FnOnce(&mut IdentityConfig)) -> TestApp {
    spawn_configured(backend, |config| customise(&mut config.identity)).await
}

/// Spawns the service after `customise` has adjusted its whole configuration.
pub async fn spawn_configured(backend: TestBackend, customise: impl FnOnce(&mut Config)) -> TestApp {
    let backing = Backing::new(backend).await;
    let identity = IdentityConfig {
        keys_dir: backing.database().dir().join("keys"),
        ..IdentityConfig::default()
    };
    let mut config = Config {
        service: ServiceSettings {
            // Identity issues the tokens, so it checks them against its own issuer and keys.
            auth: VerifierConfig::default(),
            ..backing.settings()
        },
        identity,
    };
    customise(&mut config);
    let bus = backing.bus().await;
    let instance = Instance::run(mercato_identity::build(&config, bus.clone()).await);
    let addr = instance.addr;
    TestApp {
        addr,
        api: Api::new(addr),
        config,
        bus,
        instance,
        _backing: backing,
    }
}

mercato_testkit::deref_to_api!(TestApp);

impl TestApp {
    /// Stops the service and returns what `run_until_stopped` returned.
    pub async fn stop(&mut self) -> std::io::Result<()> {
        self.instance.stop().await
    }

    /// `POST /api/identity/register` with a JSON body.
    pub async fn register(&self, body: &Value) -> reqwest::Response {
        self.post("/api/identity/register")
            .json(body)
            .send()
            .await
            .expect("register answers")
    }

    /// Registers a user that must be accepted, and returns the answer's body.
    pub async fn register_user(&self, email: &str, name: &str) -> Value {
        let response = self
            .register(&json!({"email": email, "password": PASSWORD, "name": name}))
            .await;
        assert_eq!(response.status(), 201, "registering {email}");
        response.json().await.expect("a JSON user")
    }

    /// `POST /api/identity/token` with `params` encoded as `body` says.
    pub async fn token(&self, body: Body, params: &[(&str, &str)]) -> reqwest::Response {
        let request = self.post("/api/identity/token");
        let request = match body {
            Body::Form => request.form(params),
            Body::Json => {
                let object: serde_json::Map<String, Value> =
                    params.iter().map(|(k, v)| ((*k).to_owned(), json!(v))).collect();
                request.json(&object)
            }
        };
        request.send().await.expect("token answers")
    }

    /// A password grant.
    pub async fn password_grant(&self, body: Body, username: &str, password: &str) -> reqwest::Response {
        let params = [
            ("grant_type", "password"),
            ("username", username),
            ("password", password),
        ];
        self.token(body, &params).await
    }

    /// A password grant that must succeed.
    pub async fn login(&self, email: &str, password: &str) -> Tokens {
        expect_tokens(self.password_grant(Body::Form, email, password).await).await
    }

    /// Registers a customer and logs in as them.
    pub async fn customer(&self, email: &str) -> Tokens {
        self.register_user(email, "Ada Lovelace").await;
        self.login(email, PASSWORD).await
    }

    /// A refresh-token grant.
    pub async fn refresh(&self, refresh_token: &str) -> reqwest::Response {
        self.token(
            Body::Form,
            &[("grant_type", "refresh_token"), ("refresh_token", refresh_token)],
        )
        .await
    }

    /// `GET /api/identity/me` with a bearer token.
    pub async fn me(&self, access_token: &str) -> reqwest::Response {
        self.get("/api/identity/me")
            .bearer_auth(access_token)
            .send()
            .await
            .expect("me answers")
    }

    /// `GET /.well-known/jwks.json`.
    pub async fn jwks(&self) -> Value {
        let response = self
            .get("/.well-known/jwks.json")
            .send()
            .await
            .expect("jwks answers");
        assert_eq!(response.status(), 200);
        response.json().await.expect("a JSON key set")
    }

    /// The `kid`s the JWKS publishes.
    pub async fn published_kids(&self) -> Vec<String> {
        let jwks = self.jwks().await;
        jwks["keys"]
            .as_array()
            .expect("a keys array")
            .iter()
            .map(|k| k["kid"].as_str().expect("every key has a kid").to_owned())
            .collect()
    }
}

/// Checks a successful token answer and returns its tokens.
pub async fn expect_tokens(response: reqwest::Response) -> Tokens {
    assert_eq!(response.status(), 200, "a token answer");
    let body: Value = response.json().await.expect("a JSON token answer");
    Tokens {
        access: body["access_token"].as_str().expect("access_token").to_owned(),
        refresh: body["refresh_token"].as_str().expect("refresh_token").to_owned(),
    }
}

/// Checks that `response` is the OAuth 2 error `code` (RFC 6749 §5.2), and returns its body.
pub async fn expect_oauth_error(response: reqwest::Response, code: &str) -> Value {
    expect_oauth_error_status(response, 400, code).await
}

/// [`expect_oauth_error`] with another status (`invalid_client` is `401`).
pub async fn expect_oauth_error_status(response: reqwest::Response, status: u16, code: &str) -> Value {
    let slug = format!("oauth-{}", code.replace('_', "-"));
    let body = expect_problem_of(response, status, &slug).await;
    assert_eq!(body["error"], code, "problem body: {body}");
    assert!(body["error_description"].is_string(), "problem body: {body}");
    body
}

/// One base64url JSON segment of a JWT: 0 is the header, 1 the claims.
pub fn jwt_part(token: &str, index: usize) -> Value {
    let segment = token
        .split('.')
        .nth(index)
        .unwrap_or_else(|| panic!("a JWT has three segments: {token}"));
    let bytes = URL_SAFE_NO_PAD.decode(segment).expect("a base64url JWT segment");
    serde_json::from_slice(&bytes).expect("a JSON JWT segment")
}

/// The `kid` a token was signed with.
pub fn kid_of(token: &str) -> String {
    jwt_part(token, 0)["kid"]
        .as_str()
        .expect("the header has a kid")
        .to_owned()
}

/// The roles an access token carries.
pub fn roles_of(token: &str) -> Vec<String> {
    serde_json::from_value(jwt_part(token, 1)["roles"].clone()).expect("a roles array")
}
