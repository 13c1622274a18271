use super::*;

#[test]
fn the_default_configuration_is_valid() {
    assert_eq!(GatewayConfig::default().validate(), Ok(()));
}

#[test]
fn a_route_naming_an_unknown_rate_class_is_refused_by_key() {
    let mut config = GatewayConfig::default();
    config.routes[0].rate_class = Some("nope".into());
    let key = config.validate().unwrap_err().key;
    assert_eq!(key, "routes[0].rate_class");
}

#[test]
fn a_rule_without_roles_or_with_a_bad_method_is_refused_by_key() {
    let mut config = GatewayConfig::default();
    let i = config.rules.len();
    config.rules.push(RuleConfig::new("/x", &[], &[]));
    assert_eq!(config.validate().unwrap_err().key, format!("rules[{i}].roles"));
    config.rules[i] = RuleConfig::new("/x", &["GE T"], &["admin"]);
    assert_eq!(config.validate().unwrap_err().key, format!("rules[{i}].methods"));
}

#[test]
fn resilience_defaults_are_the_clients_but_two_attempts_a_lenient_slow_call_and_a_wide_bulkhead() {
    use std::time::Duration;

    use mercato_runtime::ClientConfig;

    let config = GatewayConfig::default();
    let breaker = config.circuit_breaker.to_config();
    let client = ClientConfig::default();
    let lib = client.circuit_breaker.to_config();
    assert!((breaker.failure_rate_threshold - lib.failure_rate_threshold).abs() < 1e-9);
    assert!((breaker.slow_call_rate_threshold - lib.slow_call_rate_threshold).abs() < 1e-9);
    assert_eq!(breaker.wait_duration_in_open, lib.wait_duration_in_open);
    assert_eq!(breaker.sliding_window_size, lib.sliding_window_size);
    assert_eq!(breaker.minimum_number_of_calls, lib.minimum_number_of_calls);
    assert_eq!(breaker.slow_call_duration_threshold, Duration::from_secs(10));
    assert_eq!(breaker.probe_timeout, Duration::from_secs(10));
    let retry = config.retry.to_config();
    let lib = client.retry.to_config();
    assert_eq!(retry.max_attempts, 2);
    assert_eq!(retry.backoff, lib.backoff);
    assert!((retry.budget_ratio - lib.budget_ratio).abs() < 1e-6);
    assert_eq!(retry.budget_min_per_sec, lib.budget_min_per_sec);
    assert_eq!(retry.budget_window, lib.budget_window);
    assert_eq!(config.bulkhead.max_concurrent, 512);
}

#[test]
fn resilience_settings_are_refused_by_their_own_key() {
    let mut config = GatewayConfig::default();
    config.circuit_breaker.failure_rate_threshold_percent = 0;
    assert_eq!(
        config.validate().unwrap_err().key,
        "circuit_breaker.failure_rate_threshold_percent"
    );
    config.circuit_breaker = CircuitBreakerSettings {
        minimum_number_of_calls: 100,
        ..CircuitBreakerSettings::default()
    };
    assert_eq!(
        config.validate().unwrap_err().key,
        "circuit_breaker.minimum_number_of_calls"
    );
    config.circuit_breaker = CircuitBreakerSettings::default();
    config.retry.budget_window_secs = 0;
    assert_eq!(config.validate().unwrap_err().key, "retry.budget_window_secs");
    config.retry = RetrySettings::default();
    config.routes[0].timeout_ms = Some(0);
    assert_eq!(config.validate().unwrap_err().key, "routes[0].timeout_ms");
}

#[test]
fn a_partial_resilience_table_keeps_the_gateways_defaults_for_the_other_keys() {
    let config: GatewayConfig = serde_json::from_value(serde_json::json!({
        "circuit_breaker": { "wait_duration_ms": 250 },
        "retry": { "budget_percent": 10 },
        "bulkhead": { "max_queued": 0 },
        "routes": [{ "prefix": "/x", "upstream": "x", "auth": "public", "timeout_ms": 500 }],
    }))
    .unwrap();
    let defaults = GatewayConfig::default();
    assert_eq!(config.circuit_breaker.wait_duration_ms, 250);
    assert_eq!(config.circuit_breaker.slow_call_duration_threshold_ms, 10_000);
    assert_eq!(
        config.circuit_breaker.sliding_window_size,
        defaults.circuit_breaker.sliding_window_size
    );
    assert_eq!(config.retry.budget_percent, 10);
    assert_eq!(config.retry.max_attempts, 2);
    assert_eq!(config.bulkhead.max_queued, 0);
    assert_eq!(config.bulkhead.max_concurrent, 512);
    assert_eq!(config.routes[0].timeout_ms, Some(500));
}

#[test]
fn an_unknown_key_in_a_resilience_table_is_refused() {
    let refused = serde_json::from_value::<GatewayConfig>(serde_json::json!({
        "circuit_breaker": { "wait_ms": 250 },
    }));
    assert!(refused.unwrap_err().to_string().contains("wait_ms"));
}

#[test]
fn a_zero_rate_is_refused_by_key() {
    let mut config = GatewayConfig::default();
    config.rate_limit.classes.get_mut("auth").unwrap().rate_per_second = 0;
    assert_eq!(
        config.validate().unwrap_err().key,
        "rate_limit.classes.auth.rate_per_second"
    );
}

#[test]
fn a_trusted_proxy_that_is_not_a_network_is_refused_by_key() {
    let config = GatewayConfig {
        trusted_proxies: vec!["10.0.0.0/8".into(), "10.0.0.0/40".into()],
        ..GatewayConfig::default()
    };
    assert_eq!(config.validate().unwrap_err().key, "trusted_proxies[1]");
}

#[test]
fn the_verified_token_bound_is_refused_outside_its_range_by_key() {
    let mut config = GatewayConfig::default();
    assert_eq!(config.auth.verified_tokens_max, 16_384);
    for refused in [0, 15, auth::MAX_VERIFIED_TOKENS + 1] {
        config.auth.verified_tokens_max = refused;
        assert_eq!(
            config.validate().unwrap_err().key,
            "auth.verified_tokens_max",
            "{refused}"
        );
    }
    for kept in [16, 4096, auth::MAX_VERIFIED_TOKENS] {
        config.auth.verified_tokens_max = kept;
        assert_eq!(config.validate(), Ok(()), "{kept}");
    }
}
