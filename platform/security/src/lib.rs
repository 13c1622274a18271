//! Mercato's token security: ES256 signing keys kept on disk with rotation, the JWKS that publishes
//! them, and the issue and verification of JWTs.
//!
//! - [`keys`]: a directory of PKCS#8 keys, one active signer, older keys published until their
//!   tokens have expired.
//! - [`jwks`]: the JSON Web Key Set types.
//! - [`token`]: claims, signing, and a [`token::Verifier`] that pins issuer, audience, algorithm and
//!   token type, and looks keys up by `kid` in a trusted [`token::KeySource`].
//! - [`jwks_client`]: a [`token::KeySource`] that fetches a remote JWKS and refreshes on an unknown
//!   `kid`.
//! - [`verified`]: the tokens a verifier has verified, so a token presented again skips the
//!   signature check but none of the others.
//! - [`secret_file`]: secret files open to every user are refused.
//! - [`service_token`]: service tokens (`client_credentials`): the services' own keys and
//!   secrets, client assertions (`private_key_jwt`) and their replay check, and who may call whom.
//! - [`tls`]: mutual TLS between services (rustls on ring): both ends present a certificate from
//!   the service CA, rotated certificates are picked up without a restart, and a peer is named by
//!   its SPIFFE identity.
#![forbid(unsafe_code)]

pub mod jwks;
pub mod jwks_client;
pub mod keys;
pub mod secret_file;
pub mod service_token;
pub mod tls;
pub mod token;
pub mod verified;

pub use jwks::{Jwk, JwkSet};
pub use jwks_client::JwksClient;
pub use jwks_client::JwksClientConfig;
pub use keys::{KeyError, KeyRing, KeyStore, SigningKey};
pub use service_token::ServiceTokensConfig;
pub use token::{
    ACCESS_TOKEN_TYPE, Claims, KeySource, LocalKeys, SERVICE_TOKEN_TYPE, TokenError, Verifier,
    VerifierConfig, sign, sign_service,
};
