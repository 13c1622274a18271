use mercato_eventstore::ExpectedVersion::{Exact, NoStream};
use mercato_eventstore::{
    CatchUpError, EventStoreError, RecordedEvent, catch_up, checkpoint, read_all, read_stream,
};
use mercato_storage::sqlx;
use mercato_testkit::TestBackend;

use crate::support::{Noted, Store, StreamCounts, append_committed, noted, store};

mercato_testkit::backend_tests!(
    read_stream_returns_only_that_streams_events_in_version_order,
    read_all_pages_through_every_event_once_in_strictly_increasing_positions,
    a_malformed_stored_event_is_reported_with_its_position_and_projections_stop_just_before_it,
);

fn numbers(events: &[RecordedEvent]) -> Vec<i64> {
    events
        .iter()
        .map(|e| e.envelope.decode::<Noted>().expect("decode").n)
        .collect()
}

async fn read_stream_returns_only_that_streams_events_in_version_order(backend: TestBackend) {
    let Store { db, .. } = &store(backend).await;
    // Interleave two streams so version order and position order differ per stream.
    for n in 1..=5 {
        let expected = if n == 1 { NoStream } else { Exact(n - 1) };
        append_committed(db, "a", expected, vec![noted("a", n)]).await;
        append_committed(db, "b", expected, vec![noted("b", 10 * n)]).await;
    }

    let a = read_stream(db.pool(), "a").await.unwrap();

    assert_eq!(a.iter().map(|e| e.version).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
    assert_eq!(numbers(&a), [1, 2, 3, 4, 5]);
    assert!(a.iter().all(|e| e.envelope.stream_id == "a"));
    assert_eq!(
        numbers(&read_stream(db.pool(), "b").await.unwrap()),
        [10, 20, 30, 40, 50]
    );
    assert!(read_stream(db.pool(), "c").await.unwrap().is_empty());
    let mut tx = db.begin().await.unwrap();
    assert_eq!(
        read_stream(&mut *tx, "a").await.unwrap(),
        a,
        "reads work inside a transaction too"
    );
    drop(tx);
    db.close().await;
}

async fn read_all_pages_through_every_event_once_in_strictly_increasing_positions(backend: TestBackend) {
    let Store { db, .. } = &store(backend).await;
    let mut appended = Vec::new();
    for round in 0..10 {
        for stream in ["x", "y", "z"] {
            let expected = if round == 0 { NoStream } else { Exact(round) };
            let result = append_committed(db, stream, expected, vec![noted(stream, round)]).await;
            appended.extend(result.events);
        }
    }

    let all = read_all(db.pool(), 0, 1_000).await.unwrap();

    assert_eq!(all, appended, "global order is append order");
    assert!(all.windows(2).all(|w| w[0].position < w[1].position));
    let mut paged = Vec::new();
    let mut after = 0;
    loop {
        let page = read_all(db.pool(), after, 7).await.unwrap();
        assert!(page.len() <= 7);
        let Some(last) = page.last() else { break };
        after = last.position;
        paged.extend(page);
    }
    assert_eq!(paged, all, "pages of 7 cover every event once");
    assert!(read_all(db.pool(), after, 10).await.unwrap().is_empty());
    assert!(read_all(db.pool(), 0, 0).await.unwrap().is_empty());
    db.close().await;
}

async fn a_malformed_stored_event_is_reported_with_its_position_and_projections_stop_just_before_it(
    backend: TestBackend,
) {
    let Store { db, .. } = &store(backend).await;
    let good = append_committed(db, "good", NoStream, vec![noted("good", 1)]).await;
    let bad_position: i64 = sqlx::query_scalar(
        "INSERT INTO events (stream_id, version, event_id, event_type, schema_version, envelope, recorded_at)
         VALUES ('broken', 1, 'bad-1', 'Noted', 1, '{not json', 0)
         RETURNING position",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    let after = append_committed(db, "good", Exact(1), vec![noted("good", 2)]).await;

    let err = read_all(db.pool(), 0, 10).await.unwrap_err();
    assert!(
        matches!(&err, EventStoreError::Malformed(m) if m.contains(&format!("position {bad_position}"))),
        "{err:?}"
    );
    assert_eq!(read_all(db.pool(), bad_position, 10).await.unwrap(), after.events);
    assert_eq!(read_stream(db.pool(), "good").await.unwrap().len(), 2);

    let counts = StreamCounts::new();
    let err = catch_up(db, &counts, 10).await.unwrap_err();
    assert!(
        matches!(&err, CatchUpError::Store(EventStoreError::Malformed(_))),
        "{err:?}"
    );
    assert_eq!(
        checkpoint(db.pool(), StreamCounts::NAME).await.unwrap(),
        good.events[0].position,
        "the projection applied the event before the malformed one and stopped there"
    );
    assert_eq!(StreamCounts::rows(db).await.len(), 1);
    db.close().await;
}
