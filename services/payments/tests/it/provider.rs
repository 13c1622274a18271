//! The provider adapter against the real sandbox: how answers are classified, and that its
//! timeout is real.

use mercato_payments::provider::ChargeRequest;
use mercato_payments::{ProviderClient, ProviderConfig, ProviderError};

use crate::support::{PATIENCE, Sandbox};

pub(crate) fn client(url: &str, timeout_ms: u64) -> ProviderClient {
    let config = ProviderConfig {
        url: url.to_owned(),
        timeout_ms,
        ..ProviderConfig::default()
    };
    ProviderClient::new(
        &config,
        &mercato_runtime::ClientConfig::default(),
        &mercato_runtime::ClientMetrics::default(),
    )
    .expect("a provider client")
}

fn request<'a>(key: &'a str, card: &'a str) -> ChargeRequest<'a> {
    ChargeRequest {
        idempotency_key: key,
        amount_minor: 500,
        currency: "EUR",
        card_token: card,
        correlation_id: Some("corr-provider-test"),
    }
}

#[tokio::test]
async fn charges_and_refunds_go_through_with_their_keys() {
    let sandbox = Sandbox::start(8_000).await;
    let provider = client(&sandbox.url, 2_000);
    let charge = provider.charge(&request("p-visa", "tok_visa")).await.unwrap();
    assert_eq!(charge.status, "succeeded");
    assert_eq!(charge.amount_minor, 500);
    let again = provider.charge(&request("p-visa", "tok_visa")).await.unwrap();
    assert_eq!(again.id, charge.id);
    let refund = provider.refund(&charge.id, "p-refund", None).await.unwrap();
    assert_eq!(refund.charge_id, charge.id);
    let twice = provider.refund(&charge.id, "p-refund", None).await.unwrap();
    assert_eq!(twice.id, refund.id);
}

#[tokio::test]
async fn declines_and_refusals_are_final_and_5xx_is_transient() {
    let sandbox = Sandbox::start(8_000).await;
    let provider = client(&sandbox.url, 2_000);
    let declined = provider
        .charge(&request("p-decline", "tok_decline"))
        .await
        .unwrap_err();
    assert!(matches!(&declined, ProviderError::Declined { code } if code == "card_declined"));
    assert!(!declined.is_transient());
    let refused = provider
        .charge(&request("p-unknown", "tok_unknown"))
        .await
        .unwrap_err();
    assert!(matches!(&refused, ProviderError::Refused { status: 400, code } if code == "invalid_card"));
    assert!(!refused.is_transient());
    for _ in 0..2 {
        let flaky = provider
            .charge(&request("p-flaky", "tok_flaky"))
            .await
            .unwrap_err();
        assert!(matches!(flaky, ProviderError::Unavailable(_)), "{flaky:?}");
        assert!(flaky.is_transient());
    }
    provider.charge(&request("p-flaky", "tok_flaky")).await.unwrap();
    assert_eq!(sandbox.charges("p-flaky").await.len(), 1);
}

#[tokio::test]
async fn a_hanging_provider_is_cut_off_by_the_timeout() {
    let sandbox = Sandbox::start(8_000).await;
    let provider = client(&sandbox.url, 200);
    let hang = request("p-hang", "tok_hang");
    let call = provider.charge(&hang);
    let error = tokio::time::timeout(PATIENCE, call)
        .await
        .expect("the client gives up by itself")
        .unwrap_err();
    assert!(matches!(error, ProviderError::TimedOut(_)), "{error:?}");
    assert!(error.is_transient());
}

#[tokio::test]
async fn an_unreachable_provider_is_transient() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let provider = client(&url, 500);
    let error = tokio::time::timeout(PATIENCE, provider.charge(&request("p-x", "tok_visa")))
        .await
        .expect("the call ends")
        .unwrap_err();
    assert!(error.is_transient(), "{error:?}");
}
