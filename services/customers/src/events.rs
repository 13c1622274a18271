//! Customers' events on the wire: conversions between the domain and the contracts, and the
//! handler for identity's `UserRegistered`.

use mercato_contracts::customers::{self as contract, CustomerCreated, CustomerUpdated};
use mercato_contracts::identity::UserRegistered;
use mercato_eventstore::{EventStoreError, ExpectedVersion};
use mercato_kit::aggregate::Aggregate as _;
use mercato_messaging::{
    Context, Envelope, EnvelopeError, Event as _, Handler, HandlerError, HandlerFuture, Outbox,
};
use mercato_storage::Tx;

use crate::domain::{Address, Customer, CustomerEvent};

pub(crate) fn address_out(a: &Address) -> contract::Address {
    contract::Address {
        line1: a.line1.clone(),
        line2: a.line2.clone(),
        city: a.city.clone(),
        postal_code: a.postal_code.clone(),
        country: a.country.clone(),
    }
}

/// Stored events were validated when written, so they are taken as they are.
pub(crate) fn address_in(a: contract::Address) -> Address {
    Address {
        line1: a.line1,
        line2: a.line2,
        city: a.city,
        postal_code: a.postal_code,
        country: a.country,
    }
}

/// The envelope that records `event` for `customer` (its email travels on every event).
///
/// # Errors
/// The payload does not serialise.
pub fn to_envelope(
    customer_id: &str,
    email: &str,
    event: &CustomerEvent,
    context: &Context,
) -> Result<Envelope, EnvelopeError> {
    match event {
        CustomerEvent::Created { id, email, name } => Envelope::new(
            crate::NAME,
            customer_id,
            &CustomerCreated {
                customer_id: id.clone(),
                email: email.clone(),
                name: name.clone(),
            },
            context,
        ),
        CustomerEvent::Updated {
            name,
            addresses,
            preferences,
        } => Envelope::new(
            crate::NAME,
            customer_id,
            &CustomerUpdated {
                customer_id: customer_id.to_owned(),
                email: email.to_owned(),
                name: name.clone(),
                addresses: addresses.iter().map(address_out).collect(),
                preferences: preferences.into(),
            },
            context,
        ),
    }
}

/// The domain event an envelope carries; `None` for types this service does not know.
///
/// # Errors
/// A known type whose payload does not decode.
pub fn from_envelope(envelope: &Envelope) -> Result<Option<CustomerEvent>, EnvelopeError> {
    if envelope.is::<CustomerCreated>() {
        let e: CustomerCreated = envelope.decode()?;
        return Ok(Some(CustomerEvent::Created {
            id: e.customer_id,
            email: e.email,
            name: e.name,
        }));
    }
    if envelope.is::<CustomerUpdated>() {
        let e: CustomerUpdated = envelope.decode()?;
        return Ok(Some(CustomerEvent::Updated {
            name: e.name,
            addresses: e.addresses.into_iter().map(address_in).collect(),
            preferences: e.preferences.into(),
        }));
    }
    Ok(None)
}

/// Folds a stream's envelopes into the customer.
///
/// # Errors
/// An event that does not decode.
pub fn replay<'a>(
    envelopes: impl IntoIterator<Item = &'a Envelope>,
) -> Result<Option<Customer>, EnvelopeError> {
    let mut events = Vec::new();
    for envelope in envelopes {
        if let Some(event) = from_envelope(envelope)? {
            events.push(event);
        }
    }
    Ok(Customer::replay(events))
}

/// Creates a customer when identity reports a registration; a second delivery (or a customer
/// that exists already) changes nothing.
#[derive(Debug, Clone)]
pub struct OnUserRegistered {
    pub(crate) outbox: Outbox,
    pub(crate) projections: std::sync::Arc<tokio::sync::Notify>,
}

impl OnUserRegistered {
    async fn create(envelope: &Envelope, tx: &mut Tx) -> Result<(), HandlerError> {
        if !envelope.is::<UserRegistered>() {
            return Ok(());
        }
        let registered: UserRegistered = envelope.decode()?;
        let event = CustomerEvent::Created {
            id: registered.user_id.clone(),
            email: registered.email.clone(),
            name: registered.name.clone(),
        };
        let created = to_envelope(
            &registered.user_id,
            &registered.email,
            &event,
            &envelope.caused_context(),
        )?;
        match mercato_eventstore::append(tx, &registered.user_id, ExpectedVersion::NoStream, vec![created])
            .await
        {
            Ok(_) | Err(EventStoreError::Conflict { .. }) => Ok(()),
            Err(e) if e.is_transient() => Err(HandlerError::Transient(e.to_string())),
            Err(e) => Err(HandlerError::Transient(e.to_string())),
        }
    }
}

impl Handler for OnUserRegistered {
    fn handle<'a>(&'a self, envelope: &'a Envelope, tx: &'a mut Tx) -> HandlerFuture<'a> {
        Box::pin(Self::create(envelope, tx))
    }

    fn committed(&self) {
        self.outbox.committed();
        self.projections.notify_one();
    }

    fn event_types(&self) -> &[&'static str] {
        &[UserRegistered::TYPE]
    }
}
