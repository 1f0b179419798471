//! External identity providers that share an HS256 secret with Ferry, as
//! Supabase does. Tokens are checked for the algorithm (HS256 only, so a
//! public key can never serve as the secret), signature, `exp` and `nbf`,
//! and `iss`/`aud` when configured. Each `(issuer, sub)` is one Ferry user.

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::issuer::screen;
use crate::error::ApiError;

/// How an operator configures a shared-secret provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedSecretConfig {
    /// The HS256 secret: at least [`MIN_SECRET_BYTES`] bytes.
    pub secret: String,
    /// The `iss` tokens must carry, when set.
    pub issuer: Option<String>,
    /// The `aud` tokens must carry, when set (Supabase: `authenticated`).
    pub audience: Option<String>,
    /// Which of the provider's `email` claims Ferry believes.
    pub email_trust: EmailTrust,
}

/// The shortest HS256 secret accepted: RFC 7518 §3.2 wants a key at least
/// as long as the hash (256 bits).
pub const MIN_SECRET_BYTES: usize = 32;

/// Which `email` claims of an external provider Ferry believes. An email
/// Ferry believes is recorded on the user, so that sign-in by magic link,
/// invites and billing events by email reach that user: believing an
/// address nobody proved would hand its owner's account to whoever typed
/// it at sign-up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum EmailTrust {
    /// Only when the token says `email_verified: true` (OpenID Connect's
    /// claim; Auth0, Firebase, Google, Cognito, Keycloak send it).
    #[default]
    Verified,
    /// Every `email` claim: for providers that issue tokens only for
    /// addresses they verified (Supabase with "Confirm email" on, whose
    /// tokens carry no `email_verified`).
    Always,
    /// None: users of this provider have no email in Ferry.
    Never,
}

impl std::str::FromStr for EmailTrust {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "verified" => Ok(EmailTrust::Verified),
            "always" => Ok(EmailTrust::Always),
            "never" => Ok(EmailTrust::Never),
            other => Err(format!(
                "unknown email trust {other:?}: use verified, always or never"
            )),
        }
    }
}

impl EmailTrust {
    /// The email of `claims` Ferry believes, normalized.
    fn email(self, claims: &Claims) -> Option<String> {
        let believed = match self {
            EmailTrust::Never => false,
            EmailTrust::Always => true,
            // Some providers (Cognito) send the claim as a string.
            EmailTrust::Verified => {
                matches!(claims.email_verified, Some(serde_json::Value::Bool(true)))
                    || claims.email_verified.as_ref().and_then(|v| v.as_str()) == Some("true")
            }
        };
        let email = claims.email.as_deref().filter(|_| believed)?;
        crate::spaces::normalize_email(email).ok()
    }
}

/// Who an external token names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The provider, as identities are keyed: its `iss` when configured.
    pub issuer: String,
    /// The token's `sub`.
    pub subject: String,
    /// The token's `email`, normalized, when the provider's
    /// [`EmailTrust`] believes it.
    pub email: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    email_verified: Option<serde_json::Value>,
}

/// Allowance for clocks that differ between Ferry and the provider.
const LEEWAY_SECS: u64 = 30;

/// A provider trusted by a shared HS256 secret.
pub struct SharedSecret {
    key: DecodingKey,
    validation: Validation,
    issuer: String,
    email_trust: EmailTrust,
}

impl std::fmt::Debug for SharedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedSecret")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

/// The checks of a provider's tokens signed with `alg`: `exp` and `nbf`
/// always, `iss` and `aud` when configured (and then required).
pub(super) fn validation(
    alg: Algorithm,
    issuer: Option<&String>,
    audience: Option<&String>,
) -> Validation {
    let mut validation = Validation::new(alg);
    validation.leeway = LEEWAY_SECS;
    validation.validate_nbf = true;
    let mut required = vec!["exp", "sub"];
    match issuer {
        Some(iss) => {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        None => validation.iss = None,
    }
    match audience {
        Some(aud) => {
            validation.set_audience(&[aud]);
            required.push("aud");
        }
        None => validation.validate_aud = false,
    }
    validation.set_required_spec_claims(&required);
    validation
}

/// Verifies `token` with `key` and returns whom it names, for the provider
/// whose identities are keyed by `issuer`.
pub(super) fn identity(
    token: &str,
    key: &DecodingKey,
    validation: &Validation,
    issuer: &str,
    trust: EmailTrust,
) -> Result<Identity, ApiError> {
    let data =
        jsonwebtoken::decode::<Claims>(token, key, validation).map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => ApiError::invalid_token("the token has expired"),
            ErrorKind::ImmatureSignature => ApiError::invalid_token("the token is not valid yet"),
            ErrorKind::InvalidAudience => {
                ApiError::invalid_token("the token is for another audience")
            }
            ErrorKind::InvalidIssuer => ApiError::invalid_token("the token is from another issuer"),
            _ => ApiError::invalid_token("the token is not valid"),
        })?;
    let claims = data.claims;
    let sub = &claims.sub;
    if sub.is_empty() || sub.len() > 256 || sub.chars().any(char::is_control) {
        return Err(ApiError::invalid_token("the token's subject is not usable"));
    }
    Ok(Identity {
        issuer: issuer.to_owned(),
        email: trust.email(&claims),
        subject: claims.sub,
    })
}

impl SharedSecret {
    /// The verifier of `config`.
    pub fn new(config: &SharedSecretConfig) -> SharedSecret {
        SharedSecret {
            key: DecodingKey::from_secret(config.secret.as_bytes()),
            validation: validation(
                Algorithm::HS256,
                config.issuer.as_ref(),
                config.audience.as_ref(),
            ),
            issuer: config.issuer.clone().unwrap_or_else(|| "hs256".into()),
            email_trust: config.email_trust,
        }
    }

    /// Checks an HS256 token and returns whom it names.
    pub fn verify(&self, token: &str) -> Result<Identity, ApiError> {
        let header = screen(token)?;
        if header.alg != Algorithm::HS256 {
            return Err(ApiError::invalid_token(
                "the token's algorithm is not accepted",
            ));
        }
        identity(
            token,
            &self.key,
            &self.validation,
            &self.issuer,
            self.email_trust,
        )
    }
}
