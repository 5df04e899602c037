//! Reading benchmark files: every file is hashed as it is read, so a run manifest can
//! record exactly which bytes a result came from.

use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// Identity of one data file as read: the path relative to the benchmark folder (with `/`
/// separators, the same keys as the folder's `MANIFEST.json`), its size and its sha256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileHash {
    /// Path relative to the benchmark folder, e.g. `kif/train/agnews.json`.
    pub path: String,
    /// Size in bytes.
    pub bytes: u64,
    /// Lower-case hex sha256 of the content.
    pub sha256: String,
}

/// Reads `root/relative`, hashes it and parses it as JSON.
///
/// A missing or unreadable file is an [`Error::Io`], invalid JSON an [`Error::Format`]
/// (serde's message carries the line and column); both name the full path.
pub(crate) fn read_json(root: &Path, relative: &str) -> Result<(serde_json::Value, FileHash)> {
    let path = root.join(relative);
    let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    let hash = FileHash {
        path: relative.to_string(),
        bytes: bytes.len() as u64,
        sha256: sha256_hex(&bytes),
    };
    let json = serde_json::from_slice(&bytes)
        .map_err(|e| Error::format(&path, format!("not valid JSON: {e}")))?;
    Ok((json, hash))
}

/// Lower-case hex sha256 of `bytes`.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut hex = String::with_capacity(2 * digest.len());
    for byte in digest {
        // Writing into a String cannot fail.
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_known_input() {
        // FIPS 180-2 test vector for "abc".
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
