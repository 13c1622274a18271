//! The operations console's security, through a whole system in this process (embedded): the
//! session cookie's flags, no token in any answer or URL, CSRF and origin checks on actions, a
//! customer's `403`, the Content-Security-Policy, and the audit line of each action.
//! `browser` drives the pages in headless Chromium.

mod browser;
mod webdriver;

use std::io::Write;
use std::sync::{Arc, Mutex};

use mercato_testkit::{PATIENCE, TestBackend, eventually};
use reqwest::header::{CONTENT_SECURITY_POLICY, COOKIE, ORIGIN, SET_COOKIE};
use serde_json::{Value, json};

use crate::support::{System, access_token, customer_at, login, started, unique_email};

/// A signed-in console: the cookie the gateway set and the CSRF token it gave the page.
pub struct Session {
    pub cookie: String,
    pub csrf: String,
    pub set_cookie: String,
    pub answer: Value,
}

pub async fn sign_in(system: &System, email: &str, origin: &str) -> reqwest::Response {
    post_sign_in(
        system,
        origin,
        &json!({"email": email, "password": "correct horse"}),
    )
    .await
}

/// Posts `body` to the console's sign-in from `origin`.
async fn post_sign_in(system: &System, origin: &str, body: &Value) -> reqwest::Response {
    system
        .http
        .post(system.url("/console/api/session"))
        .header(ORIGIN, origin)
        .json(body)
        .send()
        .await
        .unwrap()
}

pub async fn session(system: &System, email: &str) -> Session {
    let response = sign_in(system, email, &system.gateway).await;
    assert_eq!(response.status(), 200);
    let set_cookie = response.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    let answer: Value = response.json().await.unwrap();
    Session {
        cookie,
        csrf: answer["csrf"].as_str().unwrap().to_owned(),
        set_cookie,
        answer,
    }
}

fn console_call(
    system: &System,
    method: reqwest::Method,
    path: &str,
    cookie: &str,
) -> reqwest::RequestBuilder {
    system
        .http
        .request(method, system.url(path))
        .header(COOKIE, cookie)
}

#[tokio::test]
async fn signing_in_sets_an_http_only_strict_cookie_for_the_console_and_hands_out_no_token() {
    let (_fixture, system) = started(TestBackend::Sqlite).await;
    let email = system.admin_account().await;
    let session = session(&system, &email).await;

    let flags: Vec<&str> = session.set_cookie.split("; ").collect();
    assert!(flags.contains(&"HttpOnly"), "{flags:?}");
    assert!(flags.contains(&"SameSite=Strict"), "{flags:?}");
    assert!(flags.contains(&"Path=/console"), "{flags:?}");
    assert!(!flags.contains(&"Secure"), "plain HTTP: {flags:?}");
    // The page learns who signed in and its CSRF token; never the token itself.
    let token = session.cookie.trim_start_matches("mercato_console=");
    assert!(token.len() > 100, "the cookie holds the access token");
    assert!(!session.answer.to_string().contains(token));
    assert_eq!(session.answer.as_object().unwrap().len(), 3, "{}", session.answer);
    // And how long its access token lives, to renew it before then.
    let expires_in = session.answer["expires_in"].as_u64().unwrap();
    assert!((890..=900).contains(&expires_in), "{}", session.answer);
    let again = console_call(
        &system,
        reqwest::Method::GET,
        "/console/api/session",
        &session.cookie,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(again.status(), 200);
    assert!(!again.text().await.unwrap().contains(token));

    // Loaded over TLS (behind a terminating proxy), the cookie is Secure.
    let tls = sign_in(&system, &email, "https://shop.example").await;
    assert_eq!(tls.status(), 403, "another origin may not sign in");
    let host = system.gateway.trim_start_matches("http://");
    let tls = sign_in(&system, &email, &format!("https://{host}")).await;
    assert_eq!(tls.status(), 200);
    assert!(tls.headers()[SET_COOKIE].to_str().unwrap().ends_with("; Secure"));

    // A wrong password, and a body that is not a sign-in, are problems, with no cookie.
    let wrong = post_sign_in(
        &system,
        &system.gateway,
        &json!({"email": email, "password": "wrong horse"}),
    )
    .await;
    assert_eq!(wrong.status(), 401);
    assert!(wrong.headers().get(SET_COOKIE).is_none());
    let malformed = post_sign_in(&system, &system.gateway, &json!({"user": email})).await;
    assert_eq!(malformed.status(), 422);

    // Signing out clears the cookie.
    let out = console_call(
        &system,
        reqwest::Method::DELETE,
        "/console/api/session",
        &session.cookie,
    )
    .header(ORIGIN, &system.gateway)
    .header("x-csrf-token", &session.csrf)
    .send()
    .await
    .unwrap();
    assert_eq!(out.status(), 204);
    assert!(out.headers()[SET_COOKIE].to_str().unwrap().contains("Max-Age=0"));
}

#[tokio::test]
async fn a_customer_gets_403_and_no_session_gets_401() {
    let (_fixture, system) = started(TestBackend::Sqlite).await;
    let email = unique_email();
    let customer = customer_at(&system.http, &system.gateway, &email).await;

    let refused = sign_in(&system, &email, &system.gateway).await;
    assert_eq!(refused.status(), 403);
    assert!(refused.headers().get(SET_COOKIE).is_none());
    // A customer's token put in the cookie by hand is refused as well.
    let cookie = format!("mercato_console={customer}");
    for path in [
        "/console/api/system",
        "/console/api/traffic",
        "/console/api/messages",
    ] {
        let answer = console_call(&system, reqwest::Method::GET, path, &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 403, "{path}");
    }
    // No cookie, or a bearer token instead of the cookie: not signed in.
    let admin = system.admin().await;
    let bare = system
        .send_anonymous(reqwest::Method::GET, "/console/api/system", None)
        .await;
    assert_eq!(bare.status(), 401);
    let bearer = system
        .send(reqwest::Method::GET, "/console/api/system", &admin)
        .await;
    assert_eq!(bearer.status(), 401);
    let garbage = console_call(
        &system,
        reqwest::Method::GET,
        "/console/api/system",
        "mercato_console=x.y.z",
    )
    .send()
    .await
    .unwrap();
    assert_eq!(garbage.status(), 401);
}

/// Log lines written in this process (each test runs in its own process).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines(&self) -> Vec<Value> {
        let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

#[tokio::test]
async fn an_action_needs_the_csrf_token_and_the_console_origin_and_is_audited_with_the_admin() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber).expect("this test's process has no subscriber yet");
    let (_fixture, system) = started(TestBackend::Sqlite).await;
    let email = system.admin_account().await;
    let session = session(&system, &email).await;
    let admin_id = session.answer["admin"].as_str().unwrap().to_owned();
    let path = "/console/api/traffic/inventory";
    let body = json!({"green_percent": 0});
    // The status of the PUT sent from `origin` with the CSRF token `csrf`, each if given.
    let put = |origin: Option<&str>, csrf: Option<&str>| {
        let mut request = console_call(&system, reqwest::Method::PUT, path, &session.cookie).json(&body);
        if let Some(origin) = origin {
            request = request.header(ORIGIN, origin);
        }
        if let Some(csrf) = csrf {
            request = request.header("x-csrf-token", csrf);
        }
        async move { request.send().await.unwrap().status() }
    };
    let console = Some(system.gateway.as_str());
    let own = Some(session.csrf.as_str());
    let forged = "0".repeat(64);
    // Another session's CSRF token does not fit this session.
    let other = session_of_another_admin(&system).await;
    let refused = [
        (console, None),
        (console, Some(forged.as_str())),
        (Some("http://shop.example"), own),
        (None, own),
        (console, Some(other.csrf.as_str())),
    ];
    for (origin, csrf) in refused {
        assert_eq!(put(origin, csrf).await, 403, "from {origin:?} with {csrf:?}");
    }

    assert_eq!(put(console, own).await, 200);
    let bad = console_call(&system, reqwest::Method::PUT, path, &session.cookie)
        .header(ORIGIN, &system.gateway)
        .header("x-csrf-token", &session.csrf)
        .json(&json!({"green_percent": 101}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 422);

    let audit: Vec<Value> = captured
        .lines()
        .into_iter()
        .filter(|l| l["target"] == "mercato::audit")
        .collect();
    let by_admin = |action: &str| {
        audit
            .iter()
            .filter(|l| {
                l["admin"] == admin_id.as_str() && l["action"].as_str().unwrap_or("").starts_with(action)
            })
            .count()
    };
    assert_eq!(by_admin("sign-in"), 1, "{audit:?}");
    assert_eq!(
        by_admin("refused"),
        5,
        "every refused action is audited: {audit:?}"
    );
    assert_eq!(
        by_admin("traffic"),
        2,
        "the change and the refused one: {audit:?}"
    );
    assert!(
        audit.iter().any(|l| l["action"] == "traffic green 0%"
            && l["on"] == "inventory"
            && l["outcome"] == "ok: green 0%"),
        "{audit:?}"
    );
}

async fn session_of_another_admin(system: &System) -> Session {
    let email = system.admin_account().await;
    session(system, &email).await
}

#[tokio::test]
async fn pages_and_answers_carry_a_policy_without_inline_script_or_style() {
    let (_fixture, system) = started(TestBackend::Sqlite).await;
    let page = system.http.get(system.url("/console")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let policy = page.headers()[CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        policy.contains("script-src 'self'") && policy.contains("style-src 'self'"),
        "{policy}"
    );
    assert!(
        !policy.contains("unsafe-inline") && !policy.contains("unsafe-eval"),
        "{policy}"
    );
    assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
    let html = page.text().await.unwrap();
    // Every script is a file; no inline script, handler or style attribute.
    assert_eq!(
        html.matches("<script").count(),
        html.matches("<script type=\"module\" src=").count()
    );
    assert!(!html.contains(" style=") && !html.contains("<style") && !html.contains(" onclick="));
    for file in mercato_gateway::console::assets::FILES
        .iter()
        .map(|(name, _, _)| name)
    {
        let asset = system
            .send_anonymous(reqwest::Method::GET, &format!("/console/assets/{file}"), None)
            .await;
        assert_eq!(asset.status(), 200, "{file}");
        assert!(asset.headers().contains_key(CONTENT_SECURITY_POLICY));
        let text = asset.text().await.unwrap();
        assert!(
            !text.contains("localStorage") && !text.contains("sessionStorage"),
            "{file}"
        );
        assert!(
            !text.contains("innerHTML") && !text.contains("document.cookie"),
            "{file}"
        );
    }
    let missing = system
        .send_anonymous(reqwest::Method::GET, "/console/assets/nope.js", None)
        .await;
    assert_eq!(missing.status(), 404);
    let unknown = system
        .send_anonymous(reqwest::Method::GET, "/console/api/nope", None)
        .await;
    assert_eq!(unknown.status(), 404);
    assert!(unknown.headers().contains_key(CONTENT_SECURITY_POLICY));
    // The proxy still serves the API beside the console.
    let token = access_token(&login(&system.http, &system.gateway, &system.admin_account().await).await);
    assert_eq!(system.get_status("/api/identity/me", &token).await, 200);
}

/// Places an order and waits until its saga ended in `status`; returns its id.
pub async fn order_ending(system: &System, token: &str, card: &str, status: &str) -> String {
    let placed = system
        .send_json(
            reqwest::Method::POST,
            "/api/orders",
            token,
            &crate::checkout::order_body("MUG-001", 1, card),
        )
        .await;
    assert_eq!(placed.status(), 201);
    let id = placed.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    eventually(PATIENCE, &format!("order {id} {status}"), || async {
        let order = system.get_json(&format!("/api/orders/{id}"), token).await;
        (order["status"] == status).then_some(())
    })
    .await;
    id
}

#[tokio::test]
async fn an_order_reads_through_the_console_and_the_services_admin_reads_refuse_customers() {
    let (_fixture, system) = started(TestBackend::Sqlite).await;
    let email = unique_email();
    let customer = customer_at(&system.http, &system.gateway, &email).await;
    let id = order_ending(&system, &customer, "tok_decline", "cancelled").await;
    let admin = session(&system, &system.admin_account().await).await;
    let read = |path: String| {
        let cookie = admin.cookie.clone();
        let system = &system;
        async move {
            let answer = console_call(system, reqwest::Method::GET, &path, &cookie)
                .send()
                .await
                .unwrap();
            (
                answer.status().as_u16(),
                answer.json::<Value>().await.unwrap_or_default(),
            )
        }
    };
    let (status, order) = read(format!("/console/api/orders/{id}")).await;
    assert_eq!(status, 200);
    let types: Vec<&str> = order["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["type"].as_str())
        .collect();
    assert!(
        types.contains(&"ReleaseStock") && types.ends_with(&["OrderCancelled"]),
        "{types:?}"
    );
    let cancelled = order["events"].as_array().unwrap().last().unwrap();
    assert_eq!(cancelled["data"]["reason"], "payment_declined");
    assert_eq!(order["payment"]["status"], "failed", "{order}");
    assert!(order["payment"]["attempts"].as_i64().unwrap() >= 1);
    let calls = order["payment"]["provider_attempts"].as_array().unwrap();
    assert_eq!(calls.len(), 1, "a decline is one call: {order}");
    assert_eq!(calls[0]["outcome"], "declined");

    let (status, found) = read(format!("/console/api/orders?email={}", email.replace('@', "%40"))).await;
    assert_eq!(status, 200);
    assert_eq!(found["orders"][0]["id"], id.as_str());
    let (status, _) = read("/console/api/orders?email=nobody%40example.com".into()).await;
    assert_eq!(status, 404);
    let (status, _) = read("/console/api/orders/no-such-order".into()).await;
    assert_eq!(status, 404);
    let (status, funnel) = read("/console/api/funnel".into()).await;
    assert_eq!(status, 200);
    assert_eq!(funnel["minutes"].as_array().unwrap().len(), 30);

    // The services' admin reads answer an admin's token only.
    let reads = [
        ("identity", format!("/admin/users?email={email}")),
        ("orders", format!("/admin/orders/{id}")),
        ("orders", "/admin/funnel".to_owned()),
        ("payments", format!("/admin/payments/{id}")),
        ("notifications", "/admin/notifications?event_id=e".to_owned()),
        ("customers", "/admin/dead-letters".to_owned()),
    ];
    let token = admin.cookie.trim_start_matches("mercato_console=");
    for (service, path) in &reads {
        let url = format!("{}{path}", system.urls[*service]);
        let refused = system.http.get(&url).bearer_auth(&customer).send().await.unwrap();
        assert_eq!(refused.status(), 403, "{url}");
        let allowed = system.http.get(&url).bearer_auth(token).send().await.unwrap();
        assert_eq!(allowed.status(), 200, "{url}");
    }
    // A window too long, and a notifications query that names no event.
    let unprocessable = [
        ("orders", "/admin/funnel?minutes=1000"),
        ("notifications", "/admin/notifications"),
    ];
    for (service, path) in unprocessable {
        let url = format!("{}{path}", system.urls[service]);
        let refused = system.http.get(&url).bearer_auth(token).send().await.unwrap();
        assert_eq!(refused.status(), 422, "{url}");
    }
    let replay = format!(
        "{}/admin/dead-letters/no-such-letter/replay",
        system.urls["customers"]
    );
    let missing = system.http.post(&replay).bearer_auth(token).send().await.unwrap();
    assert_eq!(missing.status(), 404);
}

/// The `Set-Cookie` headers of an answer, as sent.
fn set_cookies(response: &reqwest::Response) -> Vec<String> {
    response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

/// The `name=value` part of the `Set-Cookie` for `name`.
fn cookie_named(set_cookies: &[String], name: &str) -> String {
    let found = set_cookies
        .iter()
        .find(|c| c.starts_with(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} cookie in {set_cookies:?}"));
    found.split(';').next().unwrap().to_owned()
}

async fn renew(system: &System, cookie: &str, origin: &str) -> reqwest::Response {
    system
        .http
        .post(system.url("/console/api/session/refresh"))
        .header(ORIGIN, origin)
        .header(COOKIE, cookie)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn an_ended_access_token_is_renewed_by_the_refresh_cookie_and_signing_out_revokes_it() {
    let (_fixture, system) = started(TestBackend::Sqlite).await;
    let email = system.admin_account().await;
    let signed_in = sign_in(&system, &email, &system.gateway).await;
    assert_eq!(signed_in.status(), 200);
    let cookies = set_cookies(&signed_in);
    let refresh_flags: Vec<&str> = cookies
        .iter()
        .find(|c| c.starts_with("mercato_console_refresh="))
        .unwrap()
        .split("; ")
        .collect();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/console/api/session"] {
        assert!(refresh_flags.contains(&flag), "{refresh_flags:?}");
    }
    let refresh = cookie_named(&cookies, "mercato_console_refresh");
    let token = refresh.trim_start_matches("mercato_console_refresh=");
    assert!(
        !signed_in.text().await.unwrap().contains(token),
        "the page never sees it"
    );

    // The access token ended (the browser drops its cookie at Max-Age; here, one that no
    // longer verifies): the page's call gets 401 ...
    let ended = "mercato_console=ended";
    let refused = console_call(&system, reqwest::Method::GET, "/console/api/system", ended);
    assert_eq!(refused.send().await.unwrap().status(), 401);
    // ... and renewing from another site is refused; from the console, it works.
    assert_eq!(
        renew(&system, &refresh, "http://evil.example").await.status(),
        403
    );
    let renewed = renew(&system, &refresh, &system.gateway).await;
    assert_eq!(renewed.status(), 200);
    let cookies = set_cookies(&renewed);
    let access = cookie_named(&cookies, "mercato_console");
    let rotated = cookie_named(&cookies, "mercato_console_refresh");
    assert_ne!(rotated, refresh, "identity rotates the refresh token");
    let csrf = renewed.json::<Value>().await.unwrap()["csrf"]
        .as_str()
        .unwrap()
        .to_owned();
    let again = console_call(&system, reqwest::Method::GET, "/console/api/system", &access);
    assert_eq!(again.send().await.unwrap().status(), 200);

    // A refresh token identity refuses ends the session: 401, and both cookies removed.
    let refused = renew(&system, "mercato_console_refresh=made-up", &system.gateway).await;
    assert_eq!(refused.status(), 401);
    let removed = set_cookies(&refused);
    assert_eq!(removed.len(), 2, "{removed:?}");
    assert!(removed.iter().all(|c| c.contains("Max-Age=0")), "{removed:?}");

    // Signing out revokes the refresh token at identity: the cookie, kept by someone, renews
    // nothing afterwards.
    let signed_out = console_call(
        &system,
        reqwest::Method::DELETE,
        "/console/api/session",
        &format!("{access}; {rotated}"),
    )
    .header(ORIGIN, &system.gateway)
    .header("x-csrf-token", &csrf)
    .send()
    .await
    .unwrap();
    assert_eq!(signed_out.status(), 204);
    assert_eq!(renew(&system, &rotated, &system.gateway).await.status(), 401);
}
