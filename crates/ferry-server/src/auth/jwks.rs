//! External identity providers that publish their public keys as a JWKS
//! (EdDSA, RS256, ES256...). The key set is fetched on first need and again
//! only when a token names a key id not in it, at most once per
//! [`MIN_REFRESH`]: never on every request, so a flood of forged key ids
//! cannot turn Ferry into a flood of requests to the provider.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey};
use tokio::sync::{Mutex, RwLock};

use super::external::{EmailTrust, Identity, identity, validation};
use super::issuer::screen;
use crate::error::ApiError;

/// The shortest time between two fetches of the key set.
pub const MIN_REFRESH: Duration = Duration::from_secs(60);
/// How long a fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// How an operator configures a JWKS provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwksConfig {
    /// Where the key set is published.
    pub url: String,
    /// The algorithms accepted (by default EdDSA, RS256 and ES256).
    pub algorithms: Vec<Algorithm>,
    /// The `iss` tokens must carry, when set.
    pub issuer: Option<String>,
    /// The `aud` tokens must carry, when set.
    pub audience: Option<String>,
    /// The shortest time between two fetches of the key set
    /// ([`MIN_REFRESH`] unless a test says otherwise).
    pub min_refresh: Duration,
    /// Which of the provider's `email` claims Ferry believes.
    pub email_trust: EmailTrust,
}

/// An asymmetric algorithm by name; symmetric (HS*) ones are refused, since
/// a key set's public keys must never serve as HMAC secrets.
pub fn parse_algorithm(name: &str) -> Result<Algorithm, String> {
    match Algorithm::from_str(name) {
        Ok(Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) => Err(format!(
            "{name} is symmetric and cannot be used with a JWKS"
        )),
        Ok(alg) => Ok(alg),
        Err(_) => Err(format!("unknown algorithm {name:?}")),
    }
}

/// The algorithms accepted when none are configured.
pub fn default_algorithms() -> Vec<Algorithm> {
    vec![Algorithm::EdDSA, Algorithm::RS256, Algorithm::ES256]
}

struct Key {
    key: DecodingKey,
    /// The algorithm the key set pins the key to, if it does.
    alg: Option<Algorithm>,
}

#[derive(Default)]
struct Cache {
    keys: HashMap<String, Key>,
    fetched_at: Option<Instant>,
}

/// A provider trusted through its published keys.
pub struct JwksProvider {
    config: JwksConfig,
    http: reqwest::Client,
    cache: RwLock<Cache>,
    fetching: Mutex<()>,
    fetches: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for JwksProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksProvider")
            .field("url", &self.config.url)
            .finish_non_exhaustive()
    }
}

impl JwksProvider {
    /// The provider of `config`; nothing is fetched yet.
    pub fn new(config: JwksConfig) -> Result<JwksProvider, reqwest::Error> {
        let http = reqwest::Client::builder().timeout(FETCH_TIMEOUT).build()?;
        Ok(JwksProvider {
            config,
            http,
            cache: RwLock::default(),
            fetching: Mutex::new(()),
            fetches: Default::default(),
        })
    }

    /// How many times the key set was fetched (for tests and metrics).
    pub fn fetches(&self) -> u64 {
        self.fetches.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether tokens with this header algorithm are for this provider.
    pub fn accepts(&self, alg: Algorithm) -> bool {
        self.config.algorithms.contains(&alg)
    }

    /// Fetches the key set unless it was fetched less than [`MIN_REFRESH`]
    /// ago. Concurrent callers wait for one fetch.
    async fn refresh(&self) {
        let _one_at_a_time = self.fetching.lock().await;
        let last = self.cache.read().await.fetched_at;
        if last.is_some_and(|at| at.elapsed() < self.config.min_refresh) {
            return;
        }
        self.fetches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let fetched = async {
            self.http
                .get(&self.config.url)
                .send()
                .await?
                .error_for_status()?
                .json::<JwkSet>()
                .await
        }
        .await;
        let mut cache = self.cache.write().await;
        cache.fetched_at = Some(Instant::now());
        match fetched {
            Ok(set) => {
                cache.keys = set
                    .keys
                    .iter()
                    .filter_map(|jwk| {
                        let kid = jwk.common.key_id.clone()?;
                        let key = DecodingKey::from_jwk(jwk).ok()?;
                        let alg = jwk
                            .common
                            .key_algorithm
                            .and_then(|a| Algorithm::from_str(&a.to_string()).ok());
                        Some((kid, Key { key, alg }))
                    })
                    .collect();
            }
            // The keys known so far stay; the next unknown kid retries
            // after the interval.
            Err(e) => tracing::warn!(url = %self.config.url, error = %e, "cannot fetch the JWKS"),
        }
    }

    /// Checks a token against the published keys and returns whom it names.
    pub async fn verify(&self, token: &str) -> Result<Identity, ApiError> {
        let header = screen(token)?;
        if !self.accepts(header.alg) {
            return Err(ApiError::invalid_token(
                "the token's algorithm is not accepted",
            ));
        }
        let kid = header
            .kid
            .ok_or_else(|| ApiError::invalid_token("the token has no key id"))?;
        if !self.cache.read().await.keys.contains_key(&kid) {
            self.refresh().await;
        }
        let cache = self.cache.read().await;
        let key = cache
            .keys
            .get(&kid)
            .ok_or_else(|| ApiError::invalid_token("the token was signed by an unknown key"))?;
        if key.alg.is_some_and(|alg| alg != header.alg) {
            return Err(ApiError::invalid_token(
                "the token's algorithm does not match its key",
            ));
        }
        let validation = validation(
            header.alg,
            self.config.issuer.as_ref(),
            self.config.audience.as_ref(),
        );
        let issuer = self.config.issuer.as_ref().unwrap_or(&self.config.url);
        identity(
            token,
            &key.key,
            &validation,
            issuer,
            self.config.email_trust,
        )
    }
}
