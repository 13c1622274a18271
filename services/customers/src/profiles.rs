//! What customers does on request: load a customer from its events, run a command, append the
//! resulting event with an expected version, and bring the read model up to date before
//! answering, so a client reads its own writes.

use std::sync::Arc;

use mercato_eventstore::{EventStoreError, ExpectedVersion};
use mercato_kit::aggregate::Aggregate as _;
use mercato_messaging::{Context, Outbox};
use mercato_runtime::correlation::CorrelationId;
use mercato_storage::{Db, StorageError};
use tokio::sync::Notify;

use crate::domain::{AddressInput, Customer, CustomerEvent, Invalid};
use crate::events;
use crate::projection::ProfilesProjection;
use crate::store::{self, Profile};

/// Why a customer operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CustomerError {
    #[error("no profile yet")]
    NotFound,
    #[error("invalid fields")]
    Invalid(Invalid),
    #[error("the profile kept changing underneath; try again")]
    Contended,
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Appending failed, or an event could not be made into an envelope.
    #[error(transparent)]
    EventStore(#[from] EventStoreError),
}

/// How often a command is retried when another writer appended first.
const ATTEMPTS: usize = 3;

/// The customer operations.
#[derive(Debug, Clone)]
pub struct Customers {
    db: Db,
    outbox: Outbox,
    projection: ProfilesProjection,
    projection_wake: Arc<Notify>,
}

impl Customers {
    #[must_use]
    pub fn new(db: Db, outbox: Outbox, projection_wake: Arc<Notify>) -> Self {
        Self {
            db,
            outbox,
            projection: ProfilesProjection,
            projection_wake,
        }
    }

    /// The profile from the read model.
    ///
    /// # Errors
    /// [`CustomerError::NotFound`] before the customer exists.
    pub async fn profile(&self, id: &str) -> Result<Profile, CustomerError> {
        store::profile(self.db.pool(), id)
            .await?
            .ok_or(CustomerError::NotFound)
    }

    /// # Errors
    /// [`CustomerError::Invalid`] naming each bad field, [`CustomerError::NotFound`].
    pub async fn change_profile(
        &self,
        id: &str,
        name: Option<&str>,
        addresses: Option<&[AddressInput]>,
    ) -> Result<Profile, CustomerError> {
        self.execute(id, |c| c.change_profile(name, addresses)).await
    }

    /// # Errors
    /// [`CustomerError::Invalid`] for a bad locale, [`CustomerError::NotFound`].
    pub async fn change_preferences(
        &self,
        id: &str,
        email: bool,
        sms: bool,
        marketing_opt_in: bool,
        locale: &str,
    ) -> Result<Profile, CustomerError> {
        self.execute(id, |c| c.change_preferences(email, sms, marketing_opt_in, locale))
            .await
    }

    async fn load(&self, id: &str) -> Result<Option<Customer>, CustomerError> {
        let stream = mercato_eventstore::read_stream(self.db.pool(), id).await?;
        Ok(events::replay(stream.iter().map(|e| &e.envelope)).map_err(EventStoreError::from)?)
    }

    async fn execute<F>(&self, id: &str, command: F) -> Result<Profile, CustomerError>
    where
        F: Fn(&Customer) -> Result<Option<CustomerEvent>, Invalid>,
    {
        let context = Context {
            correlation_id: CorrelationId::current().map(|c| c.to_string()),
            ..Context::default()
        };
        for _ in 0..ATTEMPTS {
            let customer = self.load(id).await?.ok_or(CustomerError::NotFound)?;
            let Some(event) = command(&customer).map_err(CustomerError::Invalid)? else {
                return Ok(Profile::of(&customer));
            };
            let envelope =
                events::to_envelope(id, &customer.email, &event, &context).map_err(EventStoreError::from)?;
            let mut tx = self.db.begin().await?;
            match mercato_eventstore::append(
                &mut tx,
                id,
                ExpectedVersion::Exact(customer.version),
                vec![envelope],
            )
            .await
            {
                Ok(_) => {}
                Err(EventStoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
            tx.commit().await?;
            self.outbox.committed();
            self.refresh_read_model().await;
            let after = customer.with(event);
            return Ok(Profile::of(&after));
        }
        Err(CustomerError::Contended)
    }

    /// Catches the read model up now; if that fails the background projection will.
    async fn refresh_read_model(&self) {
        if let Err(e) = mercato_eventstore::catch_up(&self.db, &self.projection, 256).await {
            tracing::warn!(error = %e, "read model not refreshed inline; the projection will catch up");
            self.projection_wake.notify_one();
        }
    }
}
