//! JSON Web Key Set (RFC 7517) for ES256 public keys.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// One public key as published in the JWKS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    pub kty: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    #[serde(default, rename = "use", skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
}

impl Jwk {
    /// A P-256 signing key from its affine coordinates; the `kid` is the RFC 7638 thumbprint.
    #[must_use]
    pub fn p256(x: &[u8], y: &[u8]) -> Self {
        let x = URL_SAFE_NO_PAD.encode(x);
        let y = URL_SAFE_NO_PAD.encode(y);
        let kid = thumbprint(&x, &y);
        Self {
            kty: "EC".into(),
            crv: Some("P-256".into()),
            x: Some(x),
            y: Some(y),
            kid: Some(kid),
            alg: Some("ES256".into()),
            use_: Some("sig".into()),
        }
    }
}

/// RFC 7638: SHA-256 over the required members in lexicographic order, no white space.
fn thumbprint(x: &str, y: &str) -> String {
    let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

/// The document served at `/.well-known/jwks.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JwkSet {
    pub keys: Vec<Jwk>,
}

impl JwkSet {
    /// The key with this `kid`, if the set has one.
    #[must_use]
    pub fn find(&self, kid: &str) -> Option<&Jwk> {
        self.keys.iter().find(|k| k.kid.as_deref() == Some(kid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbprint_matches_rfc_7638_shape() {
        let a = Jwk::p256(&[1; 32], &[2; 32]);
        let b = Jwk::p256(&[1; 32], &[2; 32]);
        let c = Jwk::p256(&[1; 32], &[3; 32]);
        assert_eq!(a.kid, b.kid);
        assert_ne!(a.kid, c.kid);
        assert_eq!(a.kid.as_ref().map(String::len), Some(43));
    }

    #[test]
    fn serialises_use_member_with_its_json_name() {
        let json = serde_json::to_value(Jwk::p256(&[1; 32], &[2; 32])).unwrap();
        assert_eq!(json["use"], "sig");
        assert_eq!(json["alg"], "ES256");
    }
}
