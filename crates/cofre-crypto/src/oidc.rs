//! OpenID Connect's cryptography: the random values of a login (state, nonce, the PKCE verifier
//! and its S256 challenge, RFC 7636) and the ID token's JWS signature, checked against the
//! provider's published keys (JWKS). The claims are judged by `cofre_core::sso`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
/// A provider's published keys (its `jwks_uri`), as parsed from JSON.
pub use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::jwk::{Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// 32 random bytes as base64url: a `state`, a `nonce` or a PKCE verifier (43 characters, inside
/// RFC 7636's 43 to 128).
pub fn random_text() -> Zeroizing<String> {
    let bytes = Zeroizing::new(crate::random_array::<32>());
    Zeroizing::new(URL_SAFE_NO_PAD.encode(bytes.as_slice()))
}

/// The PKCE `code_challenge` of a verifier (method S256).
pub fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// Why an ID token's signature does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdTokenError {
    #[error("signature: the ID token is not a JWS")]
    Malformed,
    #[error("signature: algorithm {0} is not accepted (asymmetric signatures only)")]
    Algorithm(String),
    #[error("signature: no key {0:?} in the provider's JWKS")]
    UnknownKey(String),
    #[error("signature: the ID token's signature does not verify with the provider's key")]
    Signature,
}

/// The algorithms an ID token may be signed with: the provider's private key, never a secret
/// shared with clients (`none` and HS* are refused).
const ACCEPTED: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// The `kid` the token's header names, if any (to know whether the cached JWKS has it).
pub fn key_id(token: &str) -> Result<Option<String>, IdTokenError> {
    Ok(jsonwebtoken::decode_header(token)
        .map_err(|_| IdTokenError::Malformed)?
        .kid)
}

/// Whether `jwks` holds the key `kid` names (without a `kid`, whether it holds any key).
pub fn has_key(jwks: &JwkSet, kid: Option<&str>) -> bool {
    match kid {
        Some(k) => jwks.find(k).is_some(),
        None => !jwks.keys.is_empty(),
    }
}

fn signing_keys<'a>(jwks: &'a JwkSet, kid: Option<&str>) -> Vec<&'a Jwk> {
    jwks.keys
        .iter()
        .filter(|k| kid.is_none() || k.common.key_id.as_deref() == kid)
        .filter(
            |k| !matches!(k.common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature),
        )
        .collect()
}

/// Verifies the token's signature with the key of `jwks` its header names and returns its
/// claims, unjudged.
pub fn verify(token: &str, jwks: &JwkSet) -> Result<Map<String, Value>, IdTokenError> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| IdTokenError::Malformed)?;
    if !ACCEPTED.contains(&header.alg) {
        return Err(IdTokenError::Algorithm(format!("{:?}", header.alg)));
    }
    let keys = signing_keys(jwks, header.kid.as_deref());
    if keys.is_empty() {
        return Err(IdTokenError::UnknownKey(
            header.kid.unwrap_or_else(|| "(none)".into()),
        ));
    }
    let mut validation = Validation::new(header.alg);
    // The claims are cofre_core::sso's to judge, with its own skew and reasons.
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    for key in keys {
        if key
            .common
            .key_algorithm
            .is_some_and(|a| format!("{a:?}") != format!("{:?}", header.alg))
        {
            continue;
        }
        let Ok(decoding) = DecodingKey::from_jwk(key) else {
            continue;
        };
        if let Ok(data) = jsonwebtoken::decode::<Map<String, Value>>(token, &decoding, &validation)
        {
            return Ok(data.claims);
        }
    }
    Err(IdTokenError::Signature)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_challenge_is_rfc_7636s_example() {
        // RFC 7636 appendix B.
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        let v = random_text();
        assert_eq!(v.len(), 43);
        assert_ne!(*v, *random_text());
    }

    #[test]
    fn unsigned_and_symmetric_tokens_are_refused_before_any_key() {
        let b = |v: &str| URL_SAFE_NO_PAD.encode(v);
        let jwks: JwkSet = serde_json::from_str(r#"{"keys":[]}"#).unwrap();
        let none = format!("{}.{}.", b(r#"{"alg":"none"}"#), b(r#"{"sub":"x"}"#));
        assert_eq!(verify(&none, &jwks), Err(IdTokenError::Malformed));
        let hs = format!("{}.{}.c2ln", b(r#"{"alg":"HS256"}"#), b(r#"{"sub":"x"}"#));
        assert!(matches!(
            verify(&hs, &jwks),
            Err(IdTokenError::Algorithm(_))
        ));
        let rs = format!(
            "{}.{}.c2ln",
            b(r#"{"alg":"RS256","kid":"k1"}"#),
            b(r#"{"sub":"x"}"#)
        );
        assert_eq!(
            verify(&rs, &jwks),
            Err(IdTokenError::UnknownKey("k1".into()))
        );
        assert_eq!(key_id(&rs), Ok(Some("k1".into())));
        assert_eq!(verify("not a token", &jwks), Err(IdTokenError::Malformed));
    }
}
