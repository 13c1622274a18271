use mercato_eventstore::ExpectedVersion::{Exact, NoStream};
use mercato_eventstore::{append, read_stream};
use mercato_messaging::Envelope;
use mercato_storage::sqlx;
use mercato_testkit::TestBackend;

use crate::support::{Store, append_committed, count, noted_many, store};

mercato_testkit::backend_tests!(
    a_rolled_back_or_dropped_append_leaves_neither_events_nor_outbox_rows,
    a_committed_append_writes_one_outbox_row_per_event_with_stream_seq_equal_to_version,
    an_append_of_more_events_than_one_statement_holds_keeps_them_in_order_in_the_outbox,
);

async fn a_rolled_back_or_dropped_append_leaves_neither_events_nor_outbox_rows(backend: TestBackend) {
    let Store { db, .. } = &store(backend).await;

    let mut tx = db.begin().await.unwrap();
    append(&mut tx, "order-1", NoStream, noted_many("order-1", [1, 2]))
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    {
        let mut tx = db.begin().await.unwrap();
        append(&mut tx, "order-1", NoStream, noted_many("order-1", [1, 2, 3]))
            .await
            .unwrap();
    }

    assert_eq!(count(db, "SELECT COUNT(*) FROM events").await, 0);
    assert_eq!(count(db, "SELECT COUNT(*) FROM outbox").await, 0);
    let appended = append_committed(db, "order-1", NoStream, noted_many("order-1", [1])).await;
    assert_eq!(
        appended.version, 1,
        "the stream starts at 1 again: nothing of the undone appends remains"
    );
    db.close().await;
}

async fn a_committed_append_writes_one_outbox_row_per_event_with_stream_seq_equal_to_version(
    backend: TestBackend,
) {
    let Store { db, .. } = &store(backend).await;
    append_committed(db, "order-1", NoStream, noted_many("order-1", [1, 2])).await;
    append_committed(db, "order-2", NoStream, noted_many("order-2", [1])).await;
    append_committed(db, "order-1", Exact(2), noted_many("order-1", [3])).await;

    let rows: Vec<(String, String, String, i64, String)> = sqlx::query_as(
        "SELECT event_id, category, stream_id, stream_seq, envelope FROM outbox ORDER BY position",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    let stored: Vec<_> = [
        read_stream(db.pool(), "order-1").await.unwrap(),
        read_stream(db.pool(), "order-2").await.unwrap(),
    ]
    .concat();

    assert_eq!(rows.len(), stored.len(), "one outbox row per event");
    for event in &stored {
        let (_, category, stream_id, stream_seq, body) = rows
            .iter()
            .find(|row| row.0 == event.envelope.id)
            .unwrap_or_else(|| panic!("no outbox row for {}", event.envelope.id));
        assert_eq!(category, "tests");
        assert_eq!(
            (stream_id.as_str(), *stream_seq),
            (event.envelope.stream_id.as_str(), event.version)
        );
        let published: Envelope = serde_json::from_str(body).unwrap();
        assert_eq!(
            published, event.envelope,
            "the outbox carries the stored envelope"
        );
    }
    let seqs: Vec<(String, i64)> = rows.iter().map(|r| (r.2.clone(), r.3)).collect();
    assert_eq!(
        seqs,
        [
            ("order-1".to_owned(), 1),
            ("order-1".to_owned(), 2),
            ("order-2".to_owned(), 1),
            ("order-1".to_owned(), 3),
        ],
        "outbox rows follow commit order, each with its stream version"
    );
    db.close().await;
}

/// The outbox rows of an append are written together, a hundred per statement.
async fn an_append_of_more_events_than_one_statement_holds_keeps_them_in_order_in_the_outbox(
    backend: TestBackend,
) {
    let Store { db, .. } = &store(backend).await;
    let appended = append_committed(db, "order-1", NoStream, noted_many("order-1", 1..=250)).await;
    assert_eq!(appended.version, 250);

    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT event_id, stream_seq FROM outbox ORDER BY position")
            .fetch_all(db.pool())
            .await
            .unwrap();
    let expected: Vec<(String, i64)> = appended
        .events
        .iter()
        .map(|e| (e.envelope.id.clone(), e.version))
        .collect();
    assert_eq!(rows, expected, "one row per event, in version order");
    db.close().await;
}
