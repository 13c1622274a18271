use std::sync::Arc;

use mercato_eventstore::ExpectedVersion::{Any, Exact, NoStream};
use mercato_eventstore::{EventStoreError, append, read_stream, stream_version};
use mercato_storage::{StorageError, Tx, sqlx};
use mercato_testkit::TestBackend;
use tokio::sync::Barrier;
use tokio::task::JoinSet;

use crate::support::{Store, append_committed, count, join_all, noted, noted_many, store};

mercato_testkit::backend_tests!(
    appends_to_a_new_stream_number_its_events_from_one_under_no_stream_exact_and_any,
    a_wrong_expected_version_is_a_conflict_and_writes_nothing,
    of_eight_concurrent_appenders_expecting_the_same_version_exactly_one_wins,
    an_append_from_a_stale_snapshot_is_refused_and_never_duplicates_a_version,
    an_envelope_for_another_stream_an_empty_stream_id_or_a_repeated_event_id_is_refused,
);

async fn appends_to_a_new_stream_number_its_events_from_one_under_no_stream_exact_and_any(
    backend: TestBackend,
) {
    let Store { db, .. } = &store(backend).await;

    let first = append_committed(db, "order-1", NoStream, vec![noted("order-1", 1)]).await;
    let second = append_committed(
        db,
        "order-1",
        first.next_expected(),
        noted_many("order-1", [2, 3]),
    )
    .await;
    // An envelope with no stream yet is given the one it is appended to.
    let third = append_committed(db, "order-1", Any, vec![noted("", 4)]).await;

    assert_eq!((first.version, second.version, third.version), (1, 3, 4));
    let appended = [first.events, second.events, third.events].concat();
    let versions: Vec<i64> = appended.iter().map(|e| e.version).collect();
    assert_eq!(versions, [1, 2, 3, 4]);
    for event in &appended {
        assert_eq!(event.envelope.stream_seq, event.version, "{event:?}");
        assert_eq!(event.envelope.stream_id, "order-1", "{event:?}");
    }
    assert!(appended.windows(2).all(|w| w[0].position < w[1].position));
    assert_eq!(
        read_stream(db.pool(), "order-1").await.unwrap(),
        appended,
        "what append returned is what was stored"
    );
    assert_eq!(stream_version(db.pool(), "order-1").await.unwrap(), 4);
    assert_eq!(stream_version(db.pool(), "order-2").await.unwrap(), 0);

    let mut tx = db.begin().await.unwrap();
    let nothing = append(&mut tx, "order-1", Exact(4), Vec::new()).await.unwrap();
    assert_eq!(
        (nothing.version, nothing.events.len()),
        (4, 0),
        "an empty append only checks"
    );
    let err = append(&mut tx, "order-1", Exact(3), Vec::new())
        .await
        .unwrap_err();
    assert!(err.is_conflict(), "{err:?}");
    tx.commit().await.unwrap();
    db.close().await;
}

async fn a_wrong_expected_version_is_a_conflict_and_writes_nothing(backend: TestBackend) {
    let Store { db, .. } = &store(backend).await;
    append_committed(db, "order-1", NoStream, noted_many("order-1", [1, 2])).await;

    let attempts = [
        ("order-1", NoStream, Some(2)),
        ("order-1", Exact(0), Some(2)),
        ("order-1", Exact(1), Some(2)),
        ("order-1", Exact(3), Some(2)),
        ("order-2", Exact(1), Some(0)),
    ];
    // One event, and several written by one statement: the check refuses them all together.
    let batches = attempts
        .iter()
        .flat_map(|&attempt| [(attempt, vec![9]), (attempt, vec![9, 10, 11])]);
    for ((stream, expected, found), notes) in batches {
        let mut tx = db.begin().await.unwrap();
        let err = append(&mut tx, stream, expected, noted_many(stream, notes))
            .await
            .unwrap_err();
        match &err {
            EventStoreError::Conflict {
                stream_id,
                expected: reported,
                actual,
            } => {
                assert_eq!(
                    (stream_id.as_str(), *reported, *actual),
                    (stream, expected, found)
                );
            }
            other => panic!("{stream} expecting {expected}: {other:?}"),
        }
        assert!(err.is_conflict() && !err.is_transient());
        // Even a caller that commits after the conflict has written nothing.
        tx.commit().await.unwrap();
    }

    assert_eq!(count(db, "SELECT COUNT(*) FROM events").await, 2);
    assert_eq!(count(db, "SELECT COUNT(*) FROM outbox").await, 2);
    assert_eq!(stream_version(db.pool(), "order-1").await.unwrap(), 2);
    db.close().await;
}

async fn of_eight_concurrent_appenders_expecting_the_same_version_exactly_one_wins(backend: TestBackend) {
    const WRITERS: usize = 8;
    let Store { db, .. } = &store(backend).await;
    append_committed(db, "order-1", NoStream, vec![noted("order-1", 0)]).await;

    let start = Arc::new(Barrier::new(WRITERS));
    let mut writers = JoinSet::new();
    for n in 0..WRITERS {
        let (db, start) = (db.clone(), start.clone());
        writers.spawn(async move {
            // Odd writers append two events by one statement, even ones one.
            let note = 10 * i64::try_from(n).unwrap();
            let events = noted_many("order-1", (note..).take(1 + n % 2));
            let id = events[0].id.clone();
            start.wait().await;
            let mut tx = db.begin().await.expect("begin");
            let appended = append(&mut tx, "order-1", Exact(1), events).await;
            if appended.is_ok() {
                tx.commit().await.expect("commit");
            }
            (id, appended)
        });
    }
    let outcomes = join_all(writers).await;

    let winners: Vec<&String> = outcomes
        .iter()
        .filter(|(_, outcome)| outcome.is_ok())
        .map(|(id, _)| id)
        .collect();
    assert_eq!(winners.len(), 1, "{outcomes:?}");
    for (_, outcome) in &outcomes {
        if let Err(err) = outcome {
            assert!(
                matches!(
                    err,
                    EventStoreError::Conflict {
                        actual: Some(2 | 3) | None,
                        ..
                    }
                ),
                "every loser gets a conflict: {err:?}"
            );
        }
    }
    let won = outcomes
        .iter()
        .find_map(|(_, outcome)| outcome.as_ref().ok())
        .map_or(0, |appended| appended.events.len());
    let stream = read_stream(db.pool(), "order-1").await.unwrap();
    assert_eq!(stream.len(), 1 + won);
    assert_eq!(&stream[1].envelope.id, winners[0]);
    assert_eq!(
        count(db, "SELECT COUNT(*) FROM outbox").await,
        i64::try_from(1 + won).unwrap()
    );
    db.close().await;
}

async fn an_append_from_a_stale_snapshot_is_refused_and_never_duplicates_a_version(backend: TestBackend) {
    let Store { db, .. } = &store(backend).await;
    append_committed(db, "order-1", NoStream, vec![noted("order-1", 1)]).await;

    // A transaction whose snapshot predates another writer's commit: a deferred transaction on
    // SQLite, REPEATABLE READ on PostgreSQL. Its first read fixes the snapshot.
    let mut stale = match backend {
        TestBackend::Sqlite => Tx::from(db.pool().begin().await.unwrap()),
        TestBackend::Postgres => {
            let mut tx = db.begin().await.unwrap();
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                .execute(&mut *tx)
                .await
                .unwrap();
            tx
        }
    };
    assert_eq!(stream_version(&mut *stale, "order-1").await.unwrap(), 1);
    let other = append_committed(db, "order-1", Exact(1), vec![noted("order-1", 2)]).await;

    let err = append(&mut stale, "order-1", Exact(1), vec![noted("order-1", 3)])
        .await
        .unwrap_err();

    match backend {
        // The insert hits UNIQUE (stream_id, version), which is the version conflict.
        TestBackend::Postgres => assert!(
            matches!(&err, EventStoreError::Conflict { actual: None, .. }),
            "{err:?}"
        ),
        // SQLite refuses to upgrade a stale read transaction to a writer: retry from the start.
        TestBackend::Sqlite => assert!(err.is_transient(), "{err:?}"),
    }
    drop(stale);
    let stream = read_stream(db.pool(), "order-1").await.unwrap();
    assert_eq!(stream.len(), 2);
    assert_eq!(stream[1].envelope.id, other.events[0].envelope.id);
    assert_eq!(count(db, "SELECT COUNT(*) FROM outbox").await, 2);
    db.close().await;
}

async fn an_envelope_for_another_stream_an_empty_stream_id_or_a_repeated_event_id_is_refused(
    backend: TestBackend,
) {
    let Store { db, .. } = &store(backend).await;

    let mut tx = db.begin().await.unwrap();
    let err = append(&mut tx, "order-1", NoStream, vec![noted("order-2", 1)])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, EventStoreError::Malformed(m) if m.contains("order-2")),
        "{err:?}"
    );
    let err = append(&mut tx, "", NoStream, vec![noted("", 1)])
        .await
        .unwrap_err();
    assert!(matches!(err, EventStoreError::Malformed(_)), "{err:?}");
    tx.commit().await.unwrap();
    assert_eq!(count(db, "SELECT COUNT(*) FROM events").await, 0);

    let event = noted("order-1", 1);
    append_committed(db, "order-1", NoStream, vec![event.clone()]).await;
    let mut tx = db.begin().await.unwrap();
    let err = append(&mut tx, "order-1", Any, vec![event]).await.unwrap_err();
    assert!(
        matches!(err, EventStoreError::Storage(StorageError::Conflict(_))),
        "a repeated event id is a storage conflict, not a version conflict: {err:?}"
    );
    assert!(!err.is_conflict());
    drop(tx);
    assert_eq!(count(db, "SELECT COUNT(*) FROM events").await, 1);
    assert_eq!(count(db, "SELECT COUNT(*) FROM outbox").await, 1);
    db.close().await;
}
