use std::sync::Arc;
use std::time::Duration;

use mercato_resilience::{BulkheadConfig, BulkheadLayer, ResilienceError};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tower::{Layer, Service, service_fn};

use crate::support::{Calls, TestError};

/// An upstream whose calls wait until the gate opens.
fn gated(
    gate: &Arc<Semaphore>,
    calls: &Calls,
) -> impl Service<(), Response = (), Error = TestError, Future: Send> + Clone + use<> {
    let (gate, calls) = (gate.clone(), calls.clone());
    service_fn(move |()| {
        calls.hit();
        let gate = gate.clone();
        async move {
            let _open = gate.acquire().await.unwrap();
            Ok(())
        }
    })
}

fn layer() -> BulkheadLayer {
    let config = BulkheadConfig {
        max_concurrent: 2,
        max_queued: 1,
        max_wait: Duration::from_secs(1),
    };
    BulkheadLayer::new("inventory", &config).unwrap()
}

#[tokio::test(start_paused = true)]
async fn rejects_at_once_beyond_its_limit_and_queue_then_serves_the_queued_call() {
    let (gate, calls) = (Arc::new(Semaphore::new(0)), Calls::default());
    let mut svc = layer().layer(gated(&gate, &calls));
    let running: Vec<_> = (0..2).map(|_| tokio::spawn(svc.call(()))).collect();
    let queued = tokio::spawn(svc.call(()));

    let started = Instant::now();
    let rejected = svc.call(()).await;
    assert!(matches!(rejected, Err(ResilienceError::BulkheadFull { ref name }) if &**name == "inventory"));
    assert_eq!(started.elapsed(), Duration::ZERO);

    tokio::task::yield_now().await;
    assert_eq!(calls.count(), 2, "the queued call waits for a permit");
    gate.add_permits(3);
    for call in running {
        call.await.unwrap().unwrap();
    }
    queued.await.unwrap().unwrap();
    assert_eq!(calls.count(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_queued_call_that_waits_too_long_is_rejected() {
    let (gate, calls) = (Arc::new(Semaphore::new(0)), Calls::default());
    let layer = layer();
    let mut svc = layer.layer(gated(&gate, &calls));
    let _running: Vec<_> = (0..2).map(|_| tokio::spawn(svc.call(()))).collect();

    let started = Instant::now();
    let result = svc.call(()).await;
    assert!(matches!(result, Err(ResilienceError::BulkheadFull { .. })));
    assert_eq!(started.elapsed(), Duration::from_secs(1));
    assert_eq!(calls.count(), 2);

    gate.add_permits(2);
    tokio::task::yield_now().await;
    tokio::task::yield_now().await;
    assert_eq!(layer.available(), 2, "permits come back when calls finish");
}
