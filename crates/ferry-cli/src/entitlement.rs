//! `ferry admin entitlement`: support staff set or read a user's plan
//! straight in the database (a gift, a refund, a payment taken elsewhere).

use std::time::{Duration, UNIX_EPOCH};

use anyhow::Context;
use clap::Subcommand;
use ferry_server::billing::rfc3339;
use ferry_server::clock::wall_ms;
use ferry_server::store::StoredEntitlement;
use ferry_server::{ids, spaces};

use crate::config::ConfigArgs;

#[derive(Debug, Subcommand)]
pub enum EntitlementCommand {
    /// Give a user (created if new) a plan until a date, beside any
    /// subscription they pay for; a date in the past takes the grant away.
    /// Setting it again replaces the user's grant.
    Set {
        /// The user's email address.
        #[arg(long)]
        email: String,
        /// The plan, e.g. pro.
        #[arg(long)]
        plan: String,
        /// The last day (YYYY-MM-DD, through its end, UTC) or the moment
        /// (RFC 3339) the plan lasts.
        #[arg(long, value_parser = parse_until)]
        until: u64,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Print a user's subscriptions and grants.
    Show {
        /// The user's email address.
        #[arg(long)]
        email: String,
        #[command(flatten)]
        config: ConfigArgs,
    },
}

/// `YYYY-MM-DD` (through the end of that day, UTC) or an RFC 3339 time, in
/// ms since the epoch.
fn parse_until(s: &str) -> Result<u64, String> {
    let (text, extra) = if s.len() == 10 {
        (format!("{s}T00:00:00Z"), Duration::from_secs(24 * 3600))
    } else {
        (s.to_owned(), Duration::ZERO)
    };
    let t = humantime::parse_rfc3339_weak(&text)
        .map_err(|e| format!("{s:?} is not a date (2026-12-31) or an RFC 3339 time: {e}"))?;
    let ms = (t + extra)
        .duration_since(UNIX_EPOCH)
        .map_err(|_| format!("{s:?} is before 1970"))?
        .as_millis();
    u64::try_from(ms).map_err(|_| format!("{s:?} is too far away"))
}

fn describe_one(e: &StoredEntitlement, now_ms: u64) -> String {
    format!(
        "{} {} from {} ({}){}{}, {}",
        if e.plan.is_empty() {
            "no plan"
        } else {
            &e.plan
        },
        e.status,
        e.provider,
        e.subscription_id,
        e.current_period_end_ms
            .map(|t| format!(" until {}", rfc3339(t)))
            .unwrap_or_default(),
        e.customer_id
            .as_ref()
            .map(|c| format!(", customer {c}"))
            .unwrap_or_default(),
        if e.is_active(now_ms) {
            "active"
        } else {
            "not active"
        }
    )
}

fn describe(held: &[StoredEntitlement], now_ms: u64) -> String {
    match held {
        [] => "free (no subscription recorded)".to_owned(),
        [one] => describe_one(one, now_ms),
        many => many
            .iter()
            .map(|e| format!("\n  {}", describe_one(e, now_ms)))
            .collect(),
    }
}

pub async fn run(command: EntitlementCommand) -> anyhow::Result<()> {
    let (email, config) = match &command {
        EntitlementCommand::Set { email, config, .. }
        | EntitlementCommand::Show { email, config } => (email, config),
    };
    let config = config.resolve()?;
    crate::init_logs(config.log_format, "warn");
    let email = spaces::normalize_email(email)?;
    let store = crate::open_store(&config).await?;
    let user = store.user_by_email(&email, &ids::new_user_id()?).await?;
    if let EntitlementCommand::Set { plan, until, .. } = &command {
        anyhow::ensure!(!plan.trim().is_empty(), "name a plan, e.g. --plan pro");
        let granted = StoredEntitlement {
            // One grant per user: setting it again replaces it.
            subscription_id: format!("grant:{}", user.id),
            plan: plan.trim().to_owned(),
            status: "granted".into(),
            current_period_end_ms: Some(*until),
            provider: "admin".into(),
            customer_id: None,
            // To the second, as providers time their events.
            stamp_ms: wall_ms() / 1000 * 1000,
        };
        store
            .set_entitlement(&user.id, &granted)
            .await
            .context("cannot store the entitlement")?;
    }
    let now = store.entitlements(&user.id).await?;
    println!("{email} ({}): {}", user.id, describe(&now, wall_ms()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_run_through_their_day() {
        assert_eq!(parse_until("2026-12-31"), Ok(1_798_761_600_000));
        assert_eq!(parse_until("2026-12-31T12:00:00Z"), Ok(1_798_718_400_000));
        assert!(parse_until("31/12/2026").is_err());
        assert!(parse_until("").is_err());
    }
}
