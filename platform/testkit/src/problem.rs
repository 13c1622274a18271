//! Assertions on `application/problem+json` answers (RFC 9457), the same for every suite.

use serde_json::Value;

/// Checks that `response` is a problem with `status` (content type, `status` and `title` in the
/// body, a Mercato problem type), and returns its body.
///
/// # Panics
/// When it is not.
pub async fn expect_problem(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status().as_u16(), status, "status of {}", response.url());
    assert_eq!(
        response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
        Some("application/problem+json"),
        "content type of a {status} answer",
    );
    let body: Value = response.json().await.expect("a problem body is JSON");
    assert_eq!(body["status"], status, "problem body: {body}");
    assert!(body["title"].is_string(), "problem body: {body}");
    assert!(
        body["type"]
            .as_str()
            .is_some_and(|t| t.starts_with("urn:mercato:problem:")),
        "problem body: {body}"
    );
    body
}

/// As [`expect_problem`], and the problem's type is `urn:mercato:problem:{slug}`.
///
/// # Panics
/// When it is not.
pub async fn expect_problem_of(response: reqwest::Response, status: u16, slug: &str) -> Value {
    let body = expect_problem(response, status).await;
    assert_eq!(
        body["type"],
        format!("urn:mercato:problem:{slug}"),
        "problem body: {body}"
    );
    body
}

/// The fields a `422` validation problem names, in order.
///
/// # Panics
/// When the problem lists no errors, or an error names no field or does not say what is wrong.
#[must_use]
pub fn invalid_fields(problem: &Value) -> Vec<&str> {
    problem["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("a validation problem lists its errors: {problem}"))
        .iter()
        .map(|e| {
            assert!(
                e["message"].is_string(),
                "each error says what is wrong: {problem}"
            );
            e["field"].as_str().expect("each error names a field")
        })
        .collect()
}

/// The `WWW-Authenticate` challenge of a `401`.
///
/// # Panics
/// When there is none, or it is not text.
#[must_use]
pub fn challenge(response: &reqwest::Response) -> String {
    response
        .headers()
        .get(reqwest::header::WWW_AUTHENTICATE)
        .unwrap_or_else(|| panic!("no challenge in a {} answer", response.status()))
        .to_str()
        .expect("a challenge is text")
        .to_owned()
}
