//! The contract files under `contracts/`, rendered from the code: each event type's schema
//! (`events/`) and each consumer's pact (`pacts/`). `mercato contracts` writes them; `--check`
//! (and a test) fails when a committed file differs from its rendering or is not one of them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::{catalogue, pact};

/// The directories this module owns, relative to `contracts/`.
pub const DIRS: [&str; 2] = ["events", "pacts"];

/// Writing or checking the files failed.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("contract files differ from the code (run `mercato contracts` to update): {}", .0.join(", "))]
    Stale(Vec<String>),
}

fn pretty(value: &Value) -> String {
    // A `Value` always serialises.
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    text
}

/// Every file, by its path relative to `contracts/`.
#[must_use]
pub fn rendered() -> BTreeMap<String, String> {
    let schemas = catalogue::all()
        .into_iter()
        .map(|event| (event.path(), pretty(&event.schema())));
    let pacts = pact::consumers::all()
        .into_iter()
        .map(|p| (format!("pacts/{}", p.file_name()), pretty(&p.to_json())));
    schemas.chain(pacts).collect()
}

/// An older version's schema of an event type that moved on: kept, never rendered again.
fn is_older_schema(path: &str) -> bool {
    let Some((category, file)) = path.strip_prefix("events/").and_then(|p| p.split_once('/')) else {
        return false;
    };
    let Some((name, version)) = file
        .strip_suffix(".json")
        .and_then(|f| f.rsplit_once(".v"))
        .and_then(|(name, v)| Some((name, v.parse::<u32>().ok()?)))
    else {
        return false;
    };
    catalogue::find(category, name).is_some_and(|e| version >= 1 && version < e.version)
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FilesError + '_ {
    move |source| FilesError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The files under `dir`'s contract directories, relative to `dir`.
fn committed(dir: &Path) -> Result<Vec<String>, FilesError> {
    let mut found = Vec::new();
    let mut pending: Vec<PathBuf> = DIRS.iter().map(|d| dir.join(d)).filter(|d| d.exists()).collect();
    while let Some(current) = pending.pop() {
        for entry in std::fs::read_dir(&current).map_err(io(&current))? {
            let path = entry.map_err(io(&current))?.path();
            if path.is_dir() {
                pending.push(path);
            } else if let Ok(relative) = path.strip_prefix(dir) {
                found.push(relative.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    found.sort();
    Ok(found)
}

/// The files under `dir` (the `contracts/` directory) that differ from the code: missing,
/// changed, or neither rendered nor an older schema.
///
/// # Errors
/// A file or directory cannot be read.
pub fn stale(dir: &Path) -> Result<Vec<String>, FilesError> {
    let rendered = rendered();
    let mut stale = Vec::new();
    for (path, text) in &rendered {
        let full = dir.join(path);
        match std::fs::read_to_string(&full) {
            Ok(current) if current == *text => {}
            Ok(_) => stale.push(format!("{path} (changed)")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => stale.push(format!("{path} (missing)")),
            Err(e) => return Err(io(&full)(e)),
        }
    }
    for path in committed(dir)? {
        if !rendered.contains_key(&path) && !is_older_schema(&path) {
            stale.push(format!("{path} (not made from the code)"));
        }
    }
    Ok(stale)
}

/// Fails unless every file under `dir` is as the code renders it.
///
/// # Errors
/// [`FilesError::Stale`] naming each file that differs, or a file that cannot be read.
pub fn check(dir: &Path) -> Result<(), FilesError> {
    let stale = stale(dir)?;
    if stale.is_empty() {
        Ok(())
    } else {
        Err(FilesError::Stale(stale))
    }
}

/// Writes every rendered file under `dir` (older schemas stay).
///
/// # Errors
/// A file or directory cannot be written.
pub fn write(dir: &Path) -> Result<(), FilesError> {
    for (path, text) in rendered() {
        let full = dir.join(&path);
        if let Some(parent) = full.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        std::fs::write(&full, text).map_err(io(&full))?;
    }
    Ok(())
}

/// The committed pacts under `dir` (the `contracts/` directory), as files, not as rendered.
///
/// # Errors
/// A pact file cannot be read or is not a pact.
pub fn pacts(dir: &Path) -> Result<Vec<pact::Pact>, FilesError> {
    let mut pacts = Vec::new();
    for path in committed(dir)?.iter().filter(|p| p.starts_with("pacts/")) {
        let full = dir.join(path);
        let text = std::fs::read_to_string(&full).map_err(io(&full))?;
        let bad = |reason: String| FilesError::Io {
            path: full.clone(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, reason),
        };
        let json: Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        pacts.push(pact::Pact::from_json(&json).map_err(|e| bad(e.to_string()))?);
    }
    Ok(pacts)
}

/// The `contracts/` directory of this source tree.
#[must_use]
pub fn source_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_contract_files_are_the_ones_the_code_renders() {
        assert_eq!(
            stale(&source_dir()).unwrap(),
            Vec::<String>::new(),
            "run `cargo run -p mercato -- contracts`"
        );
    }

    #[test]
    fn a_changed_missing_or_unknown_file_is_stale_and_an_older_schema_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path()).unwrap();
        assert!(check(dir.path()).is_ok());
        let schema = dir.path().join("events/orders/ReserveStock.v1.json");
        std::fs::write(&schema, "{}\n").unwrap();
        std::fs::remove_file(dir.path().join("pacts/inventory-orders.json")).unwrap();
        std::fs::write(dir.path().join("events/orders/Invented.v1.json"), "{}\n").unwrap();
        std::fs::write(dir.path().join("events/orders/ReserveStock.v0.json"), "{}\n").unwrap();
        let err = check(dir.path()).unwrap_err().to_string();
        for stale in [
            "events/orders/Invented.v1.json (not made from the code)",
            "events/orders/ReserveStock.v0.json (not made from the code)",
            "events/orders/ReserveStock.v1.json (changed)",
            "pacts/inventory-orders.json (missing)",
        ] {
            assert!(err.contains(stale), "{err}");
        }
        assert!(
            !is_older_schema("events/orders/ReserveStock.v1.json"),
            "v1 is current"
        );
        assert!(!is_older_schema("pacts/x.json"));
    }

    #[test]
    fn every_consumer_expects_what_the_producer_schema_allows() {
        let pacts = pacts(&source_dir()).unwrap();
        assert_eq!(pacts.len(), pact::consumers::all().len());
        for pact in &pacts {
            for message in pact.messages() {
                let name = message["metadata"]["type"].as_str().unwrap();
                let event = catalogue::find(&pact.provider, name)
                    .unwrap_or_else(|| panic!("{} publishes no {name}", pact.provider));
                let schema = jsonschema::validator_for(&event.schema()).unwrap();
                let example = &message["contents"]["content"];
                let errors: Vec<_> = schema.iter_errors(example).map(|e| e.to_string()).collect();
                assert!(errors.is_empty(), "{}'s {name}: {errors:?}", pact.consumer);
                assert_eq!(message["metadata"]["schema_version"], event.version);
            }
        }
    }
}
