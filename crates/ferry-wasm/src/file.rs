//! Files for the browser client (docs/files.md §6): the SHA-256 of an
//! attachment's bytes, fed in pieces so that no file is held whole, and
//! the check of a file reference, ferry-core's, so that the browser
//! refuses the same references the server and the native client do.

use ferry_core::FileRef;
use serde_json::Value;
use sha2::{Digest, Sha256};
use wasm_bindgen::prelude::*;

use crate::{Result, js, to_json};

/// A SHA-256 fed piece by piece.
#[wasm_bindgen(js_name = FileHasher)]
#[derive(Debug, Default)]
pub struct FileHasher(Sha256);

#[wasm_bindgen(js_class = FileHasher)]
impl FileHasher {
    #[wasm_bindgen(constructor)]
    pub fn new() -> FileHasher {
        FileHasher::default()
    }

    /// Adds the next bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The hash of every byte fed, as 64 lowercase hex digits; the hasher
    /// starts again empty.
    pub fn finish(&mut self) -> String {
        let digest: [u8; 32] = std::mem::take(&mut self.0).finalize().into();
        ferry_core::file::Sha256Hex::from_digest(&digest)
            .as_str()
            .to_owned()
    }
}

/// A file reference (JSON) checked by ferry-core, written back in its
/// one shape (JSON).
pub fn file_ref_inner(value: &str) -> Result<String> {
    let value: Value = serde_json::from_str(value).map_err(|e| format!("not JSON: {e}"))?;
    let checked = FileRef::from_value(&value).map_err(|e| format!("a file reference must {e}"))?;
    to_json(&checked)
}

/// See [`file_ref_inner`].
#[wasm_bindgen(js_name = fileRef)]
pub fn file_ref(value: &str) -> std::result::Result<String, JsError> {
    js(file_ref_inner(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_fed_in_pieces_is_the_hash_of_the_whole() {
        let mut h = FileHasher::new();
        h.update(b"hello ");
        h.update(b"world");
        assert_eq!(
            h.finish(),
            "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
        );
        // Empty again.
        assert_eq!(
            h.finish(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn references_are_checked_by_the_core() {
        let good = format!(
            r#"{{"sha256":"{}","size":3,"media_type":"image/png","name":"a.png"}}"#,
            "a".repeat(64)
        );
        let back: Value = serde_json::from_str(&file_ref_inner(&good).unwrap()).unwrap();
        assert_eq!(back["size"], 3);
        let bad = format!(r#"{{"sha256":"{}","size":3}}"#, "a".repeat(64));
        let err = file_ref_inner(&bad).unwrap_err();
        assert!(err.contains("media"), "{err}");
        assert!(file_ref_inner(r#"{"sha256":"x","size":1,"media_type":"a/b"}"#).is_err());
    }
}
