//! Signing in to the console and proving, on every call, who is calling and that the call came
//! from the console's own pages.
//!
//! The access token identity issues is kept in an `HttpOnly`, `SameSite=Strict` cookie scoped to
//! `/console` (`Secure` when the page was loaded over TLS): scripts never see it and it is never
//! in a URL. The refresh token is kept the same way in a second cookie scoped to
//! `/console/api/session`, so it travels only to the calls that renew or end the session. The page
//! learns how long its access token lives (`expires_in`, never the token) and asks for a renewal
//! (`POST /console/api/session/refresh`) shortly before it ends, which trades the refresh token
//! with identity for a new pair; a call that still answers `401` (a clock that slept, a token
//! revoked) renews the same way and is retried. Signing out revokes the
//! refresh token at identity. A state-changing call must also come from the console's origin (`Origin`) and carry
//! the session's CSRF token in `x-csrf-token`; that token is a digest of the access token, so
//! every gateway derives the same one and a page on another site cannot know it.

use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use mercato_runtime::{Json, Problem};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::Console;
use crate::admin::ADMIN_ROLE;

pub const COOKIE: &str = "mercato_console";
pub const REFRESH_COOKIE: &str = "mercato_console_refresh";
/// Where the refresh cookie is sent: the session's own calls only.
const REFRESH_PATH: &str = "/console/api/session";
pub const CSRF_HEADER: &str = "x-csrf-token";

/// An admin calling through the console.
#[derive(Debug, Clone)]
pub struct ConsoleAdmin {
    pub subject: String,
    pub token: String,
    /// When the access token ends, in seconds since the epoch.
    pub expires_at: u64,
}

/// The per-session CSRF token.
#[must_use]
pub fn csrf_token(access_token: &str) -> String {
    let digest = Sha256::new()
        .chain_update(b"mercato console csrf\0")
        .chain_update(access_token.as_bytes())
        .finalize();
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The call comes from a page of this gateway: its `Origin` names the host it was sent to.
fn same_origin(headers: &HeaderMap) -> bool {
    let (Some(origin), Some(host)) = (
        headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()),
        headers.get(header::HOST).and_then(|v| v.to_str().ok()),
    ) else {
        return false;
    };
    origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
        .is_some_and(|authority| authority.eq_ignore_ascii_case(host))
}

fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

impl FromRequestParts<Console> for ConsoleAdmin {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, console: &Console) -> Result<Self, Problem> {
        let token = cookie_value(&parts.headers, COOKIE)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Problem::unauthorized("sign in to the console", false))?
            .to_owned();
        let claims = console
            .verifier
            .verify(&token)
            .await
            .map_err(|_| Problem::unauthorized("the console session has ended; sign in again", true))?;
        if !claims.roles.iter().any(|r| r == ADMIN_ROLE) {
            return Err(Problem::forbidden("the console needs the admin role"));
        }
        if changes_state(&parts.method) {
            let sent = parts.headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
            if !same_origin(&parts.headers) || sent != Some(csrf_token(&token).as_str()) {
                audit(&claims.sub, "refused", parts.uri.path(), "cross-site request");
                return Err(Problem::forbidden(
                    "the request did not come from the console (origin or CSRF token)",
                ));
            }
        }
        Ok(Self {
            subject: claims.sub,
            token,
            expires_at: claims.exp,
        })
    }
}

/// Writes the audit line of a console action: who, what, on what, and how it ended.
pub fn audit(admin: &str, action: &str, target: &str, outcome: &str) {
    tracing::info!(target: "mercato::audit", admin, action, on = target, outcome, "console action");
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignIn {
    email: String,
    password: String,
}

/// What the page learns of its session: never the token, only who, the CSRF token, and the
/// seconds the access token has left, so the page renews it before a call is refused.
#[derive(Debug, Serialize)]
pub struct SessionView {
    pub admin: String,
    pub csrf: String,
    pub expires_in: u64,
}

/// Seconds from now until `exp` (seconds since the epoch); 0 once it has passed.
fn seconds_until(exp: u64) -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    exp.saturating_sub(now)
}

#[derive(Debug, Deserialize)]
struct Tokens {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
    #[serde(default)]
    refresh_token: Option<String>,
}

fn cookie(token: &str, max_age: u64, secure: bool) -> HeaderValue {
    cookie_at(COOKIE, "/console", token, Some(max_age), secure)
}

/// The refresh cookie: no `Max-Age` (it ends with the browser; identity bounds its life) unless
/// it is being removed.
fn refresh_cookie(token: &str, secure: bool) -> HeaderValue {
    let max_age = token.is_empty().then_some(0);
    cookie_at(REFRESH_COOKIE, REFRESH_PATH, token, max_age, secure)
}

fn cookie_at(name: &str, path: &str, value: &str, max_age: Option<u64>, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let max_age = max_age.map(|s| format!("; Max-Age={s}")).unwrap_or_default();
    let text = format!("{name}={value}; Path={path}; HttpOnly; SameSite=Strict{max_age}{secure}");
    HeaderValue::from_str(&text)
        .unwrap_or_else(|_| HeaderValue::from_static("mercato_console=; Path=/console; Max-Age=0"))
}

/// Both cookies removed.
fn end_session(response: &mut Response, secure: bool) {
    let headers = response.headers_mut();
    headers.append(header::SET_COOKIE, cookie("", 0, secure));
    headers.append(header::SET_COOKIE, refresh_cookie("", secure));
}

fn over_tls(headers: &HeaderMap) -> bool {
    headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|o| o.starts_with("https://"))
}

/// `POST /console/api/session`: signs in through identity's token endpoint; only an admin gets
/// a session.
pub async fn sign_in(console: &Console, headers: &HeaderMap, body: SignIn) -> Result<Response, Problem> {
    if !same_origin(headers) {
        return Err(Problem::forbidden("sign in from the console's own page"));
    }
    let form = [
        ("grant_type", "password"),
        ("username", body.email.as_str()),
        ("password", body.password.as_str()),
    ];
    let Some(tokens) = grant(console, &form).await? else {
        audit(&body.email, "sign-in", "console", "wrong credentials");
        return Err(Problem::unauthorized("wrong e-mail or password", false));
    };
    admin_session(console, &tokens, over_tls(headers), "sign-in").await
}

/// Asks identity for tokens by `form`'s grant; `None` when identity refused the grant.
async fn grant(console: &Console, form: &[(&str, &str)]) -> Result<Option<Tokens>, Problem> {
    let answer = console
        .call(&console.config.identity_upstream, "/api/identity/token", |r| {
            r.form(form)
        })
        .await?;
    if answer.status().is_client_error() {
        return Ok(None);
    }
    if !answer.status().is_success() {
        return Err(Problem::unavailable(
            "identity cannot sign anyone in right now",
            1,
        ));
    }
    answer
        .json()
        .await
        .map(Some)
        .map_err(|_| Problem::unavailable("identity answered something unexpected", 1))
}

/// The session `tokens` open, if they are an admin's: the page's view, and both cookies set.
async fn admin_session(
    console: &Console,
    tokens: &Tokens,
    secure: bool,
    action: &str,
) -> Result<Response, Problem> {
    let claims = console
        .verifier
        .verify(&tokens.access_token)
        .await
        .map_err(|_| Problem::unavailable("identity's token could not be verified", 1))?;
    if !claims.roles.iter().any(|r| r == ADMIN_ROLE) {
        audit(&claims.sub, action, "console", "not an admin");
        return Err(Problem::forbidden("the console needs the admin role"));
    }
    audit(&claims.sub, action, "console", "ok");
    let max_age = tokens.expires_in.unwrap_or_else(|| seconds_until(claims.exp));
    let view = SessionView {
        admin: claims.sub,
        csrf: csrf_token(&tokens.access_token),
        expires_in: max_age,
    };
    let mut response = Json(view).into_response();
    let headers = response.headers_mut();
    headers.append(header::SET_COOKIE, cookie(&tokens.access_token, max_age, secure));
    if let Some(refresh) = &tokens.refresh_token {
        headers.append(header::SET_COOKIE, refresh_cookie(refresh, secure));
    }
    Ok(response)
}

/// `POST /console/api/session/refresh`: a new access token (and refresh token, rotated by
/// identity) for the refresh cookie. No CSRF token can be asked for, since the page's came from
/// the access token that ended; the origin check and the `SameSite=Strict` cookie stand for it.
/// A refresh token identity refuses ends the session: `401`, both cookies removed.
pub async fn refresh(console: &Console, headers: &HeaderMap) -> Result<Response, Problem> {
    if !same_origin(headers) {
        return Err(Problem::forbidden(
            "renew the session from the console's own page",
        ));
    }
    let secure = over_tls(headers);
    let ended = || {
        let mut response =
            Problem::unauthorized("the console session has ended; sign in again", false).into_response();
        end_session(&mut response, secure);
        response
    };
    let Some(token) = cookie_value(headers, REFRESH_COOKIE).filter(|t| !t.is_empty()) else {
        return Ok(ended());
    };
    let form = [("grant_type", "refresh_token"), ("refresh_token", token)];
    match grant(console, &form).await? {
        Some(tokens) => admin_session(console, &tokens, secure, "session renewed").await,
        None => {
            audit("unknown", "session renewal", "console", "refresh token refused");
            Ok(ended())
        }
    }
}

/// `GET /console/api/session`: who is signed in, and the CSRF token for the page's calls.
pub fn current(admin: &ConsoleAdmin) -> SessionView {
    SessionView {
        admin: admin.subject.clone(),
        csrf: csrf_token(&admin.token),
        expires_in: seconds_until(admin.expires_at),
    }
}

/// `DELETE /console/api/session`: signs out: the refresh token is revoked at identity (so a
/// copy of it renews nothing) and both cookies are removed.
pub async fn sign_out(console: &Console, admin: &ConsoleAdmin, headers: &HeaderMap) -> Response {
    let revoked = match cookie_value(headers, REFRESH_COOKIE).filter(|t| !t.is_empty()) {
        Some(token) => {
            let form = [("token", token), ("token_type_hint", "refresh_token")];
            let answer = console
                .call(&console.config.identity_upstream, "/api/identity/revoke", |r| {
                    r.form(&form)
                })
                .await;
            match answer {
                Ok(a) if a.status().is_success() => "ok",
                // The cookies still go; the token then lives until identity's expiry.
                _ => "signed out; identity did not revoke the refresh token",
            }
        }
        None => "ok (no refresh token)",
    };
    audit(&admin.subject, "sign-out", "console", revoked);
    let mut response = StatusCode::NO_CONTENT.into_response();
    end_session(&mut response, over_tls(headers));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (k.clone(), HeaderValue::from_str(v).unwrap()))
            .collect()
    }

    #[test]
    fn the_origin_must_name_the_host_the_request_was_sent_to() {
        let same = headers(&[
            (header::ORIGIN, "http://127.0.0.1:8080"),
            (header::HOST, "127.0.0.1:8080"),
        ]);
        let other = headers(&[
            (header::ORIGIN, "http://evil.example"),
            (header::HOST, "127.0.0.1:8080"),
        ]);
        let none = headers(&[(header::HOST, "127.0.0.1:8080")]);
        assert!(same_origin(&same));
        assert!(!same_origin(&other));
        assert!(!same_origin(&none));
    }

    #[test]
    fn the_csrf_token_depends_on_the_session_and_is_not_the_token() {
        assert_eq!(csrf_token("a"), csrf_token("a"));
        assert_ne!(csrf_token("a"), csrf_token("b"));
        assert!(!csrf_token("a").contains('a') || csrf_token("a").len() == 64);
    }

    #[test]
    fn the_cookie_is_http_only_strict_and_scoped_to_the_console() {
        let plain = cookie("t", 60, false);
        let plain = plain.to_str().unwrap();
        assert!(
            plain.contains("HttpOnly")
                && plain.contains("SameSite=Strict")
                && plain.contains("Path=/console")
        );
        assert!(!plain.contains("Secure"));
        assert!(cookie("t", 60, true).to_str().unwrap().ends_with("; Secure"));
        let refresh = refresh_cookie("r", false);
        let refresh = refresh.to_str().unwrap();
        assert!(refresh.starts_with("mercato_console_refresh=r; Path=/console/api/session; HttpOnly"));
        assert!(refresh.contains("SameSite=Strict") && !refresh.contains("Max-Age"));
        let removed = refresh_cookie("", true);
        assert!(removed.to_str().unwrap().contains("Max-Age=0"));
        let jar = headers(&[(header::COOKIE, "a=1; mercato_console=tok; b=2")]);
        assert_eq!(cookie_value(&jar, COOKIE), Some("tok"));
    }
}
