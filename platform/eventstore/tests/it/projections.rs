use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mercato_eventstore::ExpectedVersion::{Any, Exact, NoStream};
use mercato_eventstore::{
    CatchUpError, Projection, ProjectionError, append, catch_up, checkpoint, read_all, rebuild, run,
};
use mercato_storage::Db;
use mercato_testkit::{TestBackend, eventually};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::support::{
    PATIENCE, Seen, Store, StreamCounts, append_committed, join_all, noted, noted_many, store,
};

mercato_testkit::backend_tests!(
    a_projection_caught_up_along_the_way_equals_one_rebuilt_from_zero,
    a_failing_apply_keeps_the_events_before_it_and_the_next_catch_up_applies_from_it_exactly_once,
    a_projection_running_while_eight_writers_append_applies_every_event_once_in_stream_order,
    concurrent_catch_ups_of_one_projection_apply_each_event_once,
    the_runner_applies_when_woken_and_stops_on_shutdown,
    the_runner_retries_a_failing_apply_with_backoff_and_skips_nothing,
);

async fn last_position(db: &Db) -> i64 {
    let mut after = 0;
    loop {
        let page = read_all(db.pool(), after, 500).await.unwrap();
        match page.last() {
            Some(last) => after = last.position,
            None => return after,
        }
    }
}

async fn a_projection_caught_up_along_the_way_equals_one_rebuilt_from_zero(backend: TestBackend) {
    let Store { db, .. } = &store(backend).await;
    let counts = StreamCounts::new();
    assert_eq!(checkpoint(db.pool(), StreamCounts::NAME).await.unwrap(), 0);

    for n in 1..=4 {
        for stream in ["a", "b", "c"] {
            append_committed(db, stream, Any, vec![noted(stream, n)]).await;
        }
    }
    assert_eq!(catch_up(db, &counts, 5).await.unwrap(), 12);
    append_committed(db, "a", Exact(4), noted_many("a", 5..=9)).await;
    append_committed(db, "d", NoStream, noted_many("d", [100, 200])).await;
    assert_eq!(catch_up(db, &counts, 3).await.unwrap(), 7);
    assert_eq!(catch_up(db, &counts, 3).await.unwrap(), 0, "nothing new");
    let caught_up = StreamCounts::rows(db).await;
    let last = last_position(db).await;
    assert_eq!(checkpoint(db.pool(), StreamCounts::NAME).await.unwrap(), last);

    assert_eq!(rebuild(db, &counts).await.unwrap(), 19);

    assert_eq!(StreamCounts::rows(db).await, caught_up);
    assert_eq!(checkpoint(db.pool(), StreamCounts::NAME).await.unwrap(), last);
    let by_stream: Vec<(&str, i64, i64, i64)> = caught_up
        .iter()
        .map(|(s, events, version, _, total)| (s.as_str(), *events, *version, *total))
        .collect();
    assert_eq!(
        by_stream,
        [
            ("a", 9, 9, 45),
            ("b", 4, 4, 10),
            ("c", 4, 4, 10),
            ("d", 2, 2, 300)
        ]
    );
    db.close().await;
}

async fn a_failing_apply_keeps_the_events_before_it_and_the_next_catch_up_applies_from_it_exactly_once(
    backend: TestBackend,
) {
    let Store { db, .. } = &store(backend).await;
    let counts = StreamCounts::failing_at(3, u32::MAX);
    let events = append_committed(db, "order-1", NoStream, noted_many("order-1", 1..=5))
        .await
        .events;

    for _ in 0..2 {
        let err = catch_up(db, &counts, 100).await.unwrap_err();
        let CatchUpError::Apply {
            projection,
            position,
            source,
        } = &err
        else {
            panic!("expected an apply failure, got {err:?}");
        };
        assert_eq!(
            (projection.as_str(), *position),
            (StreamCounts::NAME, events[2].position)
        );
        assert!(matches!(source, ProjectionError::Failed(_)), "{source:?}");
        assert_eq!(
            checkpoint(db.pool(), StreamCounts::NAME).await.unwrap(),
            events[1].position,
            "the first two are checkpointed, the third is not"
        );
        assert_eq!(
            StreamCounts::rows(db).await,
            [("order-1".to_owned(), 2, 2, events[1].position, 3)],
            "the first two are applied once, however often the third fails"
        );
    }

    counts.heal();
    assert_eq!(catch_up(db, &counts, 100).await.unwrap(), 3);

    assert_eq!(
        StreamCounts::rows(db).await,
        [("order-1".to_owned(), 5, 5, events[4].position, 15)],
        "each event applied exactly once"
    );
    assert_eq!(
        checkpoint(db.pool(), StreamCounts::NAME).await.unwrap(),
        events[4].position
    );
    assert_eq!(catch_up(db, &counts, 100).await.unwrap(), 0);
    db.close().await;
}

async fn a_projection_running_while_eight_writers_append_applies_every_event_once_in_stream_order(
    backend: TestBackend,
) {
    const WRITERS: i64 = 8;
    const EVENTS_EACH: i64 = 20;
    let Store { db, .. } = &store(backend).await;
    let seen = Arc::new(Seen::new("gap_watcher"));
    let runner = Runner::start(db, seen.clone(), Duration::from_millis(2));
    let wake = runner.wake.clone();

    let mut writers = JoinSet::new();
    for writer in 0..WRITERS {
        let (db, wake) = (db.clone(), wake.clone());
        writers.spawn(async move {
            let stream = format!("writer-{writer}");
            let mut ids = Vec::new();
            for n in 0..EVENTS_EACH {
                let event = noted(&stream, n);
                ids.push((event.id.clone(), (stream.clone(), n)));
                let mut tx = db.begin().await.expect("begin");
                append(&mut tx, &stream, Exact(n), vec![event])
                    .await
                    .expect("append");
                // Some writers commit a moment after taking a position, so a later position
                // often becomes visible first: a reader by position alone would step over this one.
                if (n + writer) % 3 == 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                tx.commit().await.expect("commit");
                wake.notify_one();
            }
            ids
        });
    }
    let appended: HashMap<String, (String, i64)> = join_all(writers).await.into_iter().flatten().collect();
    let last = last_position(db).await;
    eventually(PATIENCE, "the projection reaches the last event", || async {
        (checkpoint(db.pool(), "gap_watcher").await.unwrap() == last).then_some(())
    })
    .await;
    runner.stop().await;

    let ids = seen.event_ids(db).await;
    assert_eq!(appended.len(), usize::try_from(WRITERS * EVENTS_EACH).unwrap());
    assert_eq!(ids.len(), appended.len(), "no event skipped or seen twice");
    assert_eq!(
        ids.iter().cloned().collect::<HashSet<_>>(),
        appended.keys().cloned().collect::<HashSet<_>>()
    );
    let mut next_in_stream: HashMap<&str, i64> = HashMap::new();
    for id in &ids {
        let (stream, n) = &appended[id];
        let next = next_in_stream.entry(stream.as_str()).or_insert(0);
        assert_eq!(n, next, "{stream} was applied out of its order");
        *next += 1;
    }
    db.close().await;
}

async fn concurrent_catch_ups_of_one_projection_apply_each_event_once(backend: TestBackend) {
    const RUNNERS: usize = 3;
    const EVENTS: i64 = 60;
    let Store { db, .. } = &store(backend).await;
    let seen = Arc::new(Seen::new("replicated"));
    let writing = Arc::new(AtomicBool::new(true));

    let mut runners = JoinSet::new();
    for _ in 0..RUNNERS {
        let (db, seen, writing) = (db.clone(), seen.clone(), writing.clone());
        runners.spawn(async move {
            let mut applied = 0;
            loop {
                let last_round = !writing.load(Ordering::SeqCst);
                applied += catch_up(&db, &*seen, 4).await.expect("catch up");
                if last_round {
                    return applied;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
    }
    for n in 0..EVENTS {
        let stream = ["p", "q", "r"][usize::try_from(n % 3).unwrap()];
        append_committed(db, stream, Any, vec![noted(stream, n)]).await;
    }
    writing.store(false, Ordering::SeqCst);
    let applied: u64 = join_all(runners).await.into_iter().sum();

    assert_eq!(applied, 60, "between them the runners applied each event once");
    let ids = seen.event_ids(db).await;
    assert_eq!(ids.len(), 60);
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 60);
    db.close().await;
}

async fn the_runner_applies_when_woken_and_stops_on_shutdown(backend: TestBackend) {
    let Store { db, .. } = &store(backend).await;
    let projection: Arc<dyn Projection> = Arc::new(StreamCounts::new());
    let runner = Runner::start(db, projection.clone(), ONLY_WHEN_WOKEN);

    for round in 1..=3 {
        append_committed(db, "order-1", Any, vec![noted("order-1", round)]).await;
        runner.wake.notify_one();
        eventually(PATIENCE, "the woken runner applies the new event", || async {
            let rows = StreamCounts::rows(db).await;
            (rows.first().map(|r| r.1) == Some(round)).then_some(())
        })
        .await;
    }
    runner.stop().await;
    db.close().await;
}

async fn the_runner_retries_a_failing_apply_with_backoff_and_skips_nothing(backend: TestBackend) {
    let Store { db, .. } = &store(backend).await;
    let counts = Arc::new(StreamCounts::failing_at(2, 2));
    let runner = Runner::start(db, counts.clone(), ONLY_WHEN_WOKEN);

    let events = append_committed(db, "order-1", NoStream, noted_many("order-1", 1..=3))
        .await
        .events;
    runner.wake.notify_one();
    eventually(PATIENCE, "the runner gets past the failing event", || async {
        let rows = StreamCounts::rows(db).await;
        (rows.first().map(|r| r.1) == Some(3)).then_some(())
    })
    .await;
    runner.stop().await;

    assert_eq!(counts.failures(), 2, "it failed twice and was retried");
    assert_eq!(
        StreamCounts::rows(db).await,
        [("order-1".to_owned(), 3, 3, events[2].position, 6)],
        "every event applied exactly once"
    );
    db.close().await;
}

/// A poll interval no test outlives: only a wake can make the runner catch up.
const ONLY_WHEN_WOKEN: Duration = Duration::from_secs(3_600);

/// A projection's [`run`] loop on its own task, with the handles a test drives it by.
struct Runner {
    wake: Arc<Notify>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Runner {
    fn start(db: &Db, projection: Arc<dyn Projection>, poll: Duration) -> Self {
        let wake = Arc::new(Notify::new());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run(db.clone(), projection, wake.clone(), poll, shutdown.clone()));
        Self { wake, shutdown, task }
    }

    /// Cancels the runner and waits for it to stop, as a service's shutdown does.
    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("the runner stops on shutdown")
            .expect("the runner did not panic");
    }
}
