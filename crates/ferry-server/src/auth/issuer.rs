//! Ferry's own token issuer: Ed25519 keys kept in the database (so every
//! node sharing it signs and verifies alike), EdDSA access tokens, and the
//! JWKS document that publishes the public keys.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ferry_core::UserId;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::store::{Store, StoreError, StoredKey};

/// The `iss` of tokens Ferry issues itself.
pub const ISSUER: &str = "ferry";

/// Tokens longer than this are refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// The claims of a Ferry access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// Issuer, always [`ISSUER`].
    pub iss: String,
    /// Issued at, seconds since the epoch.
    pub iat: u64,
    /// Expires at, seconds since the epoch.
    pub exp: u64,
}

struct VerifyingKey {
    kid: String,
    key: DecodingKey,
}

/// Signs and verifies Ferry's own access tokens.
pub struct Issuer {
    kid: String,
    signing: EncodingKey,
    verifying: Vec<VerifyingKey>,
    jwks: Value,
    /// Tokens already verified by these keys.
    verified: super::verified::Verified,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// A fresh Ed25519 key, from the operating system's random source.
pub fn generate_key(now_ms: u64) -> Result<StoredKey, StoreError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| StoreError::Internal(format!("random: {e}")))?;
    let key = SigningKey::from_bytes(&seed);
    let der = key
        .to_pkcs8_der()
        .map_err(|e| StoreError::Internal(format!("pkcs8: {e}")))?;
    Ok(StoredKey {
        kid: key_id(&key),
        private_pkcs8: der.as_bytes().to_vec(),
        created_at_ms: now_ms,
    })
}

/// A key's id: derived from its public half, so it names the key exactly.
fn key_id(key: &SigningKey) -> String {
    URL_SAFE_NO_PAD.encode(&key.verifying_key().as_bytes()[..12])
}

/// Ferry's issuer as the server holds it: reloaded from the database when a
/// token names a key id this node has not loaded (a key added by another
/// node or by `ferry admin rotate-key`), at most once per interval.
pub struct Keyring {
    current: std::sync::RwLock<std::sync::Arc<Issuer>>,
    /// When the keys were last reloaded; `None` until the first reload.
    loaded_at: tokio::sync::Mutex<Option<std::time::Instant>>,
    min_reload: std::time::Duration,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring").finish_non_exhaustive()
    }
}

impl Keyring {
    /// Holds `issuer`, reloading it at most once per `min_reload`.
    pub fn new(issuer: Issuer, min_reload: std::time::Duration) -> Keyring {
        Keyring {
            current: std::sync::RwLock::new(std::sync::Arc::new(issuer)),
            loaded_at: tokio::sync::Mutex::new(None),
            min_reload,
        }
    }

    /// The issuer as loaded now.
    pub fn get(&self) -> std::sync::Arc<Issuer> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Whether `kid` is one of Ferry's keys, reloading the keys once if it
    /// is not known yet and the last load is old enough.
    pub async fn knows(&self, store: &dyn Store, kid: &str) -> Result<bool, StoreError> {
        if self.get().has_key(kid) {
            return Ok(true);
        }
        let mut loaded_at = self.loaded_at.lock().await;
        if loaded_at.is_some_and(|at| at.elapsed() < self.min_reload) {
            return Ok(self.get().has_key(kid));
        }
        let fresh = Issuer::load(store, crate::clock::wall_ms()).await?;
        *loaded_at = Some(std::time::Instant::now());
        let known = fresh.has_key(kid);
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = std::sync::Arc::new(fresh);
        Ok(known)
    }
}

/// The checks every token passes before any key is tried: a size limit, a
/// header that parses, and no key named by the token itself (`jku`, `jwk`,
/// `x5u`, `x5c`), which would let its author pick the key that verifies it.
pub fn screen(token: &str) -> Result<Header, ApiError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(ApiError::invalid_token("the token is too large"));
    }
    let header = jsonwebtoken::decode_header(token)
        .map_err(|_| ApiError::invalid_token("the token is malformed"))?;
    let names_its_key = header.jku.is_some()
        || header.jwk.is_some()
        || header.x5u.is_some()
        || header.x5c.is_some();
    if names_its_key {
        return Err(ApiError::invalid_token("the token names its own key"));
    }
    Ok(header)
}

impl Issuer {
    /// Loads the signing keys from `store`, creating the first one if the
    /// database has none.
    pub async fn load(store: &dyn Store, now_ms: u64) -> Result<Issuer, StoreError> {
        let keys = store.signing_keys(generate_key(now_ms)?).await?;
        Issuer::from_keys(&keys)
    }

    /// Builds an issuer from stored keys, newest first; the newest signs.
    pub fn from_keys(keys: &[StoredKey]) -> Result<Issuer, StoreError> {
        let newest = keys
            .first()
            .ok_or_else(|| StoreError::Internal("no signing key".into()))?;
        let mut verifying = Vec::new();
        let mut jwks = Vec::new();
        for stored in keys {
            let key = SigningKey::from_pkcs8_der(&stored.private_pkcs8)
                .map_err(|e| StoreError::Internal(format!("signing key {}: {e}", stored.kid)))?;
            let x = URL_SAFE_NO_PAD.encode(key.verifying_key().as_bytes());
            let decoding = DecodingKey::from_ed_components(&x)
                .map_err(|e| StoreError::Internal(format!("signing key {}: {e}", stored.kid)))?;
            verifying.push(VerifyingKey {
                kid: stored.kid.clone(),
                key: decoding,
            });
            jwks.push(json!({
                "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig",
                "kid": stored.kid, "x": x,
            }));
        }
        Ok(Issuer {
            kid: newest.kid.clone(),
            signing: EncodingKey::from_ed_der(&newest.private_pkcs8),
            verifying,
            jwks: json!({ "keys": jwks }),
            verified: super::verified::Verified::default(),
        })
    }

    /// Whether `kid` names one of this issuer's keys.
    pub fn has_key(&self, kid: &str) -> bool {
        self.verifying.iter().any(|k| k.kid == kid)
    }

    /// The JWKS document of `/.well-known/jwks.json`.
    pub fn jwks(&self) -> &Value {
        &self.jwks
    }

    /// An access token for `user`, valid for `ttl_secs` from `now_secs`.
    pub fn mint(&self, user: &UserId, now_secs: u64, ttl_secs: u64) -> Result<String, ApiError> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        let claims = Claims {
            sub: user.to_string(),
            iss: ISSUER.into(),
            iat: now_secs,
            exp: now_secs.saturating_add(ttl_secs),
        };
        jsonwebtoken::encode(&header, &claims, &self.signing).map_err(ApiError::internal)
    }

    /// Checks a token: EdDSA only, one of this issuer's keys, not expired.
    /// Returns the user id it names.
    pub fn verify(&self, token: &str) -> Result<UserId, ApiError> {
        let now_secs = crate::clock::wall_ms() / 1000;
        if let Some(user) = self.verified.get(token, now_secs) {
            return Ok(user);
        }
        let header = screen(token)?;
        if header.alg != Algorithm::EdDSA {
            return Err(ApiError::invalid_token(
                "the token's algorithm is not accepted",
            ));
        }
        let kid = header
            .kid
            .ok_or_else(|| ApiError::invalid_token("the token has no key id"))?;
        let key = self
            .verifying
            .iter()
            .find(|k| k.kid == kid)
            .ok_or_else(|| {
                ApiError::invalid_token(
                    "the token was signed by a key this server does not have \
                     (was it made against another Ferry database?)",
                )
            })?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.leeway = 0;
        validation.validate_nbf = true;
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "sub", "iss"]);
        let data =
            jsonwebtoken::decode::<Claims>(token, &key.key, &validation).map_err(|e| {
                match e.kind() {
                    ErrorKind::ExpiredSignature => ApiError::invalid_token("the token has expired"),
                    _ => ApiError::invalid_token("the token is not valid"),
                }
            })?;
        let user = UserId::new(data.claims.sub)
            .map_err(|_| ApiError::invalid_token("the token's subject is not a user id"))?;
        self.verified.put(token, &user, data.claims.exp);
        Ok(user)
    }

    /// How many verified tokens this issuer keeps (at most
    /// [`super::verified::CAP`]).
    pub fn verified_tokens(&self) -> usize {
        self.verified.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issuer() -> Issuer {
        Issuer::from_keys(&[generate_key(0).unwrap()]).unwrap()
    }

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    #[test]
    fn a_minted_token_verifies() {
        let iss = issuer();
        let user = UserId::new("u1").unwrap();
        let token = iss.mint(&user, now(), 60).unwrap();
        assert_eq!(iss.verify(&token).unwrap(), user);
    }

    #[test]
    fn expired_tokens_are_refused() {
        let iss = issuer();
        let token = iss
            .mint(&UserId::new("u1").unwrap(), now() - 120, 60)
            .unwrap();
        let err = iss.verify(&token).unwrap_err();
        assert_eq!(err.code(), "invalid_token");
    }

    #[test]
    fn a_verified_token_is_kept_until_it_expires_and_no_longer() {
        let iss = issuer();
        let user = UserId::new("u1").unwrap();
        // Expires two seconds from now.
        let token = iss.mint(&user, now() - 58, 60).unwrap();
        assert_eq!(iss.verify(&token).unwrap(), user);
        assert_eq!(iss.verified.len(), 1);
        assert_eq!(iss.verify(&token).unwrap(), user);
        // A token one byte off is checked, not taken for the kept one.
        let mut forged = token.clone();
        forged.pop();
        forged.push(if token.ends_with('A') { 'B' } else { 'A' });
        assert_eq!(iss.verify(&forged).unwrap_err().code(), "invalid_token");
        assert_eq!(iss.verified.len(), 1, "a refused token is not kept");
        std::thread::sleep(std::time::Duration::from_millis(3_100));
        let err = iss.verify(&token).unwrap_err();
        assert_eq!(err.code(), "invalid_token");
    }

    #[test]
    fn the_verified_tokens_are_bounded() {
        let kept = crate::auth::verified::Verified::with_cap(3);
        for i in 0..10 {
            kept.put(&format!("t{i}"), &UserId::new("u1").unwrap(), u64::MAX);
            assert!(kept.len() <= 3);
        }
        assert_eq!(kept.get("t9", 0), Some(UserId::new("u1").unwrap()));
        assert_eq!(kept.get("t0", 0), None);
    }

    #[test]
    fn tokens_of_another_key_are_refused() {
        let token = issuer()
            .mint(&UserId::new("u1").unwrap(), now(), 60)
            .unwrap();
        assert!(issuer().verify(&token).is_err());
    }

    #[test]
    fn an_older_key_still_verifies_after_rotation() {
        let old = generate_key(1).unwrap();
        let new = generate_key(2).unwrap();
        let before = Issuer::from_keys(std::slice::from_ref(&old)).unwrap();
        let token = before.mint(&UserId::new("u1").unwrap(), now(), 60).unwrap();
        let after = Issuer::from_keys(&[new, old]).unwrap();
        assert!(after.verify(&token).is_ok());
        assert_eq!(after.jwks()["keys"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn alg_none_hs256_and_garbage_are_refused() {
        let iss = issuer();
        let token = iss.mint(&UserId::new("u1").unwrap(), now(), 60).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","kid":"x"}"#);
        let forged = format!("{none_header}.{}.", parts[1]);
        assert!(iss.verify(&forged).is_err());
        let hs_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256"}"#);
        assert!(
            iss.verify(&format!("{hs_header}.{}.{}", parts[1], parts[2]))
                .is_err()
        );
        assert!(iss.verify("not a token").is_err());
        assert!(iss.verify(&"a".repeat(MAX_TOKEN_BYTES + 1)).is_err());
        // A valid signature over a tampered payload.
        let payload = URL_SAFE_NO_PAD.encode(
            format!(
                r#"{{"sub":"u2","iss":"ferry","iat":0,"exp":{}}}"#,
                now() + 60
            )
            .as_bytes(),
        );
        assert!(
            iss.verify(&format!("{}.{payload}.{}", parts[0], parts[2]))
                .is_err()
        );
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        /// A real token with bytes replaced, removed or inserted.
        fn bent_token(real: String) -> impl Strategy<Value = String> {
            let len = real.len();
            prop::collection::vec((0..len, any::<u8>(), 0u8..3), 1..6).prop_map(move |edits| {
                let mut bytes = real.clone().into_bytes();
                for (at, byte, kind) in edits {
                    let at = at.min(bytes.len().saturating_sub(1));
                    match kind {
                        0 if !bytes.is_empty() => bytes[at] = byte,
                        1 if !bytes.is_empty() => {
                            bytes.remove(at);
                        }
                        _ => bytes.insert(at, byte),
                    }
                }
                String::from_utf8_lossy(&bytes).into_owned()
            })
        }

        /// One issuer and one of its tokens for every case.
        fn minted() -> &'static (Issuer, String) {
            static MINTED: std::sync::OnceLock<(Issuer, String)> = std::sync::OnceLock::new();
            MINTED.get_or_init(|| {
                let iss = issuer();
                let token = iss.mint(&UserId::new("u1").unwrap(), now(), 3600).unwrap();
                (iss, token)
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(10_000))]

            /// Arbitrary and bent tokens: the header screen and the
            /// verification never panic, and none verifies unless its
            /// header and claims are the minted token's own (a change the
            /// base64 decoder ignores may still pass; a changed claim
            /// never does).
            #[test]
            fn no_bent_or_arbitrary_token_verifies(token in prop_oneof![
                any::<String>(),
                "[A-Za-z0-9_\\-]{0,60}\\.[A-Za-z0-9_\\-]{0,200}\\.[A-Za-z0-9_\\-]{0,90}",
                bent_token(minted().1.clone()),
            ]) {
                let (iss, real) = minted();
                let _ = screen(&token);
                if let Ok(user) = iss.verify(&token) {
                    prop_assert_eq!(user.as_str(), "u1");
                    let signed = |t: &str| t.rsplit_once('.').map(|(head, _)| head.to_owned());
                    prop_assert_eq!(signed(&token), signed(real), "{}", token);
                }
            }
        }
    }
}
