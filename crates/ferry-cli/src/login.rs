//! `ferry login`: the magic-link flow from a terminal, and where the
//! credentials it gets are kept for the client commands.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use anyhow::{Context, bail};
use serde_json::{Value, json};

/// Where credentials are kept: `$FERRY_CREDENTIALS`, else
/// `$XDG_CONFIG_HOME/ferry/credentials.json`, else
/// `~/.config/ferry/credentials.json`.
pub fn credentials_path() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("FERRY_CREDENTIALS") {
        return Ok(PathBuf::from(path));
    }
    let config = match std::env::var_os("XDG_CONFIG_HOME") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?).join(".config"),
    };
    Ok(config.join("ferry").join("credentials.json"))
}

/// The sign-in token in what a person pasted: a link with `#token=`, or
/// the bare token.
pub fn token_from(pasted: &str) -> Option<String> {
    let pasted = pasted.trim();
    let token = match pasted.find("token=") {
        Some(at) => &pasted[at + "token=".len()..],
        None => pasted,
    };
    let token: String = token
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    (!token.is_empty()).then_some(token)
}

/// A request's error body, as a sentence.
fn failure(status: reqwest::StatusCode, body: &Value) -> String {
    match body["error"]["message"].as_str() {
        Some(message) => format!("{message} ({status})"),
        None => format!("the server answered {status}"),
    }
}

async fn post(http: &reqwest::Client, url: String, body: Value) -> anyhow::Result<Value> {
    let res = http
        .post(&url)
        .json(&body)
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let status = res.status();
    let body: Value = res.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!("{}", failure(status, &body));
    }
    Ok(body)
}

/// The replica `ferry login` signed in last, from the credentials file.
pub fn stored_replica() -> anyhow::Result<Option<PathBuf>> {
    let path = credentials_path()?;
    let Ok(bytes) = std::fs::read(&path) else {
        return Ok(None);
    };
    let stored: Value = serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not JSON", path.display()))?;
    Ok(stored["replica"].as_str().map(PathBuf::from))
}

/// Forgets the stored credentials when they name the replica at `path`
/// (signed out now), so that client commands say nobody is signed in.
pub fn forget(path: &std::path::Path) -> anyhow::Result<()> {
    let Some(stored) = stored_replica()? else {
        return Ok(());
    };
    let same = |p: &std::path::Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    if same(&stored) == same(path) {
        let credentials = credentials_path()?;
        std::fs::remove_file(&credentials)
            .with_context(|| format!("cannot remove {}", credentials.display()))?;
    }
    Ok(())
}

/// Asks for a sign-in link for `email`, reads the link or token the person
/// pastes, redeems it into the replica (which keeps the session and claims
/// what was written there before signing in), and notes which replica and
/// server the client commands use.
pub async fn login(
    server: &str,
    email: &str,
    replica: &crate::client::ReplicaArgs,
) -> anyhow::Result<()> {
    let server = server.trim_end_matches('/');
    let http = reqwest::Client::new();
    post(
        &http,
        format!("{server}/v1/auth/magic-link"),
        json!({"email": email}),
    )
    .await?;
    eprintln!("A sign-in link is on its way to {email}.");
    eprint!("Paste the link (or the token) from the mail: ");
    std::io::stderr().flush()?;
    let mut pasted = String::new();
    std::io::stdin().lock().read_line(&mut pasted)?;
    let token = token_from(&pasted).context("that holds no sign-in token")?;
    let path = match &replica.replica {
        Some(path) => path.clone(),
        None => crate::client::login_replica()?,
    };
    let replica = crate::client::open_at(&path)?;
    let user = replica
        .sign_in_with_link(server, &token)
        .await
        .context("cannot sign in")?;
    let replica_path =
        std::fs::canonicalize(replica.path()).unwrap_or_else(|_| replica.path().to_path_buf());
    let path = credentials_path()?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    // The session itself stays in the replica: one place that rotates the
    // refresh token.
    let stored = json!({
        "server": server,
        "replica": replica_path,
        "user": {"id": user.id, "email": user.email},
    });
    write_private(&path, &serde_json::to_vec_pretty(&stored)?)
        .with_context(|| format!("cannot write {}", path.display()))?;
    let who = user.email.as_deref().unwrap_or(email);
    println!(
        "Signed in to {server} as {who}. Replica: {}",
        replica_path.display()
    );
    // What the account already holds, before the prompt comes back: a
    // `ferry ls` right after shows it.
    let first = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        crate::client::sync_all(&replica, false),
    );
    match first.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            eprintln!("Signed in, but the first sync failed: {e:#}. ferry sync tries again.")
        }
        Err(_) => eprintln!("Signed in; the first sync is slow: ferry sync goes on with it."),
    }
    Ok(())
}

/// Writes `bytes` to `path` readable by its owner only.
fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)?.write_all(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_found_in_links_and_alone() {
        let t = "AbC-d_e0123456789";
        assert_eq!(
            token_from(&format!("https://x/auth/magic-link#token={t}\n")).as_deref(),
            Some(t)
        );
        assert_eq!(token_from(&format!("  {t}  ")).as_deref(), Some(t));
        assert_eq!(token_from(""), None);
        assert_eq!(token_from("https://x/#token="), None);
    }
}
