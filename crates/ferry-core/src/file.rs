//! File references (docs/files.md): what a record's `file` field holds in
//! place of a file's bytes. A reference names the bytes by their SHA-256;
//! the bytes travel and are kept apart from records, per space.
//!
//! [`FileRef::from_value`] is the one check of a reference's shape, used by
//! the schema's `file` type (so the server's merge, REST and both clients
//! refuse the same values) and by the server's file routes.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The largest file size a reference may name: 2^53 - 1, the largest
/// integer every JSON reader holds exactly.
pub const MAX_FILE_SIZE: u64 = 9_007_199_254_740_991;

/// The longest media type and name, in characters.
const MAX_TEXT: usize = 255;

/// A file as a record refers to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRef {
    /// The SHA-256 of the bytes, 64 lowercase hex digits.
    pub sha256: Sha256Hex,
    /// The byte count.
    pub size: u64,
    /// The media type, `type/subtype` with optional parameters.
    pub media_type: String,
    /// The name to show and to save as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A SHA-256 written as 64 lowercase hex digits; only built valid.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Sha256Hex(String);

impl Sha256Hex {
    /// Parses `s`, refusing anything but 64 lowercase hex digits.
    pub fn new(s: &str) -> Result<Self, FileRefError> {
        if s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Ok(Sha256Hex(s.to_owned()))
        } else {
            Err(FileRefError::Sha256)
        }
    }

    /// The 32 bytes as hex.
    pub fn from_digest(digest: &[u8; 32]) -> Self {
        let mut s = String::with_capacity(64);
        for b in digest {
            s.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
            s.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
        }
        Sha256Hex(s)
    }

    /// The hex digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Sha256Hex {
    type Error = FileRefError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Sha256Hex::new(&s)
    }
}

impl From<Sha256Hex> for String {
    fn from(h: Sha256Hex) -> String {
        h.0
    }
}

impl std::fmt::Display for Sha256Hex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a value is not a file reference; each message follows "must".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileRefError {
    #[error("be an object {{sha256, size, media_type, name?}}")]
    Shape,
    #[error("have sha256: the SHA-256 of the bytes, 64 lowercase hex digits")]
    Sha256,
    #[error("have size: the byte count, an integer from 0 to 2^53 - 1")]
    Size,
    #[error("have media_type: type/subtype, at most 255 characters, like image/png")]
    MediaType,
    #[error("have a name of 1 to 255 characters without control characters, / or \\ (or none)")]
    Name,
    #[error("hold only sha256, size, media_type and name, not {0}")]
    Unknown(String),
}

impl FileRef {
    /// Reads a reference from a field's value, checking every member.
    pub fn from_value(value: &Value) -> Result<FileRef, FileRefError> {
        let object = value.as_object().ok_or(FileRefError::Shape)?;
        if let Some(other) = object
            .keys()
            .find(|k| !matches!(k.as_str(), "sha256" | "size" | "media_type" | "name"))
        {
            let mut shown: String = other.chars().take(64).collect();
            if shown.len() < other.len() {
                shown.push('…');
            }
            return Err(FileRefError::Unknown(shown));
        }
        let sha256 = object
            .get("sha256")
            .and_then(Value::as_str)
            .ok_or(FileRefError::Sha256)
            .and_then(Sha256Hex::new)?;
        let size = object
            .get("size")
            .and_then(Value::as_u64)
            .filter(|n| *n <= MAX_FILE_SIZE)
            .ok_or(FileRefError::Size)?;
        let media_type = object
            .get("media_type")
            .and_then(Value::as_str)
            .filter(|m| media_type_ok(m))
            .ok_or(FileRefError::MediaType)?
            .to_owned();
        let name = match object.get("name") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_str()
                    .filter(|n| name_ok(n))
                    .ok_or(FileRefError::Name)?
                    .to_owned(),
            ),
        };
        Ok(FileRef {
            sha256,
            size,
            media_type,
            name,
        })
    }

    /// The reference as a field's value.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// Whether `m` is `type/subtype` (RFC 6838 restricted names) with optional
/// `; parameter` text, printable ASCII, at most [`MAX_TEXT`] long.
pub fn media_type_ok(m: &str) -> bool {
    if m.is_empty() || m.len() > MAX_TEXT || !m.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return false;
    }
    let essence = m.split(';').next().unwrap_or_default().trim();
    let restricted = |part: &str| {
        !part.is_empty()
            && part.len() <= 127
            && part.bytes().all(|b| {
                b.is_ascii_alphanumeric()
                    || matches!(
                        b,
                        b'!' | b'#' | b'$' | b'&' | b'-' | b'^' | b'_' | b'.' | b'+'
                    )
            })
    };
    matches!(essence.split_once('/'), Some((t, s)) if restricted(t) && restricted(s))
}

/// Whether `n` may be a file's name: 1 to [`MAX_TEXT`] characters, no
/// control characters, no path separators.
pub fn name_ok(n: &str) -> bool {
    let count = n.chars().count();
    (1..=MAX_TEXT).contains(&count) && !n.chars().any(|c| c.is_control() || c == '/' || c == '\\')
}

/// Adds to `into` the files `value` may refer to: the hash of every object
/// within it, at any depth, whose `sha256` member spells one. This is wider
/// than the `file` fields a schema declares, on purpose: the server's
/// collector keeps whatever a record may point at, with a schema or without
/// one, and a stored record's fields (`{"f": {"value": .., "hlc": ..}}`)
/// can be given whole (docs/files.md §5).
pub fn referenced(value: &Value, into: &mut std::collections::HashSet<Sha256Hex>) {
    match value {
        Value::Object(members) => {
            if let Some(Value::String(hash)) = members.get("sha256")
                && let Ok(hash) = Sha256Hex::new(hash)
            {
                into.insert(hash);
            }
            for member in members.values() {
                referenced(member, into);
            }
        }
        Value::Array(items) => {
            for item in items {
                referenced(item, into);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const HASH: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn a_reference_reads_back_as_it_was_written() {
        let v = json!({"sha256": HASH, "size": 4, "media_type": "text/plain; charset=utf-8", "name": "test.txt"});
        let r = FileRef::from_value(&v).unwrap();
        assert_eq!(r.sha256.as_str(), HASH);
        assert_eq!(r.to_value(), v);
        let bare = json!({"sha256": HASH, "size": 0, "media_type": "application/octet-stream"});
        assert_eq!(FileRef::from_value(&bare).unwrap().to_value(), bare);
        let digest: [u8; 32] = std::array::from_fn(|i| u8::try_from(i * 7).unwrap());
        let hex = Sha256Hex::from_digest(&digest);
        assert_eq!(Sha256Hex::new(hex.as_str()).unwrap(), hex);
    }

    #[test]
    fn references_are_found_at_any_depth_and_nothing_else_counts() {
        let other = "a".repeat(64);
        let fields = json!({
            "cover": {"value": {"sha256": HASH, "size": 4, "media_type": "image/png"}, "hlc": "x"},
            "gallery": {"value": [{"caption": "c", "image": {"sha256": other}}], "hlc": "y"},
            "loose": {"value": {"sha256": HASH.to_uppercase()}, "hlc": "z"},
            "text": {"value": HASH, "hlc": "w"},
        });
        let mut found = std::collections::HashSet::new();
        referenced(&fields, &mut found);
        let want: std::collections::HashSet<_> = [
            Sha256Hex::new(HASH).unwrap(),
            Sha256Hex::new(&other).unwrap(),
        ]
        .into();
        assert_eq!(found, want);
    }

    #[test]
    fn every_member_is_checked() {
        let base = json!({"sha256": HASH, "size": 4, "media_type": "image/png"});
        let with = |k: &str, v: Value| {
            let mut o = base.clone();
            o[k] = v;
            FileRef::from_value(&o)
        };
        assert_eq!(FileRef::from_value(&json!("x")), Err(FileRefError::Shape));
        assert_eq!(
            with("sha256", json!(HASH.to_uppercase())),
            Err(FileRefError::Sha256)
        );
        assert_eq!(with("sha256", json!(&HASH[1..])), Err(FileRefError::Sha256));
        assert_eq!(with("size", json!(-1)), Err(FileRefError::Size));
        assert_eq!(with("size", json!(1.5)), Err(FileRefError::Size));
        assert_eq!(
            with("size", json!(MAX_FILE_SIZE + 1)),
            Err(FileRefError::Size)
        );
        for bad in ["image", "/png", "image/", "ima ge/png", "image/png\n", ""] {
            assert_eq!(
                with("media_type", json!(bad)),
                Err(FileRefError::MediaType),
                "{bad:?}"
            );
        }
        for bad in ["", "a/b", "a\\b", "new\nline", &"x".repeat(256)] {
            assert_eq!(with("name", json!(bad)), Err(FileRefError::Name), "{bad:?}");
        }
        assert!(with("name", json!("ü".repeat(255))).is_ok());
        assert!(
            matches!(with("caption", json!("x")), Err(FileRefError::Unknown(k)) if k == "caption")
        );
    }
}
