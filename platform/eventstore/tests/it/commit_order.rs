use std::sync::Arc;

use mercato_eventstore::ExpectedVersion::{Exact, NoStream};
use mercato_eventstore::{RecordedEvent, append, catch_up, checkpoint, read_all};
use mercato_storage::{StorageError, migrate, sqlx};
use mercato_testkit::TestBackend;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::support::{
    MIGRATIONS, MIGRATIONS_BEFORE_COMMIT_ORDER, Noted, PATIENCE, Seen, Store, append_committed, noted, store,
    store_with,
};

mercato_testkit::backend_tests!(
    a_transaction_that_took_a_lower_position_and_commits_later_is_read_after_and_never_skipped,
    events_stored_before_the_commit_order_migration_keep_their_order_and_projections_resume,
);

/// Waits for a spawned commit, if any, to succeed.
async fn committed(commit: Option<JoinHandle<Result<(), StorageError>>>) {
    if let Some(commit) = commit {
        tokio::time::timeout(PATIENCE, commit)
            .await
            .expect("the early transaction commits")
            .expect("no panic")
            .expect("commit");
    }
}

fn number(event: &RecordedEvent) -> i64 {
    event.envelope.decode::<Noted>().expect("decode").n
}

async fn a_transaction_that_took_a_lower_position_and_commits_later_is_read_after_and_never_skipped(
    backend: TestBackend,
) {
    let Store { db, .. } = &store(backend).await;
    let seen = Arc::new(Seen::new("late_commit"));

    let mut early = db.begin().await.unwrap();
    let b1 = append(&mut early, "b", NoStream, vec![noted("b", 1)])
        .await
        .unwrap();
    let (took_position, position_taken) = oneshot::channel();
    let (commit, go) = oneshot::channel::<()>();
    let late = tokio::spawn({
        let db = db.clone();
        async move {
            let mut tx = db.begin().await.expect("begin");
            let a1 = append(&mut tx, "a", NoStream, vec![noted("a", 1)])
                .await
                .expect("append");
            let _ = took_position.send(a1.events[0].position);
            go.await.expect("told to commit");
            tx.commit().await.expect("commit");
            a1
        }
    });
    if backend == TestBackend::Postgres {
        // PostgreSQL appends do not wait for each other: the late transaction takes its
        // position now, below the one `early` takes next. (SQLite's writers take turns, so
        // there it waits for `early` to commit.)
        tokio::time::timeout(PATIENCE, position_taken)
            .await
            .expect("the late transaction appends beside the early one")
            .expect("position");
    }
    let b2 = append(&mut early, "b", Exact(1), vec![noted("b", 2)])
        .await
        .unwrap();
    // On SQLite the late transaction, queued for the writer, joins the early one's group, whose
    // commit waits for it to end: the early commit is awaited once the late one is told to go.
    let mut early = Some(tokio::spawn(early.commit()));
    if backend == TestBackend::Postgres {
        committed(early.take()).await;
    }
    // A catch-up that starts while the late transaction is still open.
    let catching_up = tokio::spawn({
        let (db, seen) = (db.clone(), seen.clone());
        async move { catch_up(&db, &*seen, 10).await.expect("catch up") }
    });
    commit.send(()).expect("the late transaction waits");
    let a1 = tokio::time::timeout(PATIENCE, late)
        .await
        .expect("the late transaction commits")
        .expect("no panic");
    committed(early).await;
    tokio::time::timeout(PATIENCE, catching_up)
        .await
        .expect("the catch-up ends")
        .expect("no panic");
    catch_up(db, &*seen, 10).await.unwrap();

    let (b1, b2, a1) = (&b1.events[0], &b2.events[0], &a1.events[0]);
    if backend == TestBackend::Postgres {
        assert!(
            a1.position < b2.position,
            "the late transaction took the lower position"
        );
    }
    let in_commit_order = [&b1.envelope.id, &b2.envelope.id, &a1.envelope.id];
    let all = read_all(db.pool(), 0, 10).await.unwrap();
    assert_eq!(
        all.iter().map(|e| &e.envelope.id).collect::<Vec<_>>(),
        in_commit_order,
        "the log reads in commit order"
    );
    assert_eq!(
        seen.event_ids(db).await.iter().collect::<Vec<_>>(),
        in_commit_order,
        "the projection applied each once, the late commit last"
    );
    assert_eq!(checkpoint(db.pool(), "late_commit").await.unwrap(), a1.position);

    let c1 = append_committed(db, "c", NoStream, vec![noted("c", 1)]).await;
    assert_eq!(
        catch_up(db, &*seen, 10).await.unwrap(),
        1,
        "from the late commit's checkpoint only the new event follows, not the higher positions before it"
    );
    assert_eq!(seen.event_ids(db).await.last(), Some(&c1.events[0].envelope.id));
    assert_eq!(read_all(db.pool(), a1.position, 10).await.unwrap(), c1.events);
    db.close().await;
}

async fn events_stored_before_the_commit_order_migration_keep_their_order_and_projections_resume(
    backend: TestBackend,
) {
    let store = store_with(backend, MIGRATIONS_BEFORE_COMMIT_ORDER).await;
    let db = &store.db;
    let mut before = Vec::new();
    for n in 1..=4 {
        let stream = ["x", "y"][usize::try_from(n % 2).unwrap()];
        let expected = if n <= 2 { NoStream } else { Exact(1) };
        before.extend(
            append_committed(db, stream, expected, vec![noted(stream, n)])
                .await
                .events,
        );
    }
    // A projection that had applied the first two events under the old schema.
    sqlx::query("INSERT INTO checkpoints (name, position, updated_at) VALUES ('resumed', $1, 0)")
        .bind(before[1].position)
        .execute(db.pool())
        .await
        .unwrap();

    assert_eq!(
        migrate(db, "test", MIGRATIONS).await.unwrap(),
        1,
        "only the new migration runs"
    );
    let after = append_committed(db, "x", Exact(2), vec![noted("x", 5)])
        .await
        .events;

    let all = read_all(db.pool(), 0, 10).await.unwrap();
    assert_eq!(all.iter().map(number).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
    assert_eq!(all[..4], before[..], "old events read as they were stored");
    let seen = Seen::new("resumed");
    assert_eq!(catch_up(db, &seen, 2).await.unwrap(), 3);
    assert_eq!(
        seen.event_ids(db).await,
        [&before[2], &before[3], &after[0]]
            .iter()
            .map(|e| e.envelope.id.clone())
            .collect::<Vec<_>>(),
        "the projection resumed after its checkpoint, each event once"
    );
    assert_eq!(checkpoint(db.pool(), "resumed").await.unwrap(), after[0].position);
    db.close().await;
}
