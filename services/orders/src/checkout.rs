//! What orders does: place an order, react to the saga's replies and timeouts, cancel, ship,
//! deliver. Every change loads the order from its stream (a reply may take it as this process
//! last appended it instead, see [`crate::in_flight`]), lets the domain decide, and appends the
//! decision with the version it read, so concurrent changes (a reply racing the timer, a
//! customer racing the saga) cannot both win; the loser retries against the new state. The
//! order's read-model row is written in the same transaction as the append, so what a client
//! reads after an answer includes what the answer did.

use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument as _;

use mercato_eventstore::{EventStoreError, ExpectedVersion, ProjectionError};
use mercato_kit::aggregate::Aggregate as _;
use mercato_messaging::{Context, Outbox};
use mercato_runtime::trace::current_trace_id;
use mercato_storage::sqlx::{Any, Executor};
use mercato_storage::{Db, StorageError, Tx, now_millis};
use tokio::sync::Notify;

use crate::domain::{Decision, Fact, Line, Order, Reply, Status};
use crate::events::{Extras, from_envelope, to_envelope};
use crate::in_flight::{InFlight, Remembered};
use crate::metrics::{SagaMetrics, Tally, Times};
use crate::projection::{Deadlines, ViewsProjection, millis};
use crate::store::{self, OrderView};

/// Why an order operation failed.
#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    #[error("no such order")]
    NotFound,
    #[error("the order is {0} and can no longer change that way")]
    WrongStatus(&'static str),
    #[error("the order changed while updating it; try again")]
    Contended,
    #[error("the idempotency key was used for another request")]
    KeyReused,
    #[error(transparent)]
    Lines(#[from] crate::domain::InvalidLines),
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Appending failed, or an event could not be made into an envelope.
    #[error(transparent)]
    EventStore(#[from] EventStoreError),
    /// The order's read-model row could not be written with the append.
    #[error(transparent)]
    ReadModel(#[from] ProjectionError),
}

impl OrderError {
    #[must_use]
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Contended => true,
            Self::Storage(e) => e.is_transient(),
            Self::EventStore(e) => e.is_conflict() || e.is_transient(),
            Self::ReadModel(e) => e.is_transient(),
            _ => false,
        }
    }
}

/// Saga timing.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// How long inventory holds stock for a pending order.
    pub reservation_ttl: Duration,
}

/// The order operations.
#[derive(Debug, Clone)]
pub struct Checkout {
    pub(crate) db: Db,
    outbox: Outbox,
    /// The read model, written in each append's transaction.
    projection: ViewsProjection,
    wake_projection: Arc<Notify>,
    timing: Timing,
    /// When this process took over the saga timer (ms since the epoch).
    started_at: i64,
    /// Counted after each commit; none in a checkout built without a registry.
    metrics: Option<SagaMetrics>,
    /// The running sagas' orders as this process last appended to them.
    in_flight: Arc<InFlight>,
}

const ATTEMPTS: usize = 3;

/// Loads an order from its stream.
///
/// # Errors
/// The database failed, or a stored fact does not decode.
pub async fn load<'e, E>(executor: E, order_id: &str) -> Result<Option<Order>, OrderError>
where
    E: Executor<'e, Database = Any>,
{
    Ok(load_timed(executor, order_id).await?.map(|(order, _)| order))
}

/// Loads an order and when its stream began and last changed, which time its saga's phases.
async fn load_timed<'e, E>(executor: E, order_id: &str) -> Result<Option<(Order, Times)>, OrderError>
where
    E: Executor<'e, Database = Any>,
{
    let events = mercato_eventstore::read_stream(executor, order_id).await?;
    let mut facts = Vec::with_capacity(events.len());
    for event in &events {
        facts.push(from_envelope(&event.envelope).map_err(EventStoreError::from)?);
    }
    let times = match (events.first(), events.last()) {
        (Some(first), Some(last)) => Times {
            placed_at: first.recorded_at,
            last_at: last.recorded_at,
        },
        _ => return Ok(None),
    };
    Ok(Order::replay(facts).map(|order| (order, times)))
}

/// What this process already knows of an order beyond its stream, so an append need not read it
/// back: see [`crate::in_flight`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Known<'a> {
    /// The order's read-model row at the order's version.
    pub view: Option<&'a OrderView>,
    /// The card the order's charge will use.
    pub card: Option<&'a str>,
}

impl<'a> Known<'a> {
    fn of(remembered: &'a Remembered) -> Self {
        Self {
            view: Some(&remembered.view),
            card: remembered.card.as_deref(),
        }
    }
}

/// Appends `facts` to the order's stream in `tx`, expecting the version `order` has, and brings
/// the order's row of `views` up to them in the same transaction. Returns the row as written
/// (its `updated_at` is when the facts were recorded); `None` when there were no facts.
///
/// # Errors
/// [`EventStoreError::Conflict`] when someone appended first.
pub async fn append(
    tx: &mut Tx,
    views: ViewsProjection,
    order: Option<&Order>,
    known: Known<'_>,
    facts: &Decision,
    context: &Context,
) -> Result<Option<OrderView>, OrderError> {
    if facts.is_empty() {
        return Ok(None);
    }
    let (stream, expected) = match (order, facts.first()) {
        (Some(o), _) => (o.id.clone(), ExpectedVersion::Exact(o.version)),
        (None, Some(Fact::Placed { order_id, .. })) => (order_id.clone(), ExpectedVersion::NoStream),
        (None, _) => return Err(OrderError::NotFound),
    };
    let stored_card;
    let card = match known.card {
        Some(card) => Some(card),
        None if facts.iter().any(|f| matches!(f, Fact::ChargeRequested { .. })) => {
            stored_card = store::card(tx, &stream).await?;
            stored_card.as_deref()
        }
        None => None,
    };
    let extras = Extras { card_token: card };
    let placed = order
        .is_none()
        .then(|| Order::replay(facts.iter().take(1).cloned()))
        .flatten();
    let base = order.or(placed.as_ref());
    let mut envelopes = Vec::with_capacity(facts.len());
    for fact in facts {
        let before = if matches!(fact, Fact::Placed { .. }) {
            None
        } else {
            base
        };
        envelopes.push(to_envelope(before, fact, &extras, context).map_err(EventStoreError::from)?);
    }
    let appended = mercato_eventstore::append(tx, &stream, expected, envelopes).await?;
    let known_view = known
        .view
        .filter(|v| order.is_some_and(|o| o.version == v.version));
    Ok(views.apply_appended(tx, &appended.events, known_view).await?)
}

/// What to remember of `order` after `facts` were appended and its row became `view`; the card
/// is kept until the charge has been asked for.
fn after(order: Option<&Order>, facts: &Decision, view: OrderView, card: Option<&str>) -> Option<Remembered> {
    let order = facts.iter().cloned().fold(order.cloned(), Order::apply)?;
    let charged = facts.iter().any(|f| matches!(f, Fact::ChargeRequested { .. }));
    Some(Remembered {
        order,
        view,
        card: card.filter(|_| !charged).map(str::to_owned),
    })
}

impl Checkout {
    #[must_use]
    pub fn new(
        db: Db,
        outbox: Outbox,
        projection: ViewsProjection,
        wake_projection: Arc<Notify>,
        timing: Timing,
    ) -> Self {
        Self {
            db,
            outbox,
            projection,
            wake_projection,
            timing,
            started_at: now_millis(),
            metrics: None,
            in_flight: Arc::default(),
        }
    }

    /// How many running sagas' orders this process remembers.
    #[must_use]
    pub fn remembered(&self) -> usize {
        self.in_flight.len()
    }

    fn remember(&self, appended: Option<Remembered>) {
        if let Some(remembered) = appended {
            self.in_flight.put(remembered);
        }
    }

    /// [`append`] for an order read from its stream, whose row and card are read as needed.
    async fn append_read(
        &self,
        tx: &mut Tx,
        order: &Order,
        facts: &Decision,
        context: &Context,
    ) -> Result<Option<OrderView>, OrderError> {
        append(tx, self.projection, Some(order), Known::default(), facts, context).await
    }

    /// A transaction that appended to `order_id` rolled back: what this process remembers of
    /// the order may be a version the stream never reached.
    pub fn rolled_back(&self, order_id: &str) {
        self.in_flight.forget(order_id);
    }

    /// Counts the saga's decisions in `metrics`.
    #[must_use]
    pub fn with_metrics(mut self, metrics: SagaMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Counts a decision that committed.
    pub(crate) fn count(&self, tally: Tally) {
        if let Some(metrics) = &self.metrics {
            metrics.record(tally);
        }
    }

    /// Called after any commit that appended facts: the relay publishes them, and the
    /// projection moves its checkpoint past them (their rows are already written).
    pub(crate) fn committed(&self) {
        self.outbox.committed();
        self.wake_projection.notify_one();
    }

    /// Places an order: its facts, the card for the later charge, and the idempotency key, in
    /// one transaction. Returns the order id, and the new order's read-model row as written
    /// (`None` for a replay of an order placed before).
    ///
    /// # Errors
    /// [`OrderError::KeyReused`] for a key used with another request.
    pub async fn place(
        &self,
        customer_id: &str,
        lines: Vec<Line>,
        card_token: &str,
        idempotency: Option<(&str, &str)>,
        context: &Context,
    ) -> Result<(String, Option<OrderView>), OrderError> {
        if let Some((key, hash)) = idempotency
            && let Some(existing) = self.replay_of(customer_id, key, hash).await?
        {
            return Ok((existing, None));
        }
        let order_id = uuid::Uuid::now_v7().to_string();
        let expires_at =
            now_millis() + i64::try_from(self.timing.reservation_ttl.as_millis()).unwrap_or(i64::MAX);
        let facts = Order::place(&order_id, customer_id, lines, expires_at)?;
        let mut tx = self.db.begin().await?;
        store::save_card(&mut tx, &order_id, card_token).await?;
        if let Some((key, hash)) = idempotency {
            match store::save_idempotency(&mut tx, customer_id, key, hash, &order_id).await {
                Err(e) if e.is_conflict() => {
                    drop(tx);
                    // A concurrent request with the same key won; answer what it made.
                    return match self.replay_of(customer_id, key, hash).await? {
                        Some(existing) => Ok((existing, None)),
                        None => Err(OrderError::Contended),
                    };
                }
                other => other?,
            }
        }
        let known = Known {
            view: None,
            card: Some(card_token),
        };
        let view = append(&mut tx, self.projection, None, known, &facts, context)
            .instrument(crate::saga::step_span(&order_id, "order_placed"))
            .await?;
        tx.commit().await?;
        let view = view.ok_or(OrderError::NotFound)?;
        self.remember(after(None, &facts, view.clone(), Some(card_token)));
        self.committed();
        self.count(Tally::of(None, &facts, now_millis(), current_trace_id()));
        Ok((order_id, Some(view)))
    }

    async fn replay_of(
        &self,
        customer_id: &str,
        key: &str,
        hash: &str,
    ) -> Result<Option<String>, OrderError> {
        match store::idempotent_order(self.db.pool(), customer_id, key).await? {
            Some((order_id, stored)) if stored == hash => Ok(Some(order_id)),
            Some(_) => Err(OrderError::KeyReused),
            None => Ok(None),
        }
    }

    /// Runs a customer or admin command against the current state.
    async fn command<F>(&self, order_id: &str, decide: F, context: &Context) -> Result<(), OrderError>
    where
        F: Fn(&Order) -> Result<Decision, Status>,
    {
        for _ in 0..ATTEMPTS {
            let (order, times) = load_timed(self.db.pool(), order_id)
                .await?
                .ok_or(OrderError::NotFound)?;
            let facts = decide(&order).map_err(|s| OrderError::WrongStatus(s.as_str()))?;
            let mut tx = self.db.begin().await?;
            match self.append_read(&mut tx, &order, &facts, context).await {
                Err(OrderError::EventStore(e)) if e.is_conflict() => continue,
                other => {
                    other?;
                }
            }
            tx.commit().await?;
            // A command changes a saga from outside it: the next reply reads the order again.
            self.in_flight.forget(order_id);
            self.committed();
            self.count(Tally::of(
                Some((&order, times)),
                &facts,
                now_millis(),
                current_trace_id(),
            ));
            return Ok(());
        }
        Err(OrderError::Contended)
    }

    /// # Errors
    /// [`OrderError::WrongStatus`] once the order is no longer pending.
    pub async fn cancel(&self, order_id: &str, context: &Context) -> Result<(), OrderError> {
        self.command(order_id, Order::cancel_by_customer, context).await
    }

    /// # Errors
    /// [`OrderError::WrongStatus`] unless the order is confirmed.
    pub async fn ship(&self, order_id: &str, context: &Context) -> Result<(), OrderError> {
        self.command(order_id, Order::ship, context).await
    }

    /// # Errors
    /// [`OrderError::WrongStatus`] unless the order is shipped.
    pub async fn deliver(&self, order_id: &str, context: &Context) -> Result<(), OrderError> {
        self.command(order_id, Order::deliver, context).await
    }

    /// The saga's reaction to a reply, inside the inbox's transaction: what it counts once that
    /// commits, `None` when it decided nothing.
    ///
    /// The order is taken as this process last appended to it when it remembers it
    /// ([`InFlight`]); a decision to append is checked against the stream's version by the
    /// append itself, and a decision to append nothing is made again on the order as read.
    ///
    /// # Errors
    /// A conflict (retried by the inbox) or a database failure.
    pub async fn react_in(
        &self,
        tx: &mut Tx,
        order_id: &str,
        reply: Reply,
        context: &Context,
    ) -> Result<Option<Tally>, OrderError> {
        if let Some(remembered) = self.in_flight.get(order_id) {
            let order = &remembered.order;
            let facts = order.react(reply);
            if !facts.is_empty() {
                let known = Known::of(&remembered);
                match append(tx, self.projection, Some(order), known, &facts, context).await {
                    Ok(view) => {
                        return Ok(self.reacted(order, remembered.times(), &facts, view, known.card));
                    }
                    // The stream is at another version: nothing was written and the transaction
                    // goes on, so read the order and decide again. (A conflict found by the
                    // unique index instead, `actual: None`, may have ended the transaction: the
                    // inbox retries that.)
                    Err(OrderError::EventStore(EventStoreError::Conflict { actual: Some(_), .. })) => {}
                    Err(other) => {
                        self.in_flight.forget(order_id);
                        return Err(other);
                    }
                }
            }
            self.in_flight.forget(order_id);
        }
        let Some((order, times)) = load_timed(&mut **tx, order_id).await? else {
            tracing::warn!(
                order_id,
                ?reply,
                "a reply for an order this service does not know"
            );
            return Ok(None);
        };
        let facts = order.react(reply);
        let view = self.append_read(tx, &order, &facts, context).await?;
        Ok(self.reacted(&order, times, &facts, view, None))
    }

    /// Remembers the order after a reaction appended `facts` (in a transaction not yet
    /// committed: the next append checks it) and what the reaction counts.
    fn reacted(
        &self,
        order: &Order,
        times: Times,
        facts: &Decision,
        view: Option<OrderView>,
        card: Option<&str>,
    ) -> Option<Tally> {
        self.remember(after(Some(order), facts, view?, card));
        Some(Tally::of(
            Some((order, times)),
            facts,
            now_millis(),
            current_trace_id(),
        ))
    }

    /// A deadline that passed while no orders process ran (a crash, a restart) says nothing about
    /// the step: its messages were waiting for a process. Such a step gets its whole time again
    /// from this start, so a crash delays an order and never cancels it.
    fn overdue_by(&self, now: i64) -> store::Overdue {
        let Deadlines { reserve, payment } = self.projection.deadlines;
        let after_start = |step: Duration| self.started_at.saturating_add(millis(step));
        store::Overdue {
            now,
            started_at: self.started_at,
            reserving_since_start: after_start(reserve),
            charging_since_start: after_start(payment),
        }
    }

    /// Acts on overdue saga steps; returns how many orders it changed.
    ///
    /// # Errors
    /// The database failed.
    pub async fn expire_overdue(&self) -> Result<usize, OrderError> {
        let mut changed = 0;
        for (order_id, seen_version) in
            store::overdue(self.db.pool(), self.overdue_by(now_millis()), 100).await?
        {
            let mut tx = self.db.begin().await?;
            let Some((order, times)) = load_timed(&mut *tx, &order_id).await? else {
                continue;
            };
            // The read model lags; act only on the state the deadline was computed for.
            if order.version != seen_version {
                continue;
            }
            let facts = order.react(Reply::StepTimedOut);
            let context = Context::default();
            match self.append_read(&mut tx, &order, &facts, &context).await {
                Err(OrderError::EventStore(e)) if e.is_conflict() => continue,
                other => {
                    other?;
                }
            }
            tx.commit().await?;
            self.in_flight.forget(&order_id);
            if !facts.is_empty() {
                changed += 1;
                self.count(Tally::of(Some((&order, times)), &facts, now_millis(), None));
                tracing::info!(order_id, step = ?order.step, "saga step timed out; compensating");
            }
        }
        if changed > 0 {
            self.committed();
        }
        Ok(changed)
    }
}
