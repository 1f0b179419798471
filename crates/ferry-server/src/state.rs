//! The state every handler shares.

use std::sync::Arc;

use ferry_core::ClientId;

use crate::app_schema::SchemaCache;
use crate::auth::KnownUsers;
use crate::auth::api_token::{ApiTokenSettings, TokenLimits};
use crate::auth::external::{SharedSecret, SharedSecretConfig};
use crate::auth::issuer::{Issuer, Keyring};
use crate::auth::jwks::{JwksConfig, JwksProvider};
use crate::auth::limits::SignInLimits;
use crate::auth::mail::{self, Mailer, MailerConfig};
use crate::billing::BillingSettings;
use crate::clock::{ServerClock, wall_ms};
use crate::http::HttpLimits;
use crate::http::proxy::TrustedProxies;
use crate::ops::metrics::Metrics;
use crate::realtime::{Realtime, RealtimeSettings};
use crate::spaces::quota::{CreationLimits, SpaceQuotas};
use crate::store::{Store, StoreError};

/// What the server knows beyond its configuration file.
#[derive(Debug, Clone)]
pub struct Settings {
    /// This node's id in the HLCs it stamps.
    pub node_id: ClientId,
    /// How far ahead of the server's clock a change's HLC may be, in ms.
    pub max_clock_skew_ms: u64,
    /// The address people reach Ferry (or the app) at; sign-in links start
    /// with it.
    pub public_url: String,
    /// Where sign-in mail goes.
    pub mailer: MailerConfig,
    /// How long a sign-in link works.
    pub login_ttl_secs: u64,
    /// How long an access token works.
    pub access_ttl_secs: u64,
    /// How long a refresh token works unused.
    pub refresh_ttl_secs: u64,
    /// An external identity provider sharing an HS256 secret, if any.
    pub shared_secret: Option<SharedSecretConfig>,
    /// An external identity provider publishing a JWKS, if any.
    pub jwks: Option<JwksConfig>,
    /// The shortest time between two reloads of Ferry's own signing keys on
    /// an unknown key id.
    pub key_reload_interval: std::time::Duration,
    /// Realtime connections: allowed origins, limits, timings.
    pub realtime: RealtimeSettings,
    /// A directory of static files served at `/` (an app's own build)
    /// instead of Ferry's todo demo.
    pub app_dir: Option<std::path::PathBuf>,
    /// The billing gate and the webhooks' secrets.
    pub billing: BillingSettings,
    /// Timeouts and the connection cap of the HTTP server.
    pub http: HttpLimits,
    /// Proxies whose `X-Forwarded-For` names the client (for per-address
    /// rate limits); none by default.
    pub trusted_proxies: TrustedProxies,
    /// When set, `/metrics` answers only requests bearing this token.
    pub metrics_token: Option<String>,
    /// How many spaces and invites one user may create.
    pub quotas: SpaceQuotas,
    /// API tokens: their rate and how many one user holds.
    pub api_tokens: ApiTokenSettings,
    /// Webhooks: the configured endpoints, and how deliveries are tried.
    pub webhooks: crate::webhooks::WebhookSettings,
    /// Files: where their bytes are kept, and their limits.
    pub files: crate::files::FileSettings,
}

impl Settings {
    /// The defaults, for node `node_id` reachable at `public_url`.
    pub fn new(node_id: ClientId, public_url: impl Into<String>) -> Settings {
        Settings {
            node_id,
            max_clock_skew_ms: 300_000,
            public_url: public_url.into(),
            mailer: MailerConfig::Log,
            login_ttl_secs: 15 * 60,
            access_ttl_secs: 15 * 60,
            refresh_ttl_secs: 30 * 24 * 3600,
            shared_secret: None,
            jwks: None,
            key_reload_interval: std::time::Duration::from_secs(30),
            realtime: RealtimeSettings::default(),
            app_dir: None,
            billing: BillingSettings::default(),
            http: HttpLimits::default(),
            trusted_proxies: TrustedProxies::default(),
            metrics_token: None,
            quotas: SpaceQuotas::default(),
            api_tokens: ApiTokenSettings::default(),
            webhooks: crate::webhooks::WebhookSettings::default(),
            files: crate::files::FileSettings::default(),
        }
    }

    /// Refuses settings a server must not start with: secrets anyone could
    /// guess (empty or short), an email rule without a provider.
    pub fn check(&self) -> Result<(), SettingsError> {
        use crate::auth::external::MIN_SECRET_BYTES;
        if let Some(shared) = &self.shared_secret {
            long_enough(
                "the JWT secret (jwt_secret)",
                &shared.secret,
                MIN_SECRET_BYTES,
            )?;
        }
        for secret in &self.billing.stripe_secrets {
            long_enough("a Stripe webhook secret", secret, MIN_WEBHOOK_SECRET_BYTES)?;
        }
        if let Some(secret) = &self.billing.lemonsqueezy_secret {
            long_enough(
                "the Lemon Squeezy webhook secret",
                secret,
                MIN_WEBHOOK_SECRET_BYTES,
            )?;
        }
        let billing = &self.billing;
        let webhooks = !billing.stripe_secrets.is_empty() || billing.lemonsqueezy_secret.is_some();
        if billing.gated() && webhooks && billing.plans.is_empty() {
            return Err(SettingsError::NoPlans);
        }
        for endpoint in &self.webhooks.endpoints {
            endpoint.check().map_err(SettingsError::Webhook)?;
        }
        if let Some(token) = &self.metrics_token {
            long_enough(
                "the metrics token (metrics_token)",
                token,
                MIN_WEBHOOK_SECRET_BYTES,
            )?;
        }
        Ok(())
    }
}

/// The shortest webhook secret or metrics token accepted.
pub const MIN_WEBHOOK_SECRET_BYTES: usize = 16;

fn long_enough(what: &'static str, secret: &str, min: usize) -> Result<(), SettingsError> {
    if secret.trim().len() < min {
        return Err(SettingsError::WeakSecret {
            what,
            min,
            len: secret.trim().len(),
        });
    }
    Ok(())
}

/// Settings a server refuses to start with.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// A secret that is empty or too short to withstand guessing.
    #[error(
        "{what} is {len} bytes long; it must be at least {min} bytes of random text \
         (an empty or short secret would let anyone forge what it signs)"
    )]
    WeakSecret {
        /// Which secret.
        what: &'static str,
        /// The least accepted.
        min: usize,
        /// What was given.
        len: usize,
    },
    /// Sync needs a plan and webhooks are on, but no product grants one.
    #[error(
        "billing: sync needs a plan and payment webhooks are configured, but [billing.plans] \
         (--billing-plans) maps no product to a plan, so no subscription would grant one; \
         map each price or variant you sell, e.g. --billing-plans price_1Pxyz=pro"
    )]
    NoPlans,
    /// A webhook endpoint that cannot work, or whose deliveries anyone
    /// could forge.
    #[error("{0}")]
    Webhook(String),
}

/// Shared by every handler; cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The database.
    pub store: Arc<dyn Store>,
    /// Ferry's own token issuer.
    pub issuer: Arc<Keyring>,
    /// This node's HLC.
    pub clock: Arc<ServerClock>,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Settings.
    pub settings: Arc<Settings>,
    /// Where sign-in mail goes.
    pub mailer: Arc<dyn Mailer>,
    /// Rate limits of sign-in requests.
    pub sign_in_limits: Arc<SignInLimits>,
    /// Rate limits of requests made with API tokens.
    pub token_limits: Arc<TokenLimits>,
    /// The external provider trusted by a shared secret, if configured.
    pub shared_secret: Option<Arc<SharedSecret>>,
    /// The external provider trusted through its JWKS, if configured.
    pub jwks: Option<Arc<JwksProvider>>,
    /// Realtime signals: this node's subscriptions and the other nodes.
    pub realtime: Arc<Realtime>,
    /// Rate limits of space creation and invites, per user.
    pub creation_limits: Arc<CreationLimits>,
    /// The app's schema this node checks writes against.
    pub app_schema: Arc<SchemaCache>,
    pub(crate) known_users: Arc<KnownUsers>,
    /// Uploads of files in flight on this node.
    pub uploads: Arc<crate::files::uploads::Uploads>,
}

impl std::fmt::Debug for dyn Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

impl AppState {
    /// Builds the state over `store`, loading (or creating) the signing keys.
    pub async fn new(store: Arc<dyn Store>, settings: Settings) -> Result<AppState, StoreError> {
        settings
            .check()
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        let issuer = Issuer::load(store.as_ref(), wall_ms()).await?;
        let settings_shared = settings.shared_secret.clone();
        let settings_reload = settings.key_reload_interval;
        let settings_quotas = settings.quotas.clone();
        let token_limits = Arc::new(TokenLimits::new(
            settings.api_tokens.per_second,
            settings.api_tokens.burst,
        ));
        let jwks = match settings.jwks.clone() {
            Some(c) => Some(Arc::new(JwksProvider::new(c).map_err(|e| {
                StoreError::Internal(format!("cannot build the JWKS client: {e}"))
            })?)),
            None => None,
        };
        let mailer = mail::mailer(&settings.mailer)
            .map_err(|e| StoreError::Unavailable(format!("cannot prepare the mailer: {e}")))?;
        let metrics = Arc::new(Metrics::new());
        let realtime = Arc::new(Realtime::new(metrics.clone(), store.feed()));
        let app_schema = Arc::new(SchemaCache::default());
        app_schema.reload(store.as_ref()).await?;
        app_schema.announced_at_start();
        // Links only printed on the terminal reach no mailbox to protect.
        let sends_mail = !matches!(settings.mailer, MailerConfig::Log);
        let uploads = Arc::new(crate::files::uploads::Uploads::new(
            settings.files.max_concurrent_uploads,
        ));
        if let Some(dir) = &settings.files.dir {
            crate::files::objects::Objects::new(dir, settings.node_id.as_str())
                .sweep_staging()
                .await;
        }
        Ok(AppState {
            uploads,
            store,
            issuer: Arc::new(Keyring::new(issuer, settings_reload)),
            clock: Arc::new(ServerClock::new(settings.node_id.clone())),
            metrics,
            realtime,
            settings: Arc::new(settings),
            mailer,
            sign_in_limits: Arc::new(SignInLimits::new(sends_mail)),
            token_limits,
            creation_limits: Arc::new(CreationLimits::new(&settings_quotas)),
            shared_secret: settings_shared.map(|c| Arc::new(SharedSecret::new(&c))),
            jwks,
            app_schema,
            known_users: Arc::default(),
        })
    }
}
