//! Appending to streams with an expected version, and reading streams and the global log.

use std::borrow::Cow;
use std::fmt;
use std::sync::OnceLock;

use mercato_messaging::{Envelope, outbox};
use mercato_storage::sqlx::{self, Any, Executor, Row as _, any::AnyRow};
use mercato_storage::{Backend, Tx, now_millis, span};
use tracing::Instrument as _;

use crate::error::{EventStoreError, classify_insert};
use crate::horizon;

const COLUMNS: &str = "position, version, envelope, recorded_at";

/// Events per insert statement: 6 values each plus 3 shared stays far below either backend's
/// bound on parameters, and appends are a few events each.
const EVENTS_PER_STATEMENT: usize = 100;

/// The values of `n` events: version, event id, type, schema version, body and bus category of
/// each (`column1` … `column6`), from `$4` on.
fn appended_values(n: usize) -> String {
    let rows: Vec<String> = (0..n)
        .map(|i| {
            let p = 4 + 6 * i;
            format!(
                "(${p}, ${}, ${}, ${}, ${}, ${})",
                p + 1,
                p + 2,
                p + 3,
                p + 4,
                p + 5
            )
        })
        .collect();
    format!("VALUES {}", rows.join(", "))
}

/// The insert of an append's events from `source` (the values, or a name for them): `$1` the
/// stream, `$2` when recorded, `$3` the version the stream must be at (null: no check). The check
/// reads the stream once for the whole statement (on SQLite too: an `INSERT` whose `SELECT`
/// reads its own table fills a temporary table first, so the check never sees the statement's
/// own rows). A writer that raced it past that version hits `UNIQUE (stream_id, version)`.
fn insert_events(source: &str) -> String {
    format!(
        "INSERT INTO events
             (stream_id, version, event_id, event_type, schema_version, envelope, recorded_at)
         SELECT $1, column1, column2, column3, column4, column5, $2
         FROM {source}
         WHERE $3 IS NULL
            OR (SELECT COALESCE(MAX(version), 0) FROM events WHERE stream_id = $1) = $3
         RETURNING position, version"
    )
}

/// Appends of up to this many events use statements built once per process.
const BUILT_ONCE: usize = 8;

/// [`build_insert`] for `n` events, built once for the usual sizes.
fn insert_statement(backend: Backend, n: usize) -> Cow<'static, str> {
    static POSTGRES: [OnceLock<String>; BUILT_ONCE] = [const { OnceLock::new() }; BUILT_ONCE];
    static SQLITE: [OnceLock<String>; BUILT_ONCE] = [const { OnceLock::new() }; BUILT_ONCE];
    let built = match backend {
        Backend::Postgres => &POSTGRES,
        Backend::Sqlite => &SQLITE,
    };
    match n.checked_sub(1).and_then(|i| built.get(i)) {
        Some(cell) => Cow::Borrowed(cell.get_or_init(|| build_insert(backend, n))),
        None => Cow::Owned(build_insert(backend, n)),
    }
}

/// One statement for `n` events of an append. On PostgreSQL it writes their outbox rows too,
/// only for events that were written: an append is one round trip between `BEGIN` and `COMMIT`,
/// as a plain `INSERT` is. SQLite has no `INSERT` inside `WITH`; its outbox rows are a second
/// statement.
fn build_insert(backend: Backend, n: usize) -> String {
    let values = appended_values(n);
    match backend {
        Backend::Postgres => format!(
            "WITH appended AS ({values}), event AS ({}), queued AS (
                 INSERT INTO outbox (event_id, category, stream_id, stream_seq, envelope, created_at)
                 SELECT column2, column6, $1, column1, column5, $2
                 FROM appended JOIN event ON event.version = appended.column1
                 ORDER BY column1
             )
             SELECT position, version FROM event",
            insert_events("appended")
        ),
        Backend::Sqlite => insert_events(&format!("({values})")),
    }
}

/// The global log from the start, in commit order, below the horizon `$1` (see
/// [`crate::horizon`]).
const FROM_START: &str = "SELECT position, version, envelope, recorded_at FROM events_in_commit_order
     WHERE commit_order < $1
     ORDER BY commit_order, position LIMIT $2";

/// The global log after the event at `$1`, in commit order, below the horizon `$2`.
const AFTER: &str = "SELECT position, version, envelope, recorded_at FROM events_in_commit_order
     WHERE commit_order < $2
       AND (commit_order, position) > ((SELECT commit_order FROM events_in_commit_order WHERE position = $1), $1)
     ORDER BY commit_order, position LIMIT $3";

/// What a writer believes about a stream before appending to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// The stream has no events yet.
    NoStream,
    /// The stream's last event has this version (`Exact(0)` is the same as [`Self::NoStream`]).
    Exact(i64),
    /// Append whatever the stream holds: for streams with a single writer, or facts that do not
    /// depend on earlier events.
    Any,
}

impl ExpectedVersion {
    /// True when a stream at version `current` (0 for none) satisfies this expectation.
    #[must_use]
    pub fn admits(self, current: i64) -> bool {
        match self {
            Self::NoStream => current == 0,
            Self::Exact(version) => current == version,
            Self::Any => true,
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoStream => f.write_str("no stream"),
            Self::Exact(version) => write!(f, "version {version}"),
            Self::Any => f.write_str("any version"),
        }
    }
}

/// An event as stored: its place in the global log and in its stream.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedEvent {
    /// Position in the database's global log: unique, taken when the append ran, may skip
    /// numbers. The log is read in commit order, which on PostgreSQL can differ from position
    /// order when transactions commit out of turn: continue a read from the last event returned.
    pub position: i64,
    /// Position in its stream: 1, 2, … with no gaps; equals `envelope.stream_seq`.
    pub version: i64,
    /// Unix milliseconds when the append ran.
    pub recorded_at: i64,
    pub envelope: Envelope,
}

/// What an append wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct AppendResult {
    /// The stream's version after the append.
    pub version: i64,
    /// The appended events, with their versions and positions, in order.
    pub events: Vec<RecordedEvent>,
}

impl AppendResult {
    /// The expectation for the writer's next append to the same stream.
    #[must_use]
    pub fn next_expected(&self) -> ExpectedVersion {
        ExpectedVersion::Exact(self.version)
    }
}

/// Appends `events` to `stream_id` in `tx` if the stream is at the `expected` version, and puts
/// each event in the outbox in the same transaction. The caller commits.
///
/// Each envelope gets the stream's next version as `stream_seq` (current + 1, current + 2, …,
/// where current is the version expected, checked by the first insert, or for
/// [`ExpectedVersion::Any`] one read) and `stream_id` set. Appends to different streams do not
/// wait for each other; on PostgreSQL each event records its transaction's id, which orders the
/// global log by commit. Keep the transaction short: readers of the global log wait for it.
///
/// An empty `events` checks the expectation and writes nothing.
///
/// # Errors
/// - [`EventStoreError::Conflict`] when the stream is at another version; nothing was written,
///   and the caller rolls back.
/// - [`EventStoreError::Malformed`] for an empty stream id or an envelope built for another
///   stream.
/// - [`EventStoreError::Storage`] when the database fails, including
///   [`mercato_storage::StorageError::Conflict`] for an event id that is already stored.
pub async fn append(
    tx: &mut Tx,
    stream_id: &str,
    expected: ExpectedVersion,
    events: Vec<Envelope>,
) -> Result<AppendResult, EventStoreError> {
    let backend = Backend::of_connection(tx);
    let span = span::database(backend, "INSERT", "events", &tracing::Span::current());
    append_now(tx, backend, stream_id, expected, events)
        .instrument(span)
        .await
}

async fn append_now(
    tx: &mut Tx,
    backend: Backend,
    stream_id: &str,
    expected: ExpectedVersion,
    events: Vec<Envelope>,
) -> Result<AppendResult, EventStoreError> {
    if stream_id.is_empty() {
        return Err(EventStoreError::Malformed("a stream needs a non-empty id".into()));
    }
    if let Some(stray) = events
        .iter()
        .find(|e| !e.stream_id.is_empty() && e.stream_id != stream_id)
    {
        // An envelope built for one aggregate and appended to another is a bug; refusing it is
        // kinder than silently moving the event.
        return Err(EventStoreError::Malformed(format!(
            "event {} was built for stream {:?} but appended to {stream_id:?}",
            stray.id, stray.stream_id
        )));
    }
    // A writer that names the version needs no read first: the first insert checks it.
    let named = match expected {
        ExpectedVersion::NoStream => Some(0),
        ExpectedVersion::Exact(version) => Some(version),
        ExpectedVersion::Any => None,
    };
    let current = match named {
        Some(version) if !events.is_empty() => version,
        _ => {
            let current = stream_version(&mut **tx, stream_id).await?;
            if !expected.admits(current) {
                return Err(conflict(tx, stream_id, expected).await);
            }
            current
        }
    };

    let recorded_at = now_millis();
    let mut version = current;
    let mut appended = Vec::with_capacity(events.len());
    for mut envelope in events {
        version += 1;
        envelope.stream_id = stream_id.to_owned();
        envelope.stream_seq = version;
        let body = serde_json::to_string(&envelope)
            .map_err(|e| EventStoreError::Malformed(format!("event {}: {e}", envelope.id)))?;
        appended.push((envelope, body));
    }
    // (version, position) of each event, in version order.
    let mut positions = Vec::with_capacity(appended.len());
    for chunk in appended.chunks(EVENTS_PER_STATEMENT) {
        // The expectation is checked by the first statement; the ones after it follow on.
        let guard = named.filter(|_| positions.is_empty());
        let sql = insert_statement(backend, chunk.len());
        let mut insert = sqlx::query(&sql).bind(stream_id).bind(recorded_at).bind(guard);
        for (envelope, body) in chunk {
            insert = insert
                .bind(envelope.stream_seq)
                .bind(&envelope.id)
                .bind(&envelope.event_type)
                .bind(i64::from(envelope.schema_version))
                .bind(body.as_str())
                .bind(envelope.category());
        }
        let rows = insert
            .fetch_all(&mut **tx)
            .await
            .map_err(|e| classify_insert(e.into(), stream_id, expected))?;
        if rows.len() != chunk.len() {
            return Err(conflict(tx, stream_id, expected).await);
        }
        let first = positions.len();
        for row in &rows {
            positions.push((
                row.try_get::<i64, _>("version")?,
                row.try_get::<i64, _>("position")?,
            ));
        }
        // RETURNING promises no order.
        positions[first..].sort_unstable();
        if backend == Backend::Sqlite {
            let outgoing: Vec<(&Envelope, &str)> = chunk.iter().map(|(e, body)| (e, body.as_str())).collect();
            outbox::append_serialized(tx, &outgoing).await?;
        }
    }
    let events = positions
        .into_iter()
        .zip(appended)
        .map(|((version, position), (envelope, _))| RecordedEvent {
            position,
            version,
            recorded_at,
            envelope,
        })
        .collect();
    Ok(AppendResult { version, events })
}

/// The conflict for a stream that is not at the `expected` version, naming the version it is at.
async fn conflict(tx: &mut Tx, stream_id: &str, expected: ExpectedVersion) -> EventStoreError {
    match stream_version(&mut **tx, stream_id).await {
        Ok(actual) => EventStoreError::Conflict {
            stream_id: stream_id.to_owned(),
            expected,
            actual: Some(actual),
        },
        Err(e) => e,
    }
}

/// The version of the stream's last event, or 0 when it has none.
///
/// # Errors
/// The database failed.
pub async fn stream_version<'e, E>(executor: E, stream_id: &str) -> Result<i64, EventStoreError>
where
    E: Executor<'e, Database = Any>,
{
    let version: i64 =
        sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM events WHERE stream_id = $1")
            .bind(stream_id)
            .fetch_one(executor)
            .await?;
    Ok(version)
}

/// Every event of `stream_id` in version order; empty for a stream that does not exist. Pass
/// `db.pool()`, or `&mut *tx` to read inside a transaction.
///
/// # Errors
/// The database failed, or a stored event is not a valid envelope.
pub async fn read_stream<'e, E>(executor: E, stream_id: &str) -> Result<Vec<RecordedEvent>, EventStoreError>
where
    E: Executor<'e, Database = Any>,
{
    let sql = format!("SELECT {COLUMNS} FROM events WHERE stream_id = $1 ORDER BY version");
    let rows = sqlx::query(&sql).bind(stream_id).fetch_all(executor).await?;
    rows.iter().map(decode_row).collect()
}

/// Up to `limit` events of the global log that come after the event at position `after`, in
/// commit order. Start from 0; continue from the last position returned (a position that names
/// no event reads nothing).
///
/// Every event committed before the call is there: on PostgreSQL the read first waits for the
/// transactions that were still running (see [`crate::horizon`]), so a reader that continues from
/// the last event it saw never misses one that commits later. Pass `db.pool()`: a transaction of
/// one's own would hold that wait up.
///
/// # Errors
/// The database failed, or a stored event is not a valid envelope.
pub async fn read_all<'e, E>(
    executor: E,
    after: i64,
    limit: usize,
) -> Result<Vec<RecordedEvent>, EventStoreError>
where
    E: Executor<'e, Database = Any> + Copy,
{
    let horizon = horizon::settle(executor).await?;
    let rows = read_all_rows(executor, after, limit, horizon).await?;
    rows.iter().map(decode_row).collect()
}

/// [`read_all`] below a `horizon` read before, without decoding, so a subscriber can apply the
/// events before a malformed one.
pub(crate) async fn read_all_rows<'e, E>(
    executor: E,
    after: i64,
    limit: usize,
    horizon: i64,
) -> Result<Vec<AnyRow>, EventStoreError>
where
    E: Executor<'e, Database = Any>,
{
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let query = if after > 0 {
        sqlx::query(AFTER).bind(after).bind(horizon).bind(limit)
    } else {
        sqlx::query(FROM_START).bind(horizon).bind(limit)
    };
    Ok(query.fetch_all(executor).await?)
}

pub(crate) fn decode_row(row: &AnyRow) -> Result<RecordedEvent, EventStoreError> {
    let position: i64 = row.try_get("position")?;
    let body: String = row.try_get("envelope")?;
    let envelope = serde_json::from_str(&body)
        .map_err(|e| EventStoreError::Malformed(format!("event at position {position}: {e}")))?;
    Ok(RecordedEvent {
        position,
        version: row.try_get("version")?,
        recorded_at: row.try_get("recorded_at")?,
        envelope,
    })
}

#[cfg(test)]
mod tests {
    use super::ExpectedVersion::{Any, Exact, NoStream};
    use super::{BUILT_ONCE, Backend, appended_values, build_insert, insert_statement};

    #[test]
    fn each_event_takes_the_next_six_placeholders_after_the_three_shared() {
        assert_eq!(
            appended_values(2),
            "VALUES ($4, $5, $6, $7, $8, $9), ($10, $11, $12, $13, $14, $15)"
        );
    }

    #[test]
    fn statements_built_once_equal_those_built_each_time_and_larger_appends_still_build() {
        for backend in [Backend::Sqlite, Backend::Postgres] {
            for n in [1, 3, BUILT_ONCE, BUILT_ONCE + 1, 100] {
                let statement = insert_statement(backend, n);
                assert_eq!(statement, build_insert(backend, n), "{backend:?} {n}");
                let last = format!("${})", 3 + 6 * n);
                assert!(statement.contains(&last), "{backend:?} {n}: {statement}");
            }
        }
    }

    #[test]
    fn expectations_admit_exactly_the_versions_they_name() {
        assert!(NoStream.admits(0));
        assert!(!NoStream.admits(1));
        assert!(Exact(0).admits(0), "Exact(0) means no stream");
        assert!(Exact(3).admits(3));
        assert!(!Exact(3).admits(2) && !Exact(3).admits(4));
        assert!(!Exact(-1).admits(0));
        assert!(Any.admits(0) && Any.admits(41));
    }

    #[test]
    fn expectations_read_as_words_in_messages() {
        assert_eq!(NoStream.to_string(), "no stream");
        assert_eq!(Exact(7).to_string(), "version 7");
        assert_eq!(Any.to_string(), "any version");
    }
}
