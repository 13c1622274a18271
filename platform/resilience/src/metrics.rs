//! [`register_metrics!`](crate::register_metrics): a struct's Prometheus metrics registered from
//! one table, a line each, instead of a call of five lines per metric.

/// Registers each metric of the table in the registry (a `&mut Registry` place, named once per
/// metric) under its name and help text:
///
/// ```
/// # use prometheus_client::metrics::counter::Counter;
/// # use prometheus_client::registry::Registry;
/// let mut registry = Registry::default();
/// let (sent, failed) = (Counter::<u64>::default(), Counter::<u64>::default());
/// mercato_resilience::register_metrics!(registry, {
///     sent => "messages_sent", "Messages sent";
///     failed => "messages_failed", "Messages that could not be sent";
/// });
/// ```
///
/// Each metric is cloned into the registry; the caller keeps its own handle to update.
#[macro_export]
macro_rules! register_metrics {
    ($registry:expr, { $($metric:expr => $name:literal, $help:literal;)+ }) => {
        $($registry.register($name, $help, $metric.clone());)+
    };
}
