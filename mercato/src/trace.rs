//! `mercato trace ORDER_ID`: the order's whole trace as a waterfall in the terminal, gathered
//! from every service's span store (`GET /admin/traces`). Embedded, one process keeps every
//! span and each service answers the same; distributed, each service answers its own part.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use anyhow::Context as _;
use mercato_runtime::trace::StoredSpan;
use mercato_runtime::trace::endpoint::{PATH, Spans};

/// Width of the timeline column.
const BAR: usize = 40;

/// Asks every service at `bases` for the spans of `order_id`'s traces, then for the whole of each trace.
///
/// # Errors
/// No service answered, or the admin token was refused.
pub async fn gather(bases: &[String], token: &str, order_id: &str) -> anyhow::Result<Vec<StoredSpan>> {
    let http = reqwest::Client::new();
    let mut spans: BTreeMap<String, StoredSpan> = BTreeMap::new();
    let mut answered = 0;
    for base in bases {
        if let Some(found) = ask(&http, base, token, &[("order_id", order_id)]).await? {
            answered += 1;
            spans.extend(found.into_iter().map(|s| (s.span_id.clone(), s)));
        }
    }
    anyhow::ensure!(answered > 0, "no service answered; is Mercato running?");
    let traces: BTreeSet<String> = spans.values().map(|s| s.trace_id.clone()).collect();
    for trace in &traces {
        for base in bases {
            if let Some(found) = ask(&http, base, token, &[("trace_id", trace)]).await? {
                spans.extend(found.into_iter().map(|s| (s.span_id.clone(), s)));
            }
        }
    }
    let mut spans: Vec<StoredSpan> = spans.into_values().collect();
    spans.sort_by_key(|s| s.start_ns);
    Ok(spans)
}

/// One service's kept spans; `None` when it does not answer (not running).
async fn ask(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    query: &[(&str, &str)],
) -> anyhow::Result<Option<Vec<StoredSpan>>> {
    let url = format!("{}{PATH}", base.trim_end_matches('/'));
    let Ok(response) = http.get(&url).bearer_auth(token).query(query).send().await else {
        return Ok(None);
    };
    let status = response.status();
    anyhow::ensure!(
        status != reqwest::StatusCode::UNAUTHORIZED && status != reqwest::StatusCode::FORBIDDEN,
        "{url} refused the token ({status}): an admin's token is needed"
    );
    if !status.is_success() {
        return Ok(None);
    }
    let spans: Spans = response.json().await.with_context(|| format!("{url} answered"))?;
    Ok(Some(spans.spans))
}

/// The spans as a waterfall: one line each, indented under its parent, with its duration and
/// where it falls in the trace's time.
#[must_use]
pub fn waterfall(spans: &[StoredSpan]) -> String {
    let mut out = String::new();
    let by_trace: BTreeMap<&str, Vec<&StoredSpan>> = spans.iter().fold(BTreeMap::new(), |mut m, s| {
        m.entry(s.trace_id.as_str()).or_insert_with(Vec::new).push(s);
        m
    });
    for (trace, mut spans) in by_trace {
        spans.sort_by_key(|s| s.start_ns);
        let start = spans.iter().map(|s| s.start_ns).min().unwrap_or_default();
        let end = spans.iter().map(|s| s.end_ns).max().unwrap_or_default();
        let total = end.saturating_sub(start).max(1);
        let _ = writeln!(out, "trace {trace}  {} spans, {}", spans.len(), millis(total));
        let ids: BTreeMap<&str, &StoredSpan> = spans.iter().map(|s| (s.span_id.as_str(), *s)).collect();
        for span in &spans {
            let mut depth = 0;
            let mut parent = span.parent_span_id.as_deref();
            while let Some(p) = parent.and_then(|p| ids.get(p)) {
                depth += 1;
                parent = p.parent_span_id.as_deref();
                if depth > spans.len() {
                    break;
                }
            }
            let offset = column(span.start_ns - start, total);
            let width = column(span.end_ns.saturating_sub(start), total)
                .saturating_sub(offset)
                .max(1);
            let bar = format!(
                "{}{}",
                " ".repeat(offset),
                "█".repeat(width.min(BAR - offset.min(BAR - 1)))
            );
            let label = format!("{}{}", "  ".repeat(depth), span.name);
            let step = span
                .attributes
                .get("saga.step")
                .map(|s| format!(" [{s}]"))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "  {:<14} {:<52} {:>10} |{bar:<BAR$}|{step}",
                span.service,
                label,
                millis(span.end_ns.saturating_sub(span.start_ns)),
            );
        }
    }
    out
}

fn column(ns: u64, total: u64) -> usize {
    usize::try_from(u128::from(ns) * (BAR as u128) / u128::from(total))
        .unwrap_or(BAR)
        .min(BAR - 1)
}

fn millis(ns: u64) -> String {
    #[allow(clippy::cast_precision_loss)]
    let ms = ns as f64 / 1_000_000.0;
    format!("{ms:.1} ms")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(id: &str, parent: Option<&str>, name: &str, start: u64, end: u64) -> StoredSpan {
        StoredSpan {
            trace_id: "t1".into(),
            span_id: id.into(),
            parent_span_id: parent.map(str::to_owned),
            name: name.into(),
            service: "orders".into(),
            kind: "internal".into(),
            start_ns: start,
            end_ns: end,
            attributes: BTreeMap::new(),
        }
    }

    #[test]
    fn the_waterfall_indents_children_and_places_them_in_time() {
        let spans = [
            span("b", Some("a"), "child", 50_000_000, 100_000_000),
            span("a", None, "root", 0, 100_000_000),
        ];
        let text = waterfall(&spans);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "trace t1  2 spans, 100.0 ms");
        assert!(
            lines[1].contains(" root ") && lines[1].contains("100.0 ms"),
            "{text}"
        );
        assert!(
            lines[2].contains("   child ") && lines[2].contains("50.0 ms"),
            "{text}"
        );
        let bar = |l: &str| l.split('|').nth(1).unwrap().to_owned();
        assert!(bar(lines[1]).starts_with('█'));
        assert!(bar(lines[2]).starts_with(&" ".repeat(BAR / 2)), "{text}");
    }
}
