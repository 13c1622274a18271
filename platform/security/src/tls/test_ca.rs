//! A certificate authority for the TLS tests, writing the layout `mercato certs` writes; other
//! crates' tests get it with the `test-ca` feature. Every failure panics: it is for tests only.
#![allow(clippy::missing_panics_doc, clippy::must_use_candidate)]

use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls_pki_types::CertificateDer;

pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    cert: rcgen::Certificate,
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

impl TestCa {
    pub fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, "test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Self {
            issuer: Issuer::new(params, key),
            cert,
        }
    }

    /// A certificate for `localhost` with `uris` as URI names, and its key in PKCS#8 DER.
    pub fn issue(&self, uris: &[&str]) -> (CertificateDer<'static>, Vec<u8>) {
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        for uri in uris {
            params
                .subject_alt_names
                .push(SanType::URI((*uri).try_into().unwrap()));
        }
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.der().clone(), key.serialize_der())
    }

    /// Writes `ca.pem`, and `SERVICE.pem`/`SERVICE.key` named `spiffe://mercato/SERVICE`.
    pub fn write(&self, dir: &Path, service: &str) {
        std::fs::write(dir.join("ca.pem"), pem("CERTIFICATE", self.cert.der())).unwrap();
        self.rotate(dir, service);
    }

    /// Writes a new certificate and key for `service` (the CA file is left alone).
    pub fn rotate(&self, dir: &Path, service: &str) -> CertificateDer<'static> {
        let (cert, key) = self.issue(&[&format!("spiffe://mercato/{service}")]);
        std::fs::write(dir.join(format!("{service}.key")), pem("PRIVATE KEY", &key)).unwrap();
        std::fs::write(dir.join(format!("{service}.pem")), pem("CERTIFICATE", &cert)).unwrap();
        cert
    }
}

fn pem(tag: &str, der: &[u8]) -> String {
    pem::encode(&pem::Pem::new(tag, der.to_vec()))
}
