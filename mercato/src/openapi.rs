//! The public OpenAPI document, generated from the services' handlers: each service describes
//! its routes beside them (`utoipa`), this module puts the parts together with what every route
//! shares (`mercato_contracts::openapi::finish`). The gateway serves the rendering, committed as
//! `gateway/api/openapi.json`; `mercato openapi` writes it, and a test fails when it is stale.

use std::path::{Path, PathBuf};

use utoipa::openapi::{InfoBuilder, OpenApi, OpenApiBuilder, ServerBuilder};

/// Where the gateway's copy lives, relative to the repository's root.
pub const SERVED: &str = "gateway/api/openapi.json";

/// `mercato openapi`.
#[derive(Debug, clap::Args)]
pub struct OpenApiArgs {
    /// Where the document is written.
    #[arg(long, default_value = SERVED)]
    pub out: PathBuf,
    /// Write nothing; fail if the file under `--out` differs from the rendering.
    #[arg(long)]
    pub check: bool,
}

/// Writing or checking the document failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenApiError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{0} differs from the generated document (run `mercato openapi` to update)")]
    Stale(PathBuf),
}

/// The whole document.
#[must_use]
pub fn document() -> OpenApi {
    let mut doc = OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("Mercato public API")
                .version("1.0.0")
                .description(Some(
                    "Everything a client reaches through the gateway, generated from the services' \
                     handlers. Errors are application/problem+json (RFC 9457). A method a path does \
                     not declare answers 405 with Allow.",
                ))
                .build(),
        )
        .servers(Some([ServerBuilder::new().url("http://127.0.0.1:8080").build()]))
        .build();
    for part in parts() {
        doc.merge(part);
    }
    mercato_contracts::openapi::finish(&mut doc);
    doc
}

/// Each service's own part, as it describes its routes.
#[must_use]
pub fn parts() -> [OpenApi; 6] {
    [
        mercato_identity::openapi(),
        mercato_customers::openapi(),
        mercato_inventory::openapi(),
        mercato_orders::openapi(),
        mercato_payments::openapi(),
        mercato_notifications::openapi(),
    ]
}

/// The document as served: pretty JSON with a final newline.
#[must_use]
pub fn render() -> String {
    // Only maps and strings of our own: serialising cannot fail.
    let mut text = document().to_pretty_json().unwrap_or_default();
    text.push('\n');
    text
}

/// Writes the document to `args.out`, or checks that it is there unchanged.
///
/// # Errors
/// The file cannot be read or written, or (`--check`) it differs.
pub fn run(args: &OpenApiArgs) -> Result<(), OpenApiError> {
    let rendered = render();
    let io = |source| OpenApiError::Io {
        path: args.out.clone(),
        source,
    };
    if args.check {
        let current = std::fs::read_to_string(&args.out).map_err(io)?;
        return if current == rendered {
            Ok(())
        } else {
            Err(OpenApiError::Stale(args.out.clone()))
        };
    }
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    std::fs::write(Path::new(&args.out), rendered).map_err(io)
}
