use std::sync::Arc;

use axum::extract::State;
use mercato_contracts::customers::Address;
use mercato_runtime::{Caller, Json};
use serde::{Deserialize, Serialize};

use super::ApiError;
use crate::domain::AddressInput;
use crate::profiles::Customers;
use crate::store::Profile;

/// The fields a customer may change; anything else (`id`, `email`) is refused, not ignored.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchProfile {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    addresses: Option<Vec<AddressBody>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddressBody {
    line1: String,
    #[serde(default)]
    line2: Option<String>,
    city: String,
    postal_code: String,
    country: String,
}

#[derive(Debug, Serialize)]
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

pub async fn get(
    State(customers): State<Arc<Customers>>,
    caller: Caller,
) -> Result<Json<ProfileBody>, ApiError> {
    Ok(Json(customers.profile(&caller.subject).await?.into()))
}

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
