//! The server's limits from the configuration: HTTP timeouts, trusted
//! proxies, the metrics token, quotas on spaces and members, API tokens,
//! files.

use anyhow::Context;
use ferry_server::{Config, Settings};

/// Sets what `config` says of these limits on `settings`.
pub fn apply(config: &Config, settings: &mut Settings) -> anyhow::Result<()> {
    let duration =
        |key: &str, value: &Option<String>| -> anyhow::Result<Option<std::time::Duration>> {
            value
                .as_deref()
                .map(|v| humantime::parse_duration(v).with_context(|| format!("{key}: {v:?}")))
                .transpose()
        };
    if let Some(d) = duration("header_timeout", &config.header_timeout)? {
        anyhow::ensure!(!d.is_zero(), "header_timeout must be more than 0");
        settings.http.header_timeout = d;
    }
    if let Some(d) = duration("body_timeout", &config.body_timeout)? {
        anyhow::ensure!(!d.is_zero(), "body_timeout must be more than 0");
        settings.http.body_timeout = d;
    }
    if let Some(d) = duration("write_timeout", &config.write_timeout)? {
        anyhow::ensure!(!d.is_zero(), "write_timeout must be more than 0");
        settings.http.write_timeout = d;
    }
    if let Some(list) = &config.trusted_proxies {
        settings.trusted_proxies = list
            .parse()
            .map_err(|e| anyhow::anyhow!("trusted_proxies: {e}"))?;
    }
    settings.metrics_token = config.metrics_token.clone();
    if let Some(n) = config.max_connections_per_address {
        settings.http.max_connections_per_address = n;
    }
    if let Some(n) = config.max_spaces_per_user {
        settings.quotas.max_owned_spaces = n;
    }
    if let Some(n) = config.max_members_per_space {
        settings.quotas.max_members = n.max(1);
    }
    if let Some(n) = config.api_token_rate {
        settings.api_tokens.per_second = n.max(1);
    }
    if let Some(n) = config.api_token_burst {
        settings.api_tokens.burst = n.max(1);
    }
    if let Some(n) = config.max_api_tokens_per_user {
        settings.api_tokens.max_per_user = n;
    }
    settings.files.dir = Some(
        config
            .files_dir
            .clone()
            .unwrap_or_else(|| config.data_dir.join("files")),
    );
    if let Some(url) = &config.files_url {
        let remote = ferry_server::files::remote::RemoteObjects::s3(url, &[])
            .map_err(|e| anyhow::anyhow!("files_url: {e}"))?;
        settings.files.remote = Some(remote);
    }
    if let Some(n) = config.max_file_bytes {
        settings.files.max_file_bytes = n;
    }
    if let Some(n) = config.file_quota_bytes {
        settings.files.quota_bytes = n;
    }
    if let Some(n) = config.max_concurrent_uploads {
        settings.files.max_concurrent_uploads = n.max(1);
    }
    if let Some(d) = duration("file_grace", &config.file_grace)? {
        // Shorter, an upload still between keeping its bytes and
        // recording them could look like a stray object.
        anyhow::ensure!(
            d >= ferry_server::files::collector::MIN_GRACE,
            "file_grace must be at least 1h"
        );
        settings.files.grace = d;
    }
    Ok(())
}
