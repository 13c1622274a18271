//! The customers service on a free loopback port over a fresh database and its backend's bus,
//! and helpers that publish identity's events and call the API as a customer.

use mercato_contracts::identity::UserRegistered;
use mercato_customers::Config;
use mercato_messaging::{Bus, Context, Envelope};
use mercato_testkit::auth::TestIssuer;
use mercato_testkit::listener::Listener;
use mercato_testkit::publish::publish_at;
use mercato_testkit::service::{Api, Backing, Instance};
use mercato_testkit::{PATIENCE, TestBackend, eventually};
use serde_json::Value;

/// A running customers service. Dropping it stops the service, then its bus and database.
pub struct TestApp {
    /// `url`, `get`, `post` and the `http` client, reached through `Deref`.
    pub api: Api,
    /// The bus the service reads identity's events from and publishes its own to.
    pub bus: Bus,
    _instance: Instance,
    // Declared last so the service stops before its broker and database go.
    backing: Backing,
}

pub async fn spawn_app(backend: TestBackend) -> TestApp {
    spawn_app_with(backend, |_| {}).await
}

/// Spawns the service after `customise` has adjusted its configuration.
pub async fn spawn_app_with(backend: TestBackend, customise: impl FnOnce(&mut Config)) -> TestApp {
    let backing = Backing::new(backend).await;
    let mut config = Config {
        service: backing.settings(),
        projection_poll_ms: 50,
    };
    customise(&mut config);
    let bus = backing.bus().await;
    let instance = Instance::run(mercato_customers::build(&config, bus.clone()).await);
    TestApp {
        api: Api::new(instance.addr),
        bus,
        _instance: instance,
        backing,
    }
}

/// A fresh user id.
pub fn user_id() -> String {
    format!("user-{}", uuid::Uuid::new_v4().simple())
}

mercato_testkit::deref_to_api!(TestApp);

impl TestApp {
    /// A customer's token for `user`.
    pub fn token(&self, user: &str) -> String {
        self.backing.issuer.token(user, &["customer"])
    }

    /// The issuer whose keys the service trusts.
    pub fn issuer(&self) -> &TestIssuer {
        &self.backing.issuer
    }

    /// Publishes identity's `UserRegistered` as identity's relay would, and returns it.
    pub async fn user_registered(&self, user: &str, email: &str, name: &str) -> Envelope {
        let event = UserRegistered {
            user_id: user.into(),
            email: email.into(),
            name: name.into(),
        };
        publish_at(&self.bus, "identity", user, 1, &event, &Context::default()).await
    }

    /// Registers `user` through the event and waits until the profile answers.
    pub async fn customer(&self, user: &str) -> Value {
        let email = format!("{user}@example.com");
        self.user_registered(user, &email, "Ada Lovelace").await;
        self.wait_for_profile(user).await
    }

    /// Polls `GET /api/customers/me` until the profile exists.
    pub async fn wait_for_profile(&self, user: &str) -> Value {
        eventually(PATIENCE, &format!("the profile of {user}"), || async {
            let response = self.get_me(user).await;
            if response.status() == 200 {
                Some(response.json().await.expect("a JSON profile"))
            } else {
                None
            }
        })
        .await
    }

    /// `method path` as `user`, with `body` as JSON when there is one.
    pub async fn as_user(
        &self,
        method: reqwest::Method,
        path: &str,
        user: &str,
        body: Option<&Value>,
    ) -> reqwest::Response {
        let mut request = self
            .http
            .request(method, self.url(path))
            .bearer_auth(self.token(user));
        if let Some(body) = body {
            request = request.json(body);
        }
        request.send().await.expect("the service answers")
    }

    pub async fn get_me(&self, user: &str) -> reqwest::Response {
        self.as_user(reqwest::Method::GET, "/api/customers/me", user, None)
            .await
    }

    pub async fn patch_me(&self, user: &str, body: &Value) -> reqwest::Response {
        self.as_user(reqwest::Method::PATCH, "/api/customers/me", user, Some(body))
            .await
    }

    pub async fn get_preferences(&self, user: &str) -> reqwest::Response {
        self.as_user(reqwest::Method::GET, "/api/customers/me/preferences", user, None)
            .await
    }

    pub async fn put_preferences(&self, user: &str, body: &Value) -> reqwest::Response {
        self.as_user(
            reqwest::Method::PUT,
            "/api/customers/me/preferences",
            user,
            Some(body),
        )
        .await
    }

    /// Customers' events as they arrive on the bus, read by a group of the test's own.
    pub async fn published(&self) -> Listener {
        Listener::join(&self.bus, "customers-it", mercato_contracts::customers::CATEGORY).await
    }
}
