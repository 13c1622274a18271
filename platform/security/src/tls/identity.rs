//! The SPIFFE identity in a certificate's subject alternative names.
//!
//! A small DER walk rather than a full X.509 parser: the chain was already verified by rustls,
//! so all that is read here is the URI names of the extension `subjectAltName`.

use rustls_pki_types::CertificateDer;

/// The trust domain every service identity belongs to.
pub const TRUST_DOMAIN: &str = "mercato";

/// A verified peer: the service its certificate names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServiceIdentity(String);

impl ServiceIdentity {
    /// The service's name (`orders` for `spiffe://mercato/orders`).
    #[must_use]
    pub fn service(&self) -> &str {
        &self.0
    }

    /// The full SPIFFE ID.
    #[must_use]
    pub fn spiffe_id(&self) -> String {
        format!("spiffe://{TRUST_DOMAIN}/{}", self.0)
    }
}

impl std::fmt::Display for ServiceIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.spiffe_id())
    }
}

/// The identity of the end-entity certificate of a verified chain: its one
/// `spiffe://mercato/<service>` URI. `None` when it has none, several, or one of another domain.
#[must_use]
pub fn peer_identity(chain: &[CertificateDer<'_>]) -> Option<ServiceIdentity> {
    let uris = san_uris(chain.first()?.as_ref())?;
    let prefix = format!("spiffe://{TRUST_DOMAIN}/");
    let mut ours = uris.iter().filter_map(|u| u.strip_prefix(prefix.as_str()));
    let service = ours.next()?;
    let plain = !service.is_empty()
        && service
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    (plain && ours.next().is_none()).then(|| ServiceIdentity(service.to_owned()))
}

const SEQUENCE: u8 = 0x30;
const OID: u8 = 0x06;
const BOOLEAN: u8 = 0x01;
const OCTET_STRING: u8 = 0x04;
/// `[3] EXPLICIT` around the extensions of a v3 certificate.
const EXTENSIONS: u8 = 0xa3;
/// `uniformResourceIdentifier [6] IMPLICIT IA5String` in `GeneralName`.
const URI: u8 = 0x86;
/// 2.5.29.17
const SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];

/// The URI names of the certificate's subjectAltName extension.
fn san_uris(der: &[u8]) -> Option<Vec<String>> {
    let (tag, cert, _) = element(der)?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, mut tbs, _) = element(cert)?;
    if tag != SEQUENCE {
        return None;
    }
    // version, serial, signature, issuer, validity, subject, key, then optional fields.
    while !tbs.is_empty() {
        let (tag, content, rest) = element(tbs)?;
        tbs = rest;
        if tag == EXTENSIONS {
            return subject_alt_names(content);
        }
    }
    Some(Vec::new())
}

fn subject_alt_names(explicit: &[u8]) -> Option<Vec<String>> {
    let (_, mut extensions, _) = element(explicit)?;
    while !extensions.is_empty() {
        let (_, extension, rest) = element(extensions)?;
        extensions = rest;
        let (tag, oid, mut fields) = element(extension)?;
        if tag != OID || oid != SUBJECT_ALT_NAME {
            continue;
        }
        let (mut tag, mut value, after) = element(fields)?;
        if tag == BOOLEAN {
            fields = after;
            (tag, value, _) = element(fields)?;
        }
        if tag != OCTET_STRING {
            return None;
        }
        let (_, mut names, _) = element(value)?;
        let mut uris = Vec::new();
        while !names.is_empty() {
            let (tag, name, rest) = element(names)?;
            names = rest;
            if tag == URI {
                uris.push(String::from_utf8(name.to_vec()).ok()?);
            }
        }
        return Some(uris);
    }
    Some(Vec::new())
}

/// One DER element: its tag, its content and what follows it.
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let length = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let (bytes, after) = rest.split_at(count);
        rest = after;
        bytes.iter().fold(0_usize, |n, b| (n << 8) | usize::from(*b))
    };
    if rest.len() < length {
        return None;
    }
    let (content, after) = rest.split_at(length);
    Some((tag, content, after))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::test_ca::TestCa;

    #[test]
    fn the_service_is_read_from_the_spiffe_uri() {
        let ca = TestCa::new();
        let (cert, _) = ca.issue(&["spiffe://mercato/orders"]);
        let id = peer_identity(&[cert]).unwrap();
        assert_eq!(id.service(), "orders");
        assert_eq!(id.to_string(), "spiffe://mercato/orders");
    }

    #[test]
    fn no_uri_another_domain_or_two_identities_name_nobody() {
        let ca = TestCa::new();
        for uris in [
            &[][..],
            &["spiffe://elsewhere/orders"][..],
            &["spiffe://mercato/orders", "spiffe://mercato/payments"][..],
            &["spiffe://mercato/../admin"][..],
        ] {
            let (cert, _) = ca.issue(uris);
            assert_eq!(peer_identity(&[cert]), None, "{uris:?}");
        }
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        for bytes in [
            &b""[..],
            &[0x30, 0x82, 0xff][..],
            &[0x30, 0x03, 0x30, 0x05, 0x00][..],
        ] {
            assert_eq!(peer_identity(&[CertificateDer::from(bytes.to_vec())]), None);
        }
    }
}
