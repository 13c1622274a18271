//! Latest positions by key: the relay's per-(stream, type) positions and the inbox's per-stream
//! ones are both a table of keys and a position that only moves forward.

use mercato_storage::sqlx;
use mercato_storage::{StorageError, Tx};

/// Rows per upsert statement, so a statement's parameters stay well below every backend's limit.
const ROWS_PER_STATEMENT: usize = 100;

/// Stores each row's position under its key in `table` (key columns `keys`, position column
/// `position`), in `tx`, never moving a stored position back: one statement per hundred rows.
/// Keys must be distinct (PostgreSQL refuses to update one row twice in a statement).
pub(crate) async fn store<const N: usize>(
    tx: &mut Tx,
    table: &str,
    keys: [&str; N],
    position: &str,
    rows: &[([&str; N], i64)],
) -> Result<(), StorageError> {
    let width = N + 1;
    let keys = keys.join(", ");
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let values: Vec<String> = (0..chunk.len())
            .map(|row| {
                let params: Vec<String> = (1..=width).map(|k| format!("${}", row * width + k)).collect();
                format!("({})", params.join(", "))
            })
            .collect();
        let sql = format!(
            "INSERT INTO {table} ({keys}, {position}) VALUES {}
             ON CONFLICT ({keys}) DO UPDATE SET {position} = excluded.{position}
             WHERE {table}.{position} < excluded.{position}",
            values.join(", ")
        );
        let mut query = sqlx::query(&sql);
        for (key, seq) in chunk {
            for part in key {
                query = query.bind(*part);
            }
            query = query.bind(*seq);
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}
