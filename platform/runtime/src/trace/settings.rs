//! `[telemetry]`: whether spans are recorded, how many are kept in memory, where they are
//! exported and how roots are sampled; the standard `OTEL_*` variables override the file.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::settings::{InvalidSetting, Validate, ensure, within};

/// The wire protocol of the OTLP exporter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum TraceProtocol {
    /// OTLP over HTTP with protobuf bodies (`/v1/traces`), the default as in the specification.
    #[default]
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
    #[serde(rename = "grpc")]
    Grpc,
}

/// The share of new traces recorded, 0 to 1; a trace that started elsewhere follows its
/// parent's decision.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Ratio(pub f64);

// Settings are compared whole; a ratio is never NaN once validated.
impl Eq for Ratio {}

/// `[telemetry]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TraceSettings {
    /// Record spans at all; off, tracing costs nothing and no span is kept or sent.
    pub traces: bool,
    /// The OTLP collector's base URL (`OTEL_EXPORTER_OTLP_ENDPOINT`); none: nothing is
    /// exported, spans are only kept in memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// `http/protobuf` or `grpc` (`OTEL_EXPORTER_OTLP_PROTOCOL`).
    pub protocol: TraceProtocol,
    /// Share of new traces recorded (`OTEL_TRACES_SAMPLER_ARG` with a ratio sampler).
    pub sample_ratio: Ratio,
    /// Finished spans each process keeps in memory for `mercato trace`.
    pub kept_spans: usize,
    /// Finished spans waiting for export; past this they are dropped and counted.
    pub queue: usize,
    /// Spans in one export request.
    pub batch: usize,
    pub export_timeout_ms: u64,
    /// Whether the gateway continues a trace a client started (its `traceparent`); otherwise
    /// every request from outside starts a new trace.
    pub trust_client_traceparent: bool,
}

impl Default for TraceSettings {
    fn default() -> Self {
        Self {
            traces: true,
            endpoint: None,
            protocol: TraceProtocol::default(),
            sample_ratio: Ratio(1.0),
            kept_spans: 20_000,
            queue: 8192,
            batch: 512,
            export_timeout_ms: 5000,
            trust_client_traceparent: false,
        }
    }
}

impl Validate for TraceSettings {
    fn validate(&self) -> Result<(), InvalidSetting> {
        within(self.sample_ratio.0, 0.0..=1.0, "sample_ratio")?;
        if let Some(endpoint) = &self.endpoint {
            ensure(
                endpoint.starts_with("http://") || endpoint.starts_with("https://"),
                "endpoint",
                "must be an http:// or https:// URL",
            )?;
        }
        ensure(self.queue > 0, "queue", "must be at least 1")?;
        ensure(self.batch > 0, "batch", "must be at least 1")?;
        ensure(
            self.export_timeout_ms > 0,
            "export_timeout_ms",
            "must be at least 1",
        )
    }
}

impl TraceSettings {
    /// These settings with the standard OpenTelemetry variables of `env` applied over them.
    ///
    /// # Errors
    /// A variable whose value cannot work, named as the variable.
    pub fn with_env(mut self, env: &HashMap<String, String>) -> Result<Self, InvalidSetting> {
        let get = |k: &str| env.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
        if get("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            self.traces = false;
        }
        if let Some(endpoint) =
            get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| get("OTEL_EXPORTER_OTLP_ENDPOINT"))
        {
            self.endpoint = Some(endpoint.to_owned());
        }
        if let Some(protocol) =
            get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").or_else(|| get("OTEL_EXPORTER_OTLP_PROTOCOL"))
        {
            self.protocol = match protocol {
                "grpc" => TraceProtocol::Grpc,
                "http/protobuf" => TraceProtocol::HttpProtobuf,
                _ => {
                    return Err(InvalidSetting::new(
                        "OTEL_EXPORTER_OTLP_PROTOCOL",
                        "must be grpc or http/protobuf",
                    ));
                }
            };
        }
        let arg = || -> Result<f64, InvalidSetting> {
            get("OTEL_TRACES_SAMPLER_ARG").map_or(Ok(1.0), |v| {
                v.parse::<f64>()
                    .ok()
                    .filter(|r| (0.0..=1.0).contains(r))
                    .ok_or_else(|| {
                        InvalidSetting::new("OTEL_TRACES_SAMPLER_ARG", "must be a ratio from 0 to 1")
                    })
            })
        };
        // Every sampler is parent-based here: a trace is recorded whole or not at all.
        if let Some(sampler) = get("OTEL_TRACES_SAMPLER") {
            self.sample_ratio = Ratio(match sampler {
                "always_on" | "parentbased_always_on" => 1.0,
                "always_off" | "parentbased_always_off" => 0.0,
                "traceidratio" | "parentbased_traceidratio" => arg()?,
                _ => {
                    return Err(InvalidSetting::new(
                        "OTEL_TRACES_SAMPLER",
                        "must be always_on, always_off, traceidratio or their parentbased_ forms",
                    ));
                }
            });
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn the_standard_variables_override_the_file() {
        let settings = TraceSettings::default()
            .with_env(&env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "0.01"),
            ]))
            .unwrap();
        assert_eq!(settings.endpoint.as_deref(), Some("http://collector:4317"));
        assert_eq!(settings.protocol, TraceProtocol::Grpc);
        assert_eq!(settings.sample_ratio, Ratio(0.01));
        let off = TraceSettings::default()
            .with_env(&env(&[("OTEL_SDK_DISABLED", "true")]))
            .unwrap();
        assert!(!off.traces);
    }

    #[test]
    fn bad_variables_and_settings_are_named() {
        let protocol = TraceSettings::default()
            .with_env(&env(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]))
            .unwrap_err();
        assert_eq!(protocol.key, "OTEL_EXPORTER_OTLP_PROTOCOL");
        let arg = TraceSettings::default()
            .with_env(&env(&[
                ("OTEL_TRACES_SAMPLER", "traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "2"),
            ]))
            .unwrap_err();
        assert_eq!(arg.key, "OTEL_TRACES_SAMPLER_ARG");
        let ratio = TraceSettings {
            sample_ratio: Ratio(f64::NAN),
            ..TraceSettings::default()
        };
        assert_eq!(ratio.validate().unwrap_err().key, "sample_ratio");
        let endpoint = TraceSettings {
            endpoint: Some("collector:4317".into()),
            ..TraceSettings::default()
        };
        assert_eq!(endpoint.validate().unwrap_err().key, "endpoint");
    }
}
