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

/// Asks for a sign-in link for `email`, reads the link or token the person
/// pastes, redeems it, and stores the session.
pub async fn login(server: &str, email: &str) -> anyhow::Result<()> {
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
    let session = post(
        &http,
        format!("{server}/v1/auth/verify"),
        json!({"token": token}),
    )
    .await?;
    let path = credentials_path()?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let stored = json!({
        "server": server,
        "access_token": session["access_token"],
        "refresh_token": session["refresh_token"],
        "expires_in": session["expires_in"],
        "user": session["user"],
    });
    write_private(&path, &serde_json::to_vec_pretty(&stored)?)
        .with_context(|| format!("cannot write {}", path.display()))?;
    let who = session["user"]["email"].as_str().unwrap_or(email);
    println!(
        "Signed in to {server} as {who}. Credentials: {}",
        path.display()
    );
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
