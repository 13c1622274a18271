//! Extractors whose rejections are problem documents.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde::de::DeserializeOwned;

use crate::problem::{FieldError, Problem};

/// A JSON body; a malformed one is `400`, a well-formed one of the wrong shape is `422` naming the
/// field where that can be told, a wrong media type `415`, an oversized one `413`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
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

fn json_problem(rejection: &JsonRejection) -> Problem {
    match rejection {
        JsonRejection::JsonDataError(e) => {
            let detail = e.body_text();
            let field = serde_field(&detail).unwrap_or_else(|| "body".into());
            Problem::validation(vec![FieldError::new(field, serde_message(&detail))])
        }
        JsonRejection::JsonSyntaxError(e) => Problem::bad_request(e.body_text()),
        JsonRejection::MissingJsonContentType(_) => Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Unsupported media type",
        )
        .with_detail("send the body as application/json"),
        other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload-too-large",
            "Request body too large",
        )
        .with_detail(other.body_text()),
        other => Problem::bad_request(other.body_text()),
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
