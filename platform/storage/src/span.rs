//! Spans of database work, named and attributed the way OpenTelemetry's database conventions
//! say (`db.system`, `db.operation`, `db.collection.name`), so a trace shows where an order
//! waited on its database.
//!
//! They are `debug` spans: the trace pipeline records them, while logs at the default `info`
//! level (and a process with tracing off) never build them.

use sqlx::AnyConnection;

use crate::db::Backend;

impl Backend {
    /// The backend of an open connection (a transaction's).
    #[must_use]
    pub fn of_connection(connection: &AnyConnection) -> Self {
        if connection.backend_name().eq_ignore_ascii_case("postgresql") {
            Self::Postgres
        } else {
            Self::Sqlite
        }
    }

    /// The `db.system` OpenTelemetry names this backend by.
    #[must_use]
    pub fn system(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgresql",
        }
    }
}

/// The span of `operation` (`BEGIN`, `INSERT`, `UPDATE`, `TRANSACTION`) on `collection` (a
/// table, or what the transaction works on), a child of `parent` (often
/// `tracing::Span::current()`); none when `parent` is none, so work no trace asked for (a
/// projection's catch-up, a sweeper) does not start traces of its own.
#[must_use]
pub fn database(
    backend: Backend,
    operation: &'static str,
    collection: &'static str,
    parent: &tracing::Span,
) -> tracing::Span {
    let Some(parent) = parent.id() else {
        return tracing::Span::none();
    };
    tracing::debug_span!(
        parent: parent,
        "db",
        otel.kind = "client",
        otel.name = %format_args!("{operation} {collection}"),
        db.system = backend.system(),
        db.operation = operation,
        db.collection.name = collection,
    )
}
