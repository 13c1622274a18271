use std::sync::Arc;

use axum::extract::State;
use mercato_runtime::{Caller, Json};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiError, ChangeRefused};
use crate::profiles::Customers;
use crate::store::Profile;

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Channels {
    email: bool,
    sms: bool,
}

/// The whole preferences document: `PUT` replaces it, every field is required.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Preferences)]
pub struct PreferencesBody {
    channels: Channels,
    marketing_opt_in: bool,
    /// A language tag: `ll` or `ll-RR`.
    #[schema(pattern = "^[a-z]{2}(-[A-Z]{2})?$", example = "pt-BR")]
    locale: String,
}

impl From<Profile> for PreferencesBody {
    fn from(p: Profile) -> Self {
        let prefs = p.preferences;
        Self {
            channels: Channels {
                email: prefs.email,
                sms: prefs.sms,
            },
            marketing_opt_in: prefs.marketing_opt_in,
            locale: prefs.locale,
        }
    }
}

#[utoipa::path(
    get,
    path = "/api/customers/me/preferences",
    operation_id = "get_preferences",
    tag = "customers",
    summary = "The caller's channels and language",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The preferences", body = PreferencesBody),
        (status = 404, description = "No profile yet"),
    )
)]
pub async fn get(
    State(customers): State<Arc<Customers>>,
    caller: Caller,
) -> Result<Json<PreferencesBody>, ApiError> {
    Ok(Json(customers.profile(&caller.subject).await?.into()))
}

#[utoipa::path(
    put,
    path = "/api/customers/me/preferences",
    operation_id = "put_preferences",
    tag = "customers",
    summary = "Replace the caller's preferences",
    security(("bearer" = [])),
    request_body = PreferencesBody,
    responses(
        (status = 200, description = "The preferences as stored", body = PreferencesBody),
        ChangeRefused,
    )
)]
pub async fn put(
    State(customers): State<Arc<Customers>>,
    caller: Caller,
    Json(body): Json<PreferencesBody>,
) -> Result<Json<PreferencesBody>, ApiError> {
    let profile = customers
        .change_preferences(
            &caller.subject,
            body.channels.email,
            body.channels.sms,
            body.marketing_opt_in,
            &body.locale,
        )
        .await?;
    Ok(Json(profile.into()))
}
