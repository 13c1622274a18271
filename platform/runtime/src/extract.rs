//! Extractors whose rejections are problem documents.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde::de::DeserializeOwned;

use crate::problem::{FieldError, Problem};

/// A JSON body, always an object; a malformed one is `400`, a well-formed one of the wrong shape
/// (an array included) is `422` naming the field where that can be told, a wrong media type
/// `415`, an oversized one `413`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(unsupported_media_type());
        }
        let body = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|rejection| limit_problem(rejection.status(), rejection.body_text()))?;
        // Every body of the API is an object. serde would also read a struct from an array of
        // its fields in order, which the published schemas do not allow.
        let first = body.iter().find(|b| !b.is_ascii_whitespace());
        if first.is_some_and(|b| *b != b'{') {
            return Err(Problem::validation(vec![FieldError::new(
                "body",
                "must be a JSON object",
            )]));
        }
        match axum::Json::<T>::from_bytes(&body) {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_problem(&rejection)),
        }
    }
}

impl<T: serde::Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// `application/json` or any `application/*+json`, parameters aside.
fn is_json(headers: &http::HeaderMap) -> bool {
    let Some(value) = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let media = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    media == "application/json" || (media.starts_with("application/") && media.ends_with("+json"))
}

fn unsupported_media_type() -> Problem {
    Problem::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported-media-type",
        "Unsupported media type",
    )
    .with_detail("send the body as application/json")
}

fn limit_problem(status: StatusCode, text: String) -> Problem {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload-too-large",
            "Request body too large",
        )
        .with_detail(text)
    } else {
        Problem::bad_request(text)
    }
}

fn json_problem(rejection: &JsonRejection) -> Problem {
    match rejection {
        JsonRejection::JsonDataError(e) => {
            let detail = e.body_text();
            let field = serde_field(&detail).unwrap_or_else(|| "body".into());
            Problem::validation(vec![FieldError::new(field, serde_message(&detail))])
        }
        JsonRejection::JsonSyntaxError(e) => Problem::bad_request(e.body_text()),
        JsonRejection::MissingJsonContentType(_) => unsupported_media_type(),
        other => limit_problem(other.status(), other.body_text()),
    }
}

/// The field serde complained about: "missing field `x`", or the path before ": " in axum's text.
fn serde_field(text: &str) -> Option<String> {
    let inner = text
        .strip_prefix("Failed to deserialize the JSON body into the target type: ")
        .unwrap_or(text);
    let path = inner
        .split_once(": ")
        .map(|(p, _)| p)
        .filter(|p| !p.contains(' '));
    let missing = inner.find("missing field `").and_then(|start| {
        let rest = &inner[start + "missing field `".len()..];
        rest.find('`').map(|end| &rest[..end])
    });
    match (path, missing) {
        (Some(path), Some(field)) => Some(format!("{path}.{field}")),
        (None, Some(field)) => Some(field.to_owned()),
        (Some(path), None) => Some(path.to_owned()),
        (None, None) => None,
    }
}

fn serde_message(text: &str) -> String {
    let inner = text
        .strip_prefix("Failed to deserialize the JSON body into the target type: ")
        .unwrap_or(text);
    inner
        .split_once(": ")
        .filter(|(p, _)| !p.contains(' '))
        .map_or(inner, |(_, m)| m)
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Pair {
        a: Option<u8>,
        b: Option<u8>,
    }

    async fn extract(content_type: &str, body: &'static str) -> Result<Pair, Problem> {
        let request = Request::builder()
            .header(http::header::CONTENT_TYPE, content_type)
            .body(axum::body::Body::from(body))
            .unwrap();
        Json::<Pair>::from_request(request, &())
            .await
            .map(|Json(pair)| pair)
    }

    #[tokio::test]
    async fn a_body_is_an_object_never_an_array_of_the_fields() {
        assert!(extract("application/json", r#" {"a": 1}"#).await.is_ok());
        assert!(
            extract("application/merge-patch+json; charset=utf-8", "{}")
                .await
                .is_ok()
        );
        let problem = extract("application/json", "[null, null]").await.unwrap_err();
        assert_eq!((problem.status, problem.errors[0].field.as_str()), (422, "body"));
    }

    #[tokio::test]
    async fn the_media_type_and_the_syntax_are_checked_first() {
        assert_eq!(extract("text/plain", "{}").await.unwrap_err().status, 415);
        assert_eq!(extract("application/json", "{").await.unwrap_err().status, 400);
        assert_eq!(extract("application/json", "").await.unwrap_err().status, 400);
    }

    #[test]
    fn finds_the_missing_field() {
        let text = "Failed to deserialize the JSON body into the target type: missing field `email` at line 1 column 2";
        assert_eq!(serde_field(text).as_deref(), Some("email"));
    }

    #[test]
    fn a_missing_nested_field_keeps_its_path() {
        let text = "Failed to deserialize the JSON body into the target type: lines[1]: missing field `quantity` at line 1 column 40";
        assert_eq!(serde_field(text).as_deref(), Some("lines[1].quantity"));
    }

    #[test]
    fn finds_the_field_of_a_type_error() {
        let text = "Failed to deserialize the JSON body into the target type: name: invalid type: integer `1`, expected a string at line 1 column 9";
        assert_eq!(serde_field(text).as_deref(), Some("name"));
        assert!(serde_message(text).starts_with("invalid type"));
    }
}
