use std::sync::Arc;

use axum::extract::State;
use mercato_runtime::{Caller, Json};
use serde::{Deserialize, Serialize};

use super::ApiError;
use crate::profiles::Customers;
use crate::store::Profile;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Channels {
    email: bool,
    sms: bool,
}

/// The whole preferences document: `PUT` replaces it, every field is required.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreferencesBody {
    channels: Channels,
    marketing_opt_in: bool,
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

pub async fn get(
    State(customers): State<Arc<Customers>>,
    caller: Caller,
) -> Result<Json<PreferencesBody>, ApiError> {
    Ok(Json(customers.profile(&caller.subject).await?.into()))
}

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
