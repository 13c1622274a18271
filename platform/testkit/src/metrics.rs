//! A `/metrics` answer read as samples: each series' name, labels and value, and the exemplar
//! a histogram bucket carries, so a test asserts on label values rather than on text.

use std::collections::BTreeMap;

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
    /// The labels of the exemplar after ` # ` (OpenMetrics), such as `trace_id`.
    pub exemplar: Option<BTreeMap<String, String>>,
}

/// Every sample of an exposition.
#[derive(Debug, Clone, Default)]
pub struct Exposition {
    pub samples: Vec<Sample>,
}

/// `k="v",…` up to the closing brace, and what follows it; `None` when malformed.
fn labels(text: &str) -> Option<(BTreeMap<String, String>, &str)> {
    let mut labels = BTreeMap::new();
    let mut rest = text.strip_prefix('{')?;
    loop {
        rest = rest.trim_start_matches(',');
        if let Some(after) = rest.strip_prefix('}') {
            return Some((labels, after));
        }
        let (key, after) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next()? {
                (_, '\\') => value.push(chars.next()?.1),
                (i, '"') => break i,
                (_, c) => value.push(c),
            }
        };
        labels.insert(key.to_owned(), value);
        rest = &after[end + 1..];
    }
}

fn sample(line: &str) -> Option<Sample> {
    let (series, exemplar) = match line.split_once(" # ") {
        Some((series, exemplar)) => (series, Some(labels(exemplar.trim())?.0)),
        None => (line, None),
    };
    let name_end = series.find(['{', ' '])?;
    let (name, rest) = series.split_at(name_end);
    let (labels, rest) = if rest.starts_with('{') {
        labels(rest)?
    } else {
        (BTreeMap::new(), rest)
    };
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
        exemplar,
    })
}

impl Exposition {
    /// Reads OpenMetrics or the classic text format; comments and malformed lines are skipped.
    #[must_use]
    pub fn parse(text: &str) -> Self {
        let samples = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .filter_map(sample)
            .collect();
        Self { samples }
    }

    /// The samples of `name` that have every label of `with`.
    pub fn matching<'a>(
        &'a self,
        name: &'a str,
        with: &'a [(&str, &str)],
    ) -> impl Iterator<Item = &'a Sample> {
        self.samples.iter().filter(move |s| {
            s.name == name && with.iter().all(|(k, v)| s.labels.get(*k).is_some_and(|l| l == v))
        })
    }

    /// The sum of the samples of `name` that have every label of `with`; `None` when there is
    /// none.
    #[must_use]
    pub fn value(&self, name: &str, with: &[(&str, &str)]) -> Option<f64> {
        self.matching(name, with).map(|s| s.value).reduce(|a, b| a + b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_labels_values_and_exemplars() {
        let text = "# TYPE phase_seconds histogram\n\
            phase_seconds_bucket{phase=\"charge\",le=\"1.0\"} 2 # {trace_id=\"abc\"} 0.5\n\
            phase_seconds_count{phase=\"charge\"} 2\n\
            orders_total{reason=\"say \\\"no\\\"\"} 1\n\
            plain 4.5\n\
            # EOF\n";
        let exposition = Exposition::parse(text);
        assert_eq!(exposition.samples.len(), 4);
        let bucket = exposition
            .matching("phase_seconds_bucket", &[("le", "1.0")])
            .next()
            .unwrap();
        assert_eq!(bucket.labels["phase"], "charge");
        assert_eq!(bucket.exemplar.as_ref().unwrap()["trace_id"], "abc");
        assert_eq!(
            exposition.value("orders_total", &[("reason", "say \"no\"")]),
            Some(1.0)
        );
        assert_eq!(exposition.value("plain", &[]), Some(4.5));
        assert_eq!(
            exposition.value("phase_seconds_count", &[("phase", "reserve")]),
            None
        );
    }
}
