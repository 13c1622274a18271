use serde_json::Value;

use crate::support::{correlation_id, spawn_app};

/// Sends `/echo` with `id` (or none) and returns the id echoed on the response and what the
/// handler saw as its header and as the task's current id.
async fn echo_with(id: Option<&str>) -> (String, Value) {
    let app = spawn_app().await;
    let mut request = app.get("/echo");
    if let Some(id) = id {
        request = request.header("x-correlation-id", id);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    let echoed = correlation_id(&response);
    let seen: Value = response.json().await.unwrap();
    assert_eq!(
        seen["header"], seen["current"],
        "header and task-local agree: {seen}"
    );
    (echoed, seen)
}

fn assert_generated(echoed: &str, seen: &Value) {
    assert_eq!(seen["header"], echoed, "the handler saw the generated id");
    let id = uuid::Uuid::parse_str(echoed).expect("a generated id is a UUID");
    assert_eq!(id.get_version_num(), 7, "generated ids are time-ordered UUIDs");
}

#[tokio::test]
async fn a_client_correlation_id_is_seen_by_the_handler_and_echoed() {
    let (echoed, seen) = echo_with(Some("abc-123")).await;
    assert_eq!(echoed, "abc-123");
    assert_eq!(seen["header"], "abc-123");
    assert_eq!(seen["current"], "abc-123");
}

#[tokio::test]
async fn a_request_without_a_correlation_id_gets_a_generated_one_that_is_echoed() {
    let (echoed, seen) = echo_with(None).await;
    assert_generated(&echoed, &seen);
}

/// Correlation ids the service does not take, each a test: a generated one replaces it.
macro_rules! replaced {
    ($($name:ident: $sent:expr;)*) => {$(
        #[tokio::test]
        async fn $name() {
            let sent: String = $sent;
            let (echoed, seen) = echo_with(Some(&sent)).await;
            assert_ne!(echoed, sent);
            assert_generated(&echoed, &seen);
        }
    )*};
}

replaced! {
    a_correlation_id_with_unsafe_characters_is_replaced_by_a_generated_one: "abc{\"forged\":1}".to_owned();
    an_over_long_correlation_id_is_replaced_by_a_generated_one: "x".repeat(200);
}

#[tokio::test]
async fn a_correlation_id_of_the_longest_accepted_length_is_kept() {
    let longest = "a".repeat(128);
    let (echoed, seen) = echo_with(Some(&longest)).await;
    assert_eq!(echoed, longest);
    assert_eq!(seen["header"], longest);
}

#[tokio::test]
async fn each_request_without_a_correlation_id_gets_a_different_one() {
    let app = spawn_app().await;
    let first = app.get("/echo").send().await.unwrap();
    let second = app.get("/echo").send().await.unwrap();
    assert_ne!(correlation_id(&first), correlation_id(&second));
}
