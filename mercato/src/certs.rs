//! `mercato certs`: a local certificate authority for mutual TLS between services.
//!
//! `init` makes the CA (`ca.pem`, `ca.key`); `issue SERVICE` a short-lived certificate whose
//! identity is the service, as a SPIFFE URI (`spiffe://mercato/orders`), valid for both ends of a
//! connection (server and client authentication). Rotation is issuing again: each file is
//! replaced in one rename, so a process that reads it never sees half a file. In Kubernetes the
//! same files come from Secrets (cert-manager's `Certificate` with a `uris` entry is the production
//! source), mounted where `[tls]` points.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, SanType,
};

/// The SPIFFE trust domain of every identity the CA issues.
pub const TRUST_DOMAIN: &str = "mercato";

/// `mercato certs`
#[derive(Debug, clap::Subcommand)]
pub enum CertsCommand {
    /// Create the certificate authority (`ca.pem`, `ca.key`).
    Init {
        /// Where the files go (default: `{data_dir}/certs`).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// How long the CA is valid.
        #[arg(long, default_value_t = 365)]
        days: u32,
        /// Replace an existing CA (every certificate it issued stops being trusted).
        #[arg(long)]
        force: bool,
    },
    /// Issue (or renew) a service's certificate (`SERVICE.pem`, `SERVICE.key`).
    Issue {
        #[arg(value_enum)]
        service: crate::ServiceName,
        /// Where the CA is and the files go (default: `{data_dir}/certs`).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// How long the certificate is valid: short, and renewed by issuing again.
        #[arg(long, default_value_t = 24)]
        hours: u32,
    },
}

/// The CA or a certificate could not be made, read or written.
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    #[error("a CA exists already in {0} (use --force to replace it and distrust what it issued)")]
    CaExists(PathBuf),
    #[error("no CA in {0}: run `mercato certs init` first")]
    NoCa(PathBuf),
    #[error("a validity of zero is refused")]
    ZeroValidity,
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("certificate: {0}")]
    Certificate(#[from] rcgen::Error),
}

/// The SPIFFE identity of `service`.
#[must_use]
pub fn spiffe_id(service: &str) -> String {
    format!("spiffe://{TRUST_DOMAIN}/{service}")
}

/// Runs `command`, with `data_dir` for the default folder.
///
/// # Errors
/// See [`init`] and [`issue`].
pub fn run(data_dir: &Path, command: &CertsCommand) -> Result<(), CertsError> {
    let folder = |dir: &Option<PathBuf>| dir.clone().unwrap_or_else(|| data_dir.join("certs"));
    match command {
        CertsCommand::Init { dir, days, force } => {
            let dir = folder(dir);
            init(&dir, time::Duration::days(i64::from(*days)), *force)?;
            crate::sayln!("CA written to {}", dir.display());
        }
        CertsCommand::Issue { service, dir, hours } => {
            let dir = folder(dir);
            let name = service.as_str();
            issue(&dir, name, time::Duration::hours(i64::from(*hours)))?;
            crate::sayln!(
                "{} issued to {} ({})",
                spiffe_id(name),
                dir.join(format!("{name}.pem")).display(),
                dir.display()
            );
        }
    }
    Ok(())
}

/// The CA's name and uses: the same every time, so an issuer rebuilt from the key signs
/// certificates that chain to the CA certificate on disk.
fn ca_params() -> Result<CertificateParams, CertsError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "Mercato");
    name.push(DnType::CommonName, "Mercato service CA");
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

/// Creates the CA in `dir`, valid for `validity`.
///
/// # Errors
/// [`CertsError::CaExists`] unless `force`; [`CertsError::Io`] when the files cannot be written.
pub fn init(dir: &Path, validity: time::Duration, force: bool) -> Result<(), CertsError> {
    if validity <= time::Duration::ZERO {
        return Err(CertsError::ZeroValidity);
    }
    if dir.join("ca.pem").exists() && !force {
        return Err(CertsError::CaExists(dir.to_owned()));
    }
    create_dir(dir)?;
    let key = KeyPair::generate()?;
    let mut params = ca_params()?;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + validity;
    let cert = params.self_signed(&key)?;
    write_atomically(&dir.join("ca.key"), &key_pem(&key), 0o600)?;
    write_atomically(&dir.join("ca.pem"), &cert_pem(&cert), 0o644)
}

/// Issues `service`'s certificate from the CA in `dir`, valid for `validity` from now.
///
/// # Errors
/// [`CertsError::NoCa`] when `dir` holds no CA; [`CertsError::Io`] when a file cannot be read or
/// written.
pub fn issue(dir: &Path, service: &str, validity: time::Duration) -> Result<(), CertsError> {
    if validity <= time::Duration::ZERO {
        return Err(CertsError::ZeroValidity);
    }
    let ca_key_path = dir.join("ca.key");
    if !ca_key_path.exists() {
        return Err(CertsError::NoCa(dir.to_owned()));
    }
    let ca_key = KeyPair::try_from(pem_body(&ca_key_path, "PRIVATE KEY")?.as_slice())?;
    let issuer = Issuer::new(ca_params()?, ca_key);

    let mut params = CertificateParams::new(vec![service.to_owned(), "localhost".to_owned()])?;
    params
        .subject_alt_names
        .push(SanType::URI(spiffe_id(service).try_into()?));
    params
        .subject_alt_names
        .push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
    params.distinguished_name.push(DnType::CommonName, service);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    let now = time::OffsetDateTime::now_utc();
    // A little slack for clocks that disagree; the end is what keeps it short-lived.
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + validity;
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    write_atomically(&dir.join(format!("{service}.key")), &key_pem(&key), 0o600)?;
    write_atomically(&dir.join(format!("{service}.pem")), &cert_pem(&cert), 0o644)
}

fn create_dir(dir: &Path) -> Result<(), CertsError> {
    std::fs::create_dir_all(dir).map_err(|source| CertsError::Io {
        path: dir.to_owned(),
        source,
    })
}

fn cert_pem(cert: &rcgen::Certificate) -> String {
    pem::encode(&pem::Pem::new("CERTIFICATE", cert.der().to_vec()))
}

fn key_pem(key: &KeyPair) -> String {
    pem::encode(&pem::Pem::new("PRIVATE KEY", key.serialize_der()))
}

/// The DER inside the PEM file at `path`, which must be a `tag`.
fn pem_body(path: &Path, tag: &str) -> Result<Vec<u8>, CertsError> {
    let invalid = |what: String| CertsError::Io {
        path: path.to_owned(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, what),
    };
    let text = std::fs::read_to_string(path).map_err(|source| CertsError::Io {
        path: path.to_owned(),
        source,
    })?;
    let parsed = pem::parse(text).map_err(|e| invalid(e.to_string()))?;
    if parsed.tag() != tag {
        return Err(invalid(format!("holds a {}, not a {tag}", parsed.tag())));
    }
    Ok(parsed.into_contents())
}

/// Writes beside `path` and renames over it: a reader sees the old file or the new one.
fn write_atomically(path: &Path, text: &str, mode: u32) -> Result<(), CertsError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let io = |source| CertsError::Io {
        path: path.to_owned(),
        source,
    };
    let staged = path.with_extension(format!("{}.new", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&staged)
        .map_err(io)?;
    file.write_all(text.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&staged, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use rustls_pki_types::{CertificateDer, UnixTime, pem::PemObject as _};
    use webpki::{EndEntityCert, KeyUsage, anchor_from_trusted_cert};

    use super::*;

    fn der(path: &Path) -> CertificateDer<'static> {
        CertificateDer::from_pem_file(path).unwrap()
    }

    /// Verifies `leaf` against the CA in `ca_dir` for `usage` at `at`.
    fn verify(
        ca_dir: &Path,
        leaf: &Path,
        usage: KeyUsage,
        at: time::OffsetDateTime,
    ) -> Result<(), webpki::Error> {
        let ca = der(&ca_dir.join("ca.pem"));
        let anchor = anchor_from_trusted_cert(&ca).unwrap();
        let leaf = der(leaf);
        let cert = EndEntityCert::try_from(&leaf).unwrap();
        let at = UnixTime::since_unix_epoch(std::time::Duration::from_secs(
            u64::try_from(at.unix_timestamp()).unwrap(),
        ));
        cert.verify_for_usage(
            &[webpki::ring::ECDSA_P256_SHA256],
            &[anchor],
            &[],
            at,
            usage,
            None,
            None,
        )
        .map(|_| ())
    }

    #[test]
    fn an_issued_certificate_names_its_service_and_serves_both_ends_of_a_connection() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path(), time::Duration::days(30), false).unwrap();
        issue(dir.path(), "orders", time::Duration::hours(24)).unwrap();
        let leaf = dir.path().join("orders.pem");
        let now = time::OffsetDateTime::now_utc();
        verify(dir.path(), &leaf, KeyUsage::client_auth(), now).unwrap();
        verify(dir.path(), &leaf, KeyUsage::server_auth(), now).unwrap();
        let bytes = der(&leaf);
        assert!(
            bytes.windows(23).any(|w| w == b"spiffe://mercato/orders"),
            "no SPIFFE URI in the certificate"
        );
    }

    #[test]
    fn a_certificate_is_short_lived_and_trusted_by_no_other_ca() {
        let ours = tempfile::tempdir().unwrap();
        let theirs = tempfile::tempdir().unwrap();
        init(ours.path(), time::Duration::days(30), false).unwrap();
        init(theirs.path(), time::Duration::days(30), false).unwrap();
        issue(ours.path(), "inventory", time::Duration::hours(1)).unwrap();
        let leaf = ours.path().join("inventory.pem");
        let later = time::OffsetDateTime::now_utc() + time::Duration::hours(2);
        assert!(matches!(
            verify(ours.path(), &leaf, KeyUsage::client_auth(), later),
            Err(webpki::Error::CertExpired { .. })
        ));
        assert!(
            verify(
                theirs.path(),
                &leaf,
                KeyUsage::client_auth(),
                time::OffsetDateTime::now_utc()
            )
            .is_err()
        );
    }

    #[test]
    fn keys_are_private_and_a_ca_is_not_replaced_by_accident() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        init(dir.path(), time::Duration::days(30), false).unwrap();
        issue(dir.path(), "payments", time::Duration::hours(24)).unwrap();
        for key in ["ca.key", "payments.key"] {
            let mode = std::fs::metadata(dir.path().join(key))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{key}");
        }
        assert!(matches!(
            init(dir.path(), time::Duration::days(30), false),
            Err(CertsError::CaExists(_))
        ));
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(
            issue(empty.path(), "payments", time::Duration::hours(1)),
            Err(CertsError::NoCa(_))
        ));
    }

    #[test]
    fn renewing_replaces_the_files_with_a_new_key() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path(), time::Duration::days(30), false).unwrap();
        issue(dir.path(), "customers", time::Duration::hours(24)).unwrap();
        let first = std::fs::read(dir.path().join("customers.key")).unwrap();
        issue(dir.path(), "customers", time::Duration::hours(24)).unwrap();
        assert_ne!(std::fs::read(dir.path().join("customers.key")).unwrap(), first);
        verify(
            dir.path(),
            &dir.path().join("customers.pem"),
            KeyUsage::server_auth(),
            time::OffsetDateTime::now_utc(),
        )
        .unwrap();
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.contains(".new"))
            .collect();
        assert!(left.is_empty(), "staged files left behind: {left:?}");
    }
}
