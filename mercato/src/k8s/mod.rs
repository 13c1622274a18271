//! `mercato k8s`: the Kubernetes manifests, rendered from the configuration the processes use.
//!
//! The output is a kustomize tree: `base/` (the namespace, the configuration as ConfigMaps, the
//! external PostgreSQL, NATS and Redis, network policies, the setup jobs, and per service a
//! ServiceAccount, Deployment, Service, PodDisruptionBudget and HorizontalPodAutoscaler) and
//! `overlays/dev` and `overlays/prod`. `deploy/k8s/` holds the rendering of the default
//! configuration; a test fails when it differs from what this module renders.
//!
//! - [`model`]: what each service needs (port, database, bus, Redis, which services it calls),
//!   from the configuration and the service list.
//! - [`manifests`]: the objects, as JSON values.
//! - [`policy`]: the rules every rendering keeps (probes, limits, security contexts, a PDB and an
//!   HPA per Deployment, deny-by-default networking).
//! - [`yaml`]: writing them as YAML.

pub mod manifests;
pub mod model;
pub mod policy;
pub mod yaml;

use std::path::{Path, PathBuf};

use crate::config::Config;

/// `mercato k8s`
#[derive(Debug, clap::Args)]
pub struct K8sArgs {
    /// Where the kustomize tree is written.
    #[arg(long, default_value = "deploy/k8s")]
    pub out: PathBuf,
    /// Write nothing; fail if a file under `--out` differs from the rendering.
    #[arg(long)]
    pub check: bool,
}

/// Rendering or writing the manifests failed.
#[derive(Debug, thiserror::Error)]
pub enum K8sError {
    #[error("the rendering breaks a policy: {0}")]
    Policy(String),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{count} file(s) differ from the rendering (run `mercato k8s` to update): {files}")]
    Stale { count: usize, files: String },
}

/// One file of the tree, relative to its root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    pub path: PathBuf,
    pub text: String,
}

/// The whole tree for `config`.
///
/// # Errors
/// [`K8sError::Policy`] when the rendering would break a rule of [`policy`] (a configuration that
/// cannot be deployed safely, such as two services on one port).
pub fn render(config: &Config) -> Result<Vec<File>, K8sError> {
    let system = model::System::from_config(config);
    let tree = manifests::tree(&system);
    let mut violations = policy::check(&system, &tree.base_objects());
    for o in tree.overlays.iter().filter(|o| !o.green.is_empty()) {
        let mut objects = tree.base_objects();
        objects.extend(o.green.iter().cloned());
        violations.extend(
            policy::check(&system, &objects)
                .into_iter()
                .map(|v| format!("{}: {v}", o.overlay.name)),
        );
    }
    if !violations.is_empty() {
        return Err(K8sError::Policy(violations.join("; ")));
    }
    Ok(tree.files())
}

/// Runs `mercato k8s`: writes the tree, or with `--check` compares it.
///
/// # Errors
/// Rendering failed, a file could not be read or written, or (`--check`) files differ.
pub fn run(config: &Config, args: &K8sArgs) -> Result<(), K8sError> {
    let files = render(config)?;
    if args.check {
        let stale = stale_files(&args.out, &files);
        if !stale.is_empty() {
            return Err(K8sError::Stale {
                count: stale.len(),
                files: stale.join(", "),
            });
        }
        crate::sayln!(
            "{}: {} files match the rendering",
            args.out.display(),
            files.len()
        );
        return Ok(());
    }
    for file in &files {
        let path = args.out.join(&file.path);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| K8sError::Io {
                path: dir.to_owned(),
                source,
            })?;
        }
        std::fs::write(&path, &file.text).map_err(|source| K8sError::Io { path, source })?;
    }
    crate::sayln!("wrote {} files under {}", files.len(), args.out.display());
    Ok(())
}

/// The files under `root` that are missing or differ from `files`, and the rendered-looking files
/// there that the rendering no longer has.
#[must_use]
pub fn stale_files(root: &Path, files: &[File]) -> Vec<String> {
    let mut stale: Vec<String> = files
        .iter()
        .filter(|f| std::fs::read_to_string(root.join(&f.path)).ok().as_deref() != Some(&f.text))
        .map(|f| f.path.display().to_string())
        .collect();
    let rendered: std::collections::BTreeSet<PathBuf> = files.iter().map(|f| f.path.clone()).collect();
    let dirs: std::collections::BTreeSet<PathBuf> = files
        .iter()
        .filter_map(|f| f.path.parent().map(Path::to_path_buf))
        .collect();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(root.join(&dir)) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = dir.join(entry.file_name());
            if entry.path().is_file() && !rendered.contains(&path) {
                stale.push(format!("{} (not rendered)", path.display()));
            }
        }
    }
    stale
}
