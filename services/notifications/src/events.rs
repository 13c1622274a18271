//! The events notifications consumes, and what each one does, inside the inbox's transaction.
//!
//! - identity `UserRegistered`: remembers the customer (if customers has not told us yet) and
//!   writes the welcome message.
//! - customers `CustomerCreated` / `CustomerUpdated`: the local copy of the customer's email,
//!   name and preferences, newest stream position wins.
//! - orders `OrderConfirmed`, `OrderCancelled`, `OrderShipped`, `OrderDelivered`: a message
//!   each.
//!
//! Every other type is acknowledged and ignored. One [`Notifier`] serves each consumer group.

use std::sync::{Arc, Mutex, PoisonError};

use mercato_contracts::customers::{CustomerCreated, CustomerUpdated, Preferences};
use mercato_contracts::identity::UserRegistered;
use mercato_contracts::orders::{OrderCancelled, OrderConfirmed, OrderDelivered, OrderShipped};
use mercato_messaging::{Envelope, Event as _, Handler, HandlerError, HandlerFuture};
use mercato_storage::{Tx, now_millis};
use tokio::sync::Notify;

use crate::domain::{self, CancelReason, Channel, Kind, Line, Locale, Message, Recipient};
use crate::metrics::NotificationMetrics;
use crate::store::{self, CustomerCopy, NewNotification};

/// Applies consumed events; wakes the email worker after a commit that queued email.
#[derive(Debug)]
pub struct Notifier {
    email_configured: bool,
    wake: Arc<Notify>,
    metrics: NotificationMetrics,
    /// Outcomes of the events applied in the inbox's open transaction, counted only once it
    /// commits. Each of the inbox's workers has a `Notifier` of its own (`for_worker`), so this
    /// is one transaction's.
    pending: Mutex<Vec<(Kind, Channel, &'static str)>>,
    /// Where each of those events' outcomes start in `pending`, so one rolled back drops its own.
    starts: Mutex<Vec<usize>>,
}

fn recipient_of(copy: CustomerCopy) -> Recipient {
    Recipient {
        customer_id: copy.customer_id,
        name: Some(copy.name),
        email: (!copy.email.is_empty()).then_some(copy.email),
        email_enabled: copy.email_enabled,
        locale: Locale::for_tag(&copy.locale),
    }
}

fn copy_of(customer_id: String, email: String, name: String, preferences: Preferences) -> CustomerCopy {
    CustomerCopy {
        customer_id,
        email,
        name,
        email_enabled: preferences.email,
        sms_enabled: preferences.sms,
        marketing_opt_in: preferences.marketing_opt_in,
        locale: preferences.locale,
    }
}

impl Notifier {
    /// `email_configured`: whether this deployment sends email at all; when it does not, no
    /// email rows are written (enabling SMTP later does not send a backlog of old news).
    #[must_use]
    pub fn new(email_configured: bool, wake: Arc<Notify>, metrics: NotificationMetrics) -> Self {
        Self {
            email_configured,
            wake,
            metrics,
            pending: Mutex::default(),
            starts: Mutex::default(),
        }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Vec<(Kind, Channel, &'static str)>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn apply(&self, envelope: &Envelope, tx: &mut Tx) -> Result<(), HandlerError> {
        let start = self.pending().len();
        self.starts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(start);
        let now = now_millis();
        if envelope.is::<UserRegistered>() {
            let e: UserRegistered = envelope.decode()?;
            store::seed_customer(tx, &e.user_id, &e.email, &e.name, now).await?;
            let recipient = self.recipient(tx, &e.user_id).await?;
            return self
                .notify(tx, envelope, &recipient, &Message::Welcome, now)
                .await;
        }
        if envelope.is::<CustomerCreated>() {
            let e: CustomerCreated = envelope.decode()?;
            let copy = copy_of(e.customer_id, e.email, e.name, Preferences::default());
            store::upsert_customer(tx, &copy, envelope.stream_seq, now).await?;
            return Ok(());
        }
        if envelope.is::<CustomerUpdated>() {
            let e: CustomerUpdated = envelope.decode()?;
            let copy = copy_of(e.customer_id, e.email, e.name, e.preferences);
            store::upsert_customer(tx, &copy, envelope.stream_seq, now).await?;
            return Ok(());
        }
        let (customer_id, message) = if envelope.is::<OrderConfirmed>() {
            let e: OrderConfirmed = envelope.decode()?;
            let lines = e
                .lines
                .iter()
                .map(|l| Line {
                    name: l.name.clone(),
                    quantity: l.quantity,
                    unit_price: l.unit_price,
                })
                .collect();
            let message = Message::OrderConfirmed {
                order_id: e.order_id,
                lines,
                total: e.total,
            };
            (e.customer_id, message)
        } else if envelope.is::<OrderCancelled>() {
            let e: OrderCancelled = envelope.decode()?;
            let message = Message::OrderCancelled {
                order_id: e.order_id,
                reason: CancelReason::parse(&e.reason),
            };
            (e.customer_id, message)
        } else if envelope.is::<OrderShipped>() {
            let e: OrderShipped = envelope.decode()?;
            (e.customer_id, Message::OrderShipped { order_id: e.order_id })
        } else if envelope.is::<OrderDelivered>() {
            let e: OrderDelivered = envelope.decode()?;
            (e.customer_id, Message::OrderDelivered { order_id: e.order_id })
        } else {
            return Ok(());
        };
        let recipient = self.recipient(tx, &customer_id).await?;
        self.notify(tx, envelope, &recipient, &message, now).await
    }

    /// The customer as far as we know them. Before any event about them has arrived (orders
    /// overtook customers on the bus), the message still goes to the mailbox, in English and
    /// without a name; there is no address for email, and notifications never asks customers.
    async fn recipient(&self, tx: &mut Tx, customer_id: &str) -> Result<Recipient, HandlerError> {
        Ok(store::customer(&mut **tx, customer_id)
            .await?
            .map_or_else(|| Recipient::unknown(customer_id), recipient_of))
    }

    async fn notify(
        &self,
        tx: &mut Tx,
        envelope: &Envelope,
        recipient: &Recipient,
        message: &Message,
        now: i64,
    ) -> Result<(), HandlerError> {
        let kind = message.kind();
        let rendered = domain::render(message, recipient.name.as_deref(), recipient.locale);
        let chosen = domain::channels(recipient, self.email_configured);
        if !chosen.contains(&Channel::Email) {
            self.pending().push((kind, Channel::Email, "skipped"));
        }
        for channel in chosen {
            let id = uuid::Uuid::now_v7().to_string();
            let written = store::insert_notification(
                tx,
                &NewNotification {
                    id: &id,
                    event_id: &envelope.id,
                    channel,
                    customer_id: &recipient.customer_id,
                    kind,
                    locale: recipient.locale,
                    recipient: match channel {
                        Channel::Email => recipient.email.as_deref(),
                        Channel::Mailbox => None,
                    },
                    subject: &rendered.subject,
                    body: &rendered.body,
                    now,
                },
            )
            .await?;
            if written {
                let outcome = match channel {
                    Channel::Mailbox => "delivered",
                    Channel::Email => "queued",
                };
                self.pending().push((kind, channel, outcome));
            } else {
                tracing::info!(event_id = %envelope.id, channel = channel.as_str(),
                    "this event already has its notification; not writing another");
            }
        }
        Ok(())
    }
}

impl Handler for Notifier {
    fn handle<'a>(&'a self, envelope: &'a Envelope, tx: &'a mut Tx) -> HandlerFuture<'a> {
        Box::pin(self.apply(envelope, tx))
    }

    fn rolled_back(&self) {
        if let Some(start) = self.starts.lock().unwrap_or_else(PoisonError::into_inner).pop() {
            self.pending().truncate(start);
        }
    }

    fn event_types(&self) -> &[&'static str] {
        &[
            UserRegistered::TYPE,
            CustomerCreated::TYPE,
            CustomerUpdated::TYPE,
            OrderConfirmed::TYPE,
            OrderCancelled::TYPE,
            OrderShipped::TYPE,
            OrderDelivered::TYPE,
        ]
    }

    /// A worker of its own applies its own transactions, so it keeps its own pending outcomes.
    fn for_worker(&self) -> Option<Self> {
        Some(Self::new(
            self.email_configured,
            Arc::clone(&self.wake),
            self.metrics.clone(),
        ))
    }

    fn committed(&self) {
        self.starts.lock().unwrap_or_else(PoisonError::into_inner).clear();
        let outcomes = std::mem::take(&mut *self.pending());
        let mut queued = false;
        for (kind, channel, outcome) in outcomes {
            queued |= outcome == "queued";
            self.metrics.record(kind.as_str(), channel.as_str(), outcome);
        }
        if queued {
            self.wake.notify_one();
        }
    }
}
