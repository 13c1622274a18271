//! The `customers.profiles` projection: the profile read model, built from the event store and
//! rebuildable from position zero (`mercato projections rebuild customers.profiles`).

use mercato_contracts::customers::{CustomerCreated, CustomerUpdated, Preferences};
use mercato_eventstore::{Applied, Projection, ProjectionError, RecordedEvent};
use mercato_storage::Tx;

use crate::store::{self, Profile};

/// The projection's name, also its checkpoint's.
pub const NAME: &str = "customers.profiles";

/// Keeps `customer_profiles` in step with the customers' event streams.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProfilesProjection;

impl ProfilesProjection {
    /// Every customer event carries the whole profile (bar preferences on creation), so one
    /// event is enough to write the row; the version guard makes replays harmless.
    async fn project(tx: &mut Tx, event: &RecordedEvent) -> Result<(), ProjectionError> {
        let envelope = &event.envelope;
        let profile = if envelope.is::<CustomerCreated>() {
            let e: CustomerCreated = envelope.decode()?;
            Profile {
                id: e.customer_id,
                email: e.email,
                name: e.name,
                addresses: Vec::new(),
                preferences: Preferences::default(),
                version: event.version,
            }
        } else if envelope.is::<CustomerUpdated>() {
            let e: CustomerUpdated = envelope.decode()?;
            Profile {
                id: e.customer_id,
                email: e.email,
                name: e.name,
                addresses: e.addresses,
                preferences: e.preferences,
                version: event.version,
            }
        } else {
            return Ok(());
        };
        store::upsert(tx, &profile).await?;
        Ok(())
    }
}

impl Projection for ProfilesProjection {
    fn name(&self) -> &str {
        NAME
    }

    fn apply<'a>(&'a self, tx: &'a mut Tx, event: &'a RecordedEvent) -> Applied<'a> {
        Box::pin(Self::project(tx, event))
    }

    fn reset<'a>(&'a self, tx: &'a mut Tx) -> Applied<'a> {
        Box::pin(async move { Ok(store::clear(tx).await?) })
    }
}
