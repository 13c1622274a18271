use std::time::Duration;

use http::Request;
use mercato_resilience::deadline::HEADER;
use mercato_resilience::{AcceptDeadlineLayer, Deadline, ResilienceError, TimeoutLayer};
use tokio::time::Instant;
use tower::{Layer, ServiceExt, service_fn};

use crate::support::{Calls, TestError};

fn request_with(deadline: Deadline) -> Request<()> {
    let mut req = Request::new(());
    req.extensions_mut().insert(deadline);
    req
}

#[tokio::test(start_paused = true)]
async fn a_call_with_100ms_left_and_a_1s_timeout_is_cut_at_100ms() {
    let slow = service_fn(|_: Request<()>| async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        Ok::<_, TestError>(())
    });
    let started = Instant::now();
    let result = TimeoutLayer::new(Duration::from_secs(1))
        .layer(slow)
        .oneshot(request_with(Deadline::after(Duration::from_millis(100))))
        .await;
    assert!(matches!(result, Err(ResilienceError::DeadlineExceeded)));
    assert_eq!(started.elapsed(), Duration::from_millis(100));
}

#[tokio::test(start_paused = true)]
async fn a_call_whose_deadline_has_passed_is_not_sent() {
    let calls = Calls::default();
    let seen = calls.clone();
    let upstream = service_fn(move |_: Request<()>| {
        seen.hit();
        async { Ok::<_, TestError>(()) }
    });
    let deadline = Deadline::after(Duration::from_millis(50));
    tokio::time::advance(Duration::from_millis(50)).await;
    let result = TimeoutLayer::new(Duration::from_secs(1))
        .layer(upstream)
        .oneshot(request_with(deadline))
        .await;
    assert!(matches!(result, Err(ResilienceError::DeadlineExceeded)));
    assert_eq!(calls.count(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_deadline_header_round_trips_from_client_to_server() {
    // The server: accepts the header and reports the deadline its handler sees.
    let handler = service_fn(|req: Request<()>| async move {
        let from_extension = req.extensions().get::<Deadline>().map(|d| d.remaining());
        let from_task = Deadline::current().map(Deadline::remaining);
        Ok::<_, TestError>((from_extension, from_task))
    });
    let server = AcceptDeadlineLayer::new(Duration::from_secs(30)).layer(handler);
    // The wire: only the header crosses it.
    let wire = service_fn(move |req: Request<()>| {
        let mut incoming = Request::new(());
        if let Some(value) = req.headers().get(HEADER) {
            incoming.headers_mut().insert(HEADER, value.clone());
        }
        server.clone().oneshot(incoming)
    });
    let client = TimeoutLayer::new(Duration::from_secs(1)).layer(wire);

    let seen = client
        .clone()
        .oneshot(request_with(Deadline::after(Duration::from_millis(250))))
        .await
        .unwrap();
    let expected = Some(Duration::from_millis(250));
    assert_eq!(seen, (expected, expected));

    // With no deadline from the caller, our own timeout is what the server is told.
    let seen = client.oneshot(Request::new(())).await.unwrap();
    assert_eq!(seen.0, Some(Duration::from_secs(1)));
}

#[tokio::test(start_paused = true)]
async fn a_downstream_call_inherits_the_handlers_deadline_through_the_task_local() {
    let echo =
        service_fn(|req: Request<()>| async move { Ok::<_, TestError>(req.headers().get(HEADER).cloned()) });
    let downstream = TimeoutLayer::new(Duration::from_secs(1)).layer(echo);
    let header = Deadline::after(Duration::from_millis(400))
        .scope(downstream.oneshot(Request::new(())))
        .await
        .unwrap();
    assert_eq!(header.unwrap(), "400");
}

#[tokio::test(start_paused = true)]
async fn the_server_caps_a_deadline_longer_than_it_allows() {
    let handler = service_fn(|_: Request<()>| async {
        Ok::<_, TestError>(Deadline::current().map(Deadline::remaining))
    });
    let mut req = Request::new(());
    req.headers_mut().insert(HEADER, "600000".parse().unwrap());
    let seen = AcceptDeadlineLayer::new(Duration::from_secs(30))
        .layer(handler)
        .oneshot(req)
        .await
        .unwrap();
    assert_eq!(seen, Some(Duration::from_secs(30)));
}
