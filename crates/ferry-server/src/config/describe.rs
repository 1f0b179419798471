//! The resolved configuration as people read it: one `key = value` line
//! per setting that is set, secrets redacted, and the listen address as a
//! host name or an address.

use std::net::{SocketAddr, ToSocketAddrs};

use serde_json::Value;

use super::{Config, Database};

impl Config {
    /// The settings as `key = value` lines, sorted by their `ferry.toml`
    /// key, with every secret and password redacted. Settings left unset
    /// are omitted, except the database, whose default is spelled out.
    pub fn describe(&self) -> Vec<String> {
        let mut lines = Vec::new();
        let shown = serde_json::to_value(self.for_log()).unwrap_or(Value::Null);
        flatten("", &shown, &mut lines);
        if self.database.is_none()
            && let Ok(database) = Database::of(self)
        {
            lines.push(format!("database = {database} (from data_dir)"));
        }
        lines
    }
}

fn flatten(prefix: &str, value: &Value, lines: &mut Vec<String>) {
    match value {
        Value::Null => {}
        Value::Object(map) => {
            for (key, value) in map {
                let key = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                flatten(&key, value, lines);
            }
        }
        Value::String(s) => lines.push(format!("{prefix} = {s}")),
        other => lines.push(format!("{prefix} = {other}")),
    }
}

/// Reads a listen address: `127.0.0.1:8787`, `[::1]:8787`, or a host name
/// with a port, `localhost:8787` (resolved now; an IPv4 address is taken
/// when the name has one, as `127.0.0.1` for `localhost`).
pub fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    let text = text.trim();
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!(
            "{text:?} is not an address with a port, like 127.0.0.1:8787 or localhost:8787"
        ));
    };
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{text:?}: {port:?} is not a port number (0 to 65535)"))?;
    if host.is_empty() {
        return Err(format!("{text:?} names no host, like 127.0.0.1:{port}"));
    }
    if host.contains(':') {
        return Err(format!(
            "{text:?}: write an IPv6 address in brackets, like [::1]:8787"
        ));
    }
    let found: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve the host name {host:?}: {e}"))?
        .collect();
    found
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| found.first())
        .copied()
        .ok_or_else(|| format!("the host name {host:?} resolves to no address"))
}

/// `listen` in `ferry.toml`, through [`parse_listen`].
pub(super) fn deserialize_listen<'de, D>(deserializer: D) -> Result<SocketAddr, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let text = <String as serde::Deserialize>::deserialize(deserializer)?;
    parse_listen(&text).map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_takes_addresses_and_host_names() {
        assert_eq!(
            parse_listen("127.0.0.1:8787"),
            Ok(SocketAddr::from(([127, 0, 0, 1], 8787)))
        );
        assert_eq!(
            parse_listen("[::1]:0"),
            Ok(SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 1], 0)))
        );
        let local = parse_listen("localhost:8787");
        assert!(
            local
                .as_ref()
                .is_ok_and(|a| a.ip().is_loopback() && a.port() == 8787),
            "{local:?}"
        );
        for bad in [
            "localhost",
            ":8787",
            "localhost:99999",
            "localhost:http",
            "fe80::1:1",
            "2001:db8::1",
        ] {
            assert!(parse_listen(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_description_is_lines_of_settings_with_secrets_redacted() {
        let config = Config {
            jwt_secret: Some("a-secret-that-must-never-be-logged-0123".into()),
            database: Some("postgres://ferry:hunter2@db.example.com/ferry".into()),
            ..Config::default()
        };
        let lines = config.describe();
        let text = lines.join("\n");
        assert!(
            lines.contains(&"listen = 127.0.0.1:8787".to_owned()),
            "{text}"
        );
        assert!(
            lines.contains(&"data_dir = ferry-data".to_owned()),
            "{text}"
        );
        assert!(lines.contains(&"jwt_secret = ***".to_owned()), "{text}");
        assert!(
            !text.contains("a-secret") && !text.contains("hunter2"),
            "{text}"
        );
        assert!(
            !text.contains("Config {") && !text.contains("None"),
            "{text}"
        );
        assert!(lines.iter().all(|l| l.contains(" = ")), "{text}");

        let default = Config::default().describe();
        assert!(
            default.contains(&"database = sqlite://ferry-data/ferry.db (from data_dir)".to_owned()),
            "{default:?}"
        );
    }
}
