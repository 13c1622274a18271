//! The `orders.views` projection: the order read model that `GET /api/orders` serves and the
//! saga timer scans for overdue steps.
//!
//! Every append to an order's stream writes the order's row in its own transaction
//! ([`ViewsProjection::apply_appended`]), so a client reads its writes as soon as they commit.
//! The projection over the global log stays for rebuilds and as the safety net; both fold the
//! same events the same way and write a row only over an older version, so neither ever takes
//! the other's row back.

use std::collections::HashMap;
use std::time::Duration;

use mercato_eventstore::{Applied, AppliedAll, EventStoreError, Projection, ProjectionError, RecordedEvent};
use mercato_storage::Tx;

use crate::domain::{Fact, Status, Step};
use crate::events::{from_envelope, line_out};
use crate::store::{self, OrderView};

pub const NAME: &str = "orders.views";

/// Orders per read of row versions in a batch.
const VERSIONS_PER_READ: usize = 200;

/// How long each saga step may take before the timer acts.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    pub reserve: Duration,
    pub payment: Duration,
}

/// Keeps `order_views` in step with the order streams.
#[derive(Debug, Clone, Copy)]
pub struct ViewsProjection {
    pub deadlines: Deadlines,
}

pub(crate) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl ViewsProjection {
    /// Applies one event of the global log to its order's row.
    async fn project(self, tx: &mut Tx, event: &RecordedEvent) -> Result<(), ProjectionError> {
        let view = store::view(&mut **tx, &event.envelope.stream_id).await?;
        if let Some(view) = self.fold(view, event)? {
            store::upsert(tx, &view).await?;
        }
        Ok(())
    }

    /// Brings the row of the order that `appended` (one append's events, in version order) went
    /// to up to them, in the append's transaction `tx`, and returns the row as written. The row
    /// before them is `known` when that is the row at the version just before the append (what
    /// this process wrote there, see [`crate::in_flight`]), none for a stream's first events, and
    /// otherwise read. A row that lags further behind (the projection had not reached it yet, or
    /// it was written before appends kept it) is first replayed from the stream, so no event's
    /// effect is skipped.
    ///
    /// # Errors
    /// The database failed, or an event does not decode or does not fit the order.
    pub async fn apply_appended(
        self,
        tx: &mut Tx,
        appended: &[RecordedEvent],
        known: Option<&OrderView>,
    ) -> Result<Option<OrderView>, ProjectionError> {
        let Some(first) = appended.first() else {
            return Ok(None);
        };
        let stream_id = &first.envelope.stream_id;
        let mut view = match known {
            Some(row) if row.order_id == *stream_id && row.version + 1 == first.version => Some(row.clone()),
            // Rows come only from events: a stream that had none has no row.
            _ if first.version == 1 => None,
            _ => store::view(&mut **tx, stream_id).await?,
        };
        let held = view.as_ref().map_or(0, |v| v.version);
        let history;
        let events = if held + 1 < first.version {
            history = mercato_eventstore::read_stream(&mut **tx, stream_id)
                .await
                .map_err(stream_error)?;
            &history[..]
        } else {
            appended
        };
        let mut changed = false;
        for event in events {
            if let Some(next) = self.fold(view.clone(), event)? {
                view = Some(next);
                changed = true;
            }
        }
        if changed && let Some(view) = &view {
            store::upsert(tx, view).await?;
        }
        Ok(view)
    }

    /// The row after `event`, from the row before it (`None` before the placement); `None` when
    /// the row already holds the event.
    fn fold(
        self,
        view: Option<OrderView>,
        event: &RecordedEvent,
    ) -> Result<Option<OrderView>, ProjectionError> {
        let fact = from_envelope(&event.envelope)?;
        let at = event.recorded_at;
        let mut view = match (&fact, view) {
            (
                Fact::Placed {
                    order_id,
                    customer_id,
                    lines,
                    total,
                },
                None,
            ) => OrderView {
                order_id: order_id.clone(),
                customer_id: customer_id.clone(),
                status: Status::Pending.as_str().into(),
                step: "reserving".into(),
                cancel_reason: None,
                lines: lines.iter().map(line_out).collect(),
                total: *total,
                payment_status: "none".into(),
                created_at: at,
                updated_at: at,
                deadline_at: None,
                version: event.version,
                reserved_at: None,
                paid_at: None,
                confirmed_at: None,
                cancelled_at: None,
            },
            (_, Some(view)) if view.version >= event.version => return Ok(None),
            (_, Some(view)) => view,
            (_, None) => {
                return Err(ProjectionError::Failed(format!(
                    "order {} has no placement",
                    event.envelope.stream_id
                )));
            }
        };
        view.version = event.version;
        view.updated_at = at;
        match fact {
            Fact::Placed { .. } => {}
            Fact::ReserveRequested { .. } => {
                view.deadline_at = Some(at + millis(self.deadlines.reserve));
            }
            Fact::ChargeRequested { .. } => {
                view.step = step_name(Step::Charging).into();
                view.payment_status = "pending".into();
                view.deadline_at = Some(at + millis(self.deadlines.payment));
            }
            Fact::PaymentCaptured => {
                view.payment_status = "captured".into();
                view.paid_at.get_or_insert(at);
            }
            Fact::PaymentFailed { .. } => view.payment_status = "failed".into(),
            Fact::RefundRequested => {
                if view.payment_status != "none" {
                    view.payment_status = "refunding".into();
                }
            }
            Fact::Confirmed => {
                view.confirmed_at.get_or_insert(at);
                view.status = Status::Confirmed.as_str().into();
                view.step = step_name(Step::Done).into();
                view.deadline_at = None;
            }
            Fact::Cancelled { reason } => {
                view.cancelled_at.get_or_insert(at);
                view.status = Status::Cancelled.as_str().into();
                view.step = step_name(Step::Done).into();
                view.cancel_reason = Some(reason.as_str().into());
                view.deadline_at = None;
            }
            Fact::Shipped => view.status = Status::Shipped.as_str().into(),
            Fact::Delivered => view.status = Status::Delivered.as_str().into(),
            Fact::StockReserved => {
                view.reserved_at.get_or_insert(at);
            }
            Fact::StockReservationFailed { .. } | Fact::CommitRequested | Fact::ReleaseRequested => {}
        }
        Ok(Some(view))
    }
}

fn stream_error(error: EventStoreError) -> ProjectionError {
    match error {
        EventStoreError::Storage(e) => ProjectionError::Storage(e),
        other => ProjectionError::Failed(other.to_string()),
    }
}

fn step_name(step: Step) -> &'static str {
    match step {
        Step::Reserving => "reserving",
        Step::Charging => "charging",
        Step::Done => "done",
    }
}

impl Projection for ViewsProjection {
    fn name(&self) -> &str {
        NAME
    }

    fn apply<'a>(&'a self, tx: &'a mut Tx, event: &'a RecordedEvent) -> Applied<'a> {
        Box::pin(self.project(tx, event))
    }

    /// Appends write their rows themselves, so the log's events are nearly all held already:
    /// one read of the batch's row versions finds those, and only the others are folded.
    fn apply_all<'a>(&'a self, tx: &'a mut Tx, events: &'a [RecordedEvent]) -> AppliedAll<'a> {
        Box::pin(async move {
            let mut ids: Vec<&str> = events.iter().map(|e| e.envelope.stream_id.as_str()).collect();
            ids.sort_unstable();
            ids.dedup();
            let mut held = HashMap::new();
            for chunk in ids.chunks(VERSIONS_PER_READ) {
                held.extend(
                    store::versions(&mut **tx, chunk)
                        .await
                        .map_err(|e| (0, e.into()))?,
                );
            }
            for (index, event) in events.iter().enumerate() {
                let stream = &event.envelope.stream_id;
                if held.get(stream).is_some_and(|&version| version >= event.version) {
                    continue;
                }
                self.project(tx, event).await.map_err(|e| (index, e))?;
                held.insert(stream.clone(), event.version);
            }
            Ok(())
        })
    }

    fn reset<'a>(&'a self, tx: &'a mut Tx) -> Applied<'a> {
        Box::pin(async move { Ok(store::clear(tx).await?) })
    }
}
