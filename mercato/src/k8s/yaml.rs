//! A YAML writer for the manifests: block style, keys in the order the JSON value keeps them,
//! and any string a YAML reader could take for something else written as a JSON string (which
//! YAML reads as the same double-quoted string).

use serde_json::Value;

/// One document, ending in a newline.
#[must_use]
pub fn document(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(map) if !map.is_empty() => write_map(&mut out, map, 0),
        Value::Array(items) if !items.is_empty() => write_seq(&mut out, items, 0),
        scalar => {
            out.push_str(&scalar_text(scalar, 0));
            out.push('\n');
        }
    }
    out
}

/// Several documents separated by `---`.
#[must_use]
pub fn documents(values: &[Value]) -> String {
    values.iter().map(document).collect::<Vec<_>>().join("---\n")
}

fn pad(out: &mut String, indent: usize) {
    out.extend(std::iter::repeat_n(' ', indent));
}

fn write_map(out: &mut String, map: &serde_json::Map<String, Value>, indent: usize) {
    let mut first = true;
    for (key, value) in map {
        if !first {
            pad(out, indent);
        }
        first = false;
        out.push_str(&string_text(key, indent));
        out.push(':');
        write_child(out, value, indent);
    }
}

fn write_seq(out: &mut String, items: &[Value], indent: usize) {
    let mut first = true;
    for item in items {
        if !first {
            pad(out, indent);
        }
        first = false;
        out.push_str("- ");
        match item {
            Value::Object(map) if !map.is_empty() => write_map(out, map, indent + 2),
            Value::Array(inner) if !inner.is_empty() => write_seq(out, inner, indent + 2),
            scalar => {
                out.push_str(&scalar_text(scalar, indent + 2));
                out.push('\n');
            }
        }
    }
}

/// After `key:`: a nested block on the next lines, or a scalar on this one.
fn write_child(out: &mut String, value: &Value, indent: usize) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            out.push('\n');
            pad(out, indent + 2);
            write_map(out, map, indent + 2);
        }
        Value::Array(items) if !items.is_empty() => {
            out.push('\n');
            pad(out, indent);
            write_seq(out, items, indent);
        }
        scalar => {
            out.push(' ');
            out.push_str(&scalar_text(scalar, indent + 2));
            out.push('\n');
        }
    }
}

fn scalar_text(value: &Value, indent: usize) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => string_text(s, indent),
        Value::Array(_) => "[]".into(),
        Value::Object(_) => "{}".into(),
    }
}

/// Multi-line text as a literal block (readable scripts and files); other strings plain when
/// that is unambiguous, else JSON-quoted.
fn string_text(s: &str, indent: usize) -> String {
    if s.contains('\n') && literal_block_ok(s) {
        let mut out = String::from(if s.ends_with('\n') { "|" } else { "|-" });
        for line in s.trim_end_matches('\n').split('\n') {
            out.push('\n');
            if !line.is_empty() {
                out.extend(std::iter::repeat_n(' ', indent));
                out.push_str(line);
            }
        }
        return out;
    }
    if plain_ok(s) {
        s.to_owned()
    } else {
        serde_json::to_string(s).expect("a string serialises")
    }
}

fn literal_block_ok(s: &str) -> bool {
    !s.trim_end_matches('\n').contains("\n\n\n")
        && !s.ends_with("\n\n")
        && !s.starts_with([' ', '\n'])
        && s.lines().all(|l| l == l.trim_end() && !l.contains('\t'))
}

/// Plain scalars that every YAML 1.1 and 1.2 reader takes as this very string.
fn plain_ok(s: &str) -> bool {
    const RESERVED: &[&str] = &["true", "false", "yes", "no", "on", "off", "y", "n", "null", "~"];
    let Some(first) = s.chars().next() else {
        return false;
    };
    if RESERVED.contains(&s.to_ascii_lowercase().as_str()) || looks_numeric(s) {
        return false;
    }
    let safe = |c: char| c.is_ascii_alphanumeric() || "-_./=+@()$".contains(c);
    (first.is_ascii_alphabetic() || first == '/' || first == '$' || first == '.')
        && s.chars().all(|c| safe(c) || c == ':' || c == ' ')
        && !s.contains(": ")
        && !s.ends_with(':')
        && !s.ends_with(' ')
        && !s.contains(" #")
}

fn looks_numeric(s: &str) -> bool {
    let t = s.trim_start_matches(['+', '-']);
    !t.is_empty()
        && (t
            .chars()
            .all(|c| c.is_ascii_digit() || c == '.' || c == '_' || c == 'e' || c == 'E')
            && t.chars().next().is_some_and(|c| c.is_ascii_digit() || c == '.'))
        || [".inf", ".nan"].contains(&t.to_ascii_lowercase().as_str())
        || t.starts_with("0x")
        || t.starts_with("0o")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn nested_maps_and_lists_are_written_in_block_style() {
        let doc = document(&json!({
            "a": {"b": [1, {"c": "d", "e": []}], "f": {}},
            "g": [["x"]],
        }));
        assert_eq!(doc, "a:\n  b:\n  - 1\n  - c: d\n    e: []\n  f: {}\ng:\n- - x\n");
    }

    #[test]
    fn ambiguous_strings_are_quoted() {
        for s in [
            "true", "No", "null", "~", "8080", "1.5", "0x1f", "", " lead", "a: b", "x #y", "*", "-a",
        ] {
            let doc = document(&json!({ "k": s }));
            assert_eq!(doc, format!("k: {}\n", serde_json::to_string(s).unwrap()), "{s}");
        }
        for s in ["mercato", "/health", "http://identity:8101", "0.0.0.0:8101"] {
            let doc = document(&json!({ "k": s }));
            let quoted = !doc.contains(&format!("k: {s}\n"));
            assert_eq!(quoted, s.starts_with('0'), "{doc}");
        }
    }

    #[test]
    fn multi_line_text_is_a_literal_block() {
        let doc = document(&json!({"script": "set -e\necho hi\n"}));
        assert_eq!(doc, "script: |\n  set -e\n  echo hi\n");
        let doc = document(&json!({"s": [{"t": "a\nb"}]}));
        assert_eq!(doc, "s:\n- t: |-\n    a\n    b\n");
    }
}
