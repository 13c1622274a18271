//! What the public OpenAPI document says alike for every service: the problem document, the
//! bearer scheme, and the answers that any route can give because the gateway or the runtime
//! gives them (rate limits, load shedding, deadlines, body limits). Each service describes its
//! own routes beside its handlers; [`finish`] adds these shared answers to every operation, so a
//! route cannot forget one.

use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::schema::{ArrayBuilder, KnownFormat, ObjectBuilder, SchemaFormat, Type};
use utoipa::openapi::security::{
    Flow, HttpAuthScheme, HttpBuilder, OAuth2, Password, Scopes, SecurityScheme,
};
use utoipa::openapi::{OpenApi, Ref, RefOr, Response, ResponseBuilder, Schema};
use utoipa::{IntoParams, IntoResponses, PartialSchema, ToSchema};

use crate::customers::Address;
use crate::money::Money;

/// A service's part of the document: the operations its handlers describe with
/// `#[utoipa::path]`, named as paths from the calling module.
#[macro_export]
macro_rules! openapi_paths {
    ($($handler:path),+ $(,)?) => {{
        #[derive(utoipa::OpenApi)]
        #[openapi(paths($($handler),+))]
        struct Part;
        <Part as utoipa::OpenApi>::openapi()
    }};
}

/// The media type of every error answer (RFC 9457).
pub const PROBLEM_JSON: &str = "application/problem+json";

/// The security scheme's name, as operations refer to it.
pub const BEARER: &str = "bearer";

/// The token endpoint, relative to the gateway.
const TOKEN_URL: &str = "/api/identity/token";

fn string() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String)
}

impl PartialSchema for Money {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .property(
                "amount_minor",
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
                    .description(Some("The amount in the currency's minor unit (cents).")),
            )
            .required("amount_minor")
            .property("currency", string().pattern(Some("^[A-Z]{3}$")))
            .required("currency")
            .into()
    }
}

impl ToSchema for Money {}

impl PartialSchema for Address {
    fn schema() -> RefOr<Schema> {
        let line2 = ObjectBuilder::new().schema_type(utoipa::openapi::schema::SchemaType::from_iter([
            Type::String,
            Type::Null,
        ]));
        ObjectBuilder::new()
            .property("line1", string())
            .required("line1")
            .property("line2", line2)
            .property("city", string())
            .required("city")
            .property("postal_code", string())
            .required("postal_code")
            .property("country", string().pattern(Some("^[A-Z]{2}$")))
            .required("country")
            .into()
    }
}

impl ToSchema for Address {}

/// The problem document every error answer carries.
#[derive(Debug)]
pub struct Problem;

impl PartialSchema for Problem {
    fn schema() -> RefOr<Schema> {
        RefOr::T(problem_schema())
    }
}

impl ToSchema for Problem {}

fn problem_schema() -> Schema {
    let field_error = ObjectBuilder::new()
        .property("field", string())
        .required("field")
        .property("message", string())
        .required("message");
    ObjectBuilder::new()
        .description(Some(
            "An error (RFC 9457). `errors` names each invalid field of a 422; extension members \
             such as OAuth's `error` may follow.",
        ))
        .property(
            "type",
            string().description(Some("urn:mercato:problem:<slug>, or about:blank")),
        )
        .required("type")
        .property("title", string())
        .required("title")
        .property(
            "status",
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(400))
                .maximum(Some(599)),
        )
        .required("status")
        .property("detail", string())
        .property("errors", ArrayBuilder::new().items(field_error))
        .into()
}

fn seconds_header(description: &str) -> utoipa::openapi::header::Header {
    HeaderBuilder::new()
        .schema(Some(
            ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(0)),
        ))
        .description(Some(description))
        .build()
}

/// An error answer with the problem document.
#[must_use]
pub fn problem(description: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            PROBLEM_JSON,
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build(),
        )
        .build()
}

/// An error answer that says when to try again.
#[must_use]
pub fn problem_retry_after(description: &str) -> Response {
    let mut response = problem(description);
    response.headers.insert(
        "Retry-After".to_owned(),
        RefOr::T(seconds_header("Seconds to wait before trying again.")),
    );
    response
}

/// The query of every list (`mercato_runtime::page`).
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Items per page, 20 when left out.
    #[param(minimum = 1, maximum = 100)]
    pub page_size: Option<i64>,
    /// The `next_page_token` of the page before, as it was given; empty is the first page.
    #[param(pattern = "^[A-Za-z0-9_-]{0,512}$")]
    pub page_token: Option<String>,
}

/// How a list refuses a query it cannot use, beside [`PageParams`].
#[derive(Debug, IntoResponses)]
pub enum PageQueryRefused {
    #[response(status = 400, description = "The query string does not parse")]
    Malformed,
    #[response(status = 422, description = "`page_size` or `page_token` is invalid")]
    Invalid,
}

/// How an admin route refuses a caller without the role.
#[derive(Debug, IntoResponses)]
#[response(status = 403, description = "The caller is not an admin")]
pub struct NotAdmin;

/// What any route may answer, whoever wrote it, and when. An error answer a route states
/// without a body carries the problem document.
fn shared_answers(operation: &mut Operation) {
    for (status, answer) in &mut operation.responses.responses {
        if let RefOr::T(answer) = answer
            && answer.content.is_empty()
            && (status.starts_with('4') || status.starts_with('5'))
        {
            answer.content = problem("").content;
        }
    }
    let secured = operation.security.as_ref().is_some_and(|s| !s.is_empty());
    let has_body = operation.request_body.is_some();
    // The JSON extractor's refusals; a route that reads its body itself (the token endpoint)
    // states its own.
    let json_only = operation.request_body.as_ref().is_some_and(|body| match body {
        RefOr::T(body) => body.content.keys().all(|media| media == "application/json"),
        RefOr::Ref(_) => false,
    });
    let answers = &mut operation.responses.responses;
    let mut add = |status: &str, response: Response| {
        answers.entry(status.to_owned()).or_insert(RefOr::T(response));
    };
    if secured {
        add(
            "401",
            problem("No bearer token, or one that is invalid or expired."),
        );
    }
    if has_body {
        add("400", problem("The body is not well-formed."));
        add("413", problem("The body is larger than the limit."));
    }
    if json_only {
        add("415", problem("The body is not application/json."));
        add(
            "422",
            problem("The body is well-formed but names invalid fields."),
        );
    }
    add(
        "429",
        problem_retry_after("Too many requests from this client, or too many failed authentications."),
    );
    add(
        "503",
        problem_retry_after("The service is busy or not ready; retrying may succeed."),
    );
    add("504", problem("The request's deadline passed before the answer."));
}

/// Completes a document merged from the services' parts: the shared components, and the shared
/// answers on every operation.
pub fn finish(doc: &mut OpenApi) {
    let components = doc.components.get_or_insert_with(Default::default);
    components.schemas.insert("Problem".to_owned(), Problem::schema());
    components.schemas.insert("Money".to_owned(), Money::schema());
    components.schemas.insert("Address".to_owned(), Address::schema());
    components.security_schemes.insert(
        BEARER.to_owned(),
        RefOr::T(SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("JWT")
                .description(Some("An access token from POST /api/identity/token."))
                .build(),
        )),
    );
    // Where the bearer token comes from, so clients and tools know the token endpoint and that
    // it refuses wrong credentials with 400 (RFC 6749 §5.2).
    let mut password = Password::new(TOKEN_URL, Scopes::new());
    password.refresh_url = Some(TOKEN_URL.to_owned());
    components.security_schemes.insert(
        "oauth2".to_owned(),
        RefOr::T(SecurityScheme::OAuth2(OAuth2::with_description(
            [Flow::Password(password)],
            "The password and refresh_token grants whose access token is the bearer token.",
        ))),
    );
    for item in doc.paths.paths.values_mut() {
        for operation in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            shared_answers(operation);
        }
    }
}
