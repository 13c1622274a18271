use std::sync::Arc;

use axum::extract::State;
use mercato_contracts::customers::Address;
use mercato_runtime::{Caller, Json};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiError, ChangeRefused};
use crate::domain::AddressInput;
use crate::profiles::Customers;
use crate::store::Profile;

/// The fields a customer may change; anything else (`id`, `email`) is refused, not ignored.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchProfile {
    #[serde(default)]
    #[schema(
        max_length = 100,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f][^\\u0000-\\u001f\\u007f-\\u009f]*$"
    )]
    name: Option<String>,
    /// Replaces every address.
    #[serde(default)]
    #[schema(max_items = 10)]
    addresses: Option<Vec<AddressBody>>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ProfileAddress)]
pub struct AddressBody {
    #[schema(
        max_length = 200,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f][^\\u0000-\\u001f\\u007f-\\u009f]*$"
    )]
    line1: String,
    #[serde(default)]
    #[schema(max_length = 200, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$")]
    line2: Option<String>,
    #[schema(
        max_length = 100,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f][^\\u0000-\\u001f\\u007f-\\u009f]*$"
    )]
    city: String,
    #[schema(max_length = 16, pattern = "^[A-Za-z0-9 -]*[A-Za-z0-9-][A-Za-z0-9 -]*$")]
    postal_code: String,
    /// ISO 3166-1 alpha-2.
    #[schema(pattern = "^[A-Za-z]{2}$", example = "DE")]
    country: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Profile)]
pub struct ProfileBody {
    id: String,
    email: String,
    name: String,
    addresses: Vec<Address>,
}

impl From<Profile> for ProfileBody {
    fn from(p: Profile) -> Self {
        Self {
            id: p.id,
            email: p.email,
            name: p.name,
            addresses: p.addresses,
        }
    }
}

#[utoipa::path(
    get,
    path = "/api/customers/me",
    operation_id = "get_profile",
    tag = "customers",
    summary = "The caller's profile",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The profile", body = ProfileBody),
        (status = 404, description = "No profile yet: it is created shortly after registration"),
    )
)]
pub async fn get(
    State(customers): State<Arc<Customers>>,
    caller: Caller,
) -> Result<Json<ProfileBody>, ApiError> {
    Ok(Json(customers.profile(&caller.subject).await?.into()))
}

#[utoipa::path(
    patch,
    path = "/api/customers/me",
    operation_id = "patch_profile",
    tag = "customers",
    summary = "Change the caller's name or addresses",
    security(("bearer" = [])),
    request_body = PatchProfile,
    responses(
        (status = 200, description = "The profile as changed", body = ProfileBody),
        ChangeRefused,
    )
)]
pub async fn patch(
    State(customers): State<Arc<Customers>>,
    caller: Caller,
    Json(body): Json<PatchProfile>,
) -> Result<Json<ProfileBody>, ApiError> {
    let addresses: Option<Vec<AddressInput>> = body.addresses.map(|list| {
        list.into_iter()
            .map(|a| AddressInput {
                line1: a.line1,
                line2: a.line2,
                city: a.city,
                postal_code: a.postal_code,
                country: a.country,
            })
            .collect()
    });
    let profile = customers
        .change_profile(&caller.subject, body.name.as_deref(), addresses.as_deref())
        .await?;
    Ok(Json(profile.into()))
}
