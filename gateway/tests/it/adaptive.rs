//! Adaptive concurrency through the real gateway: requests past an upstream's limit are shed
//! at once with `503` and `Retry-After`, the admitted ones are served.

use futures_util::future::join_all;

use crate::instances::Instance;
use crate::support::spawn_gateway_over;

#[tokio::test]
async fn requests_past_the_limit_are_shed_with_503_and_retry_after_while_the_rest_are_served() {
    let slow = Instance::start("slow").await;
    // Long enough that all twelve requests are in flight together.
    slow.delay(500);
    let gateway = spawn_gateway_over(vec![slow.url.clone()], |config| {
        let adaptive = &mut config.gateway.adaptive_concurrency;
        adaptive.enabled = true;
        adaptive.initial_limit = 4;
        adaptive.min_limit = 1;
        adaptive.max_limit = 8;
    })
    .await;

    let responses = join_all((0..12).map(|_| gateway.get("/api/echo/items").send())).await;

    let mut served = 0;
    let mut shed = 0;
    for response in responses {
        let response = response.unwrap();
        match response.status().as_u16() {
            200 => served += 1,
            503 => {
                assert_eq!(response.headers()["retry-after"], "1");
                let body: serde_json::Value = response.json().await.unwrap();
                assert_eq!(body["type"], "urn:mercato:problem:upstream-overloaded", "{body}");
                shed += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(served >= 4, "{served} served");
    assert!(shed >= 4, "{shed} shed: at most 8 fit under the limit");
    assert_eq!(slow.hits(), served, "a shed request never reaches the upstream");
    let metrics = gateway.metrics().await;
    assert!(
        metrics.contains("gateway_upstream_concurrency_limit{upstream=\"echo\"}"),
        "{metrics}"
    );
}
