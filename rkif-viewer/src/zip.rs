//! Reading a zip of a run folder dropped on the page: the central directory, then each
//! entry, stored or deflated. Archives are untrusted: every offset is checked, and the
//! inflated size is capped so a small archive cannot exhaust the page's memory.

use std::collections::BTreeMap;

/// Most bytes all entries of one archive may inflate to.
pub const MAX_TOTAL_BYTES: usize = 512 * 1024 * 1024;

const END_OF_DIRECTORY: u32 = 0x0605_4b50;
const DIRECTORY_ENTRY: u32 = 0x0201_4b50;
const LOCAL_HEADER: u32 = 0x0403_4b50;
/// The end-of-directory record is 22 bytes plus a comment of at most 65535.
const MAX_END_SEARCH: usize = 22 + 65_535;

fn u16_at(bytes: &[u8], at: usize) -> Option<usize> {
    let b = bytes.get(at..at.checked_add(2)?)?;
    Some(usize::from(u16::from_le_bytes([b[0], b[1]])))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn usize_at(bytes: &[u8], at: usize) -> Option<usize> {
    u32_at(bytes, at).and_then(|v| usize::try_from(v).ok())
}

/// The files of a zip archive by path (folders skipped). `name` names the archive in errors.
pub fn read_zip(name: &str, bytes: &[u8]) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let bad = |what: &str| format!("{name}: not a readable zip archive ({what})");
    let search_from = bytes.len().saturating_sub(MAX_END_SEARCH);
    let end = (search_from..bytes.len().saturating_sub(21))
        .rev()
        .find(|&at| u32_at(bytes, at) == Some(END_OF_DIRECTORY))
        .ok_or_else(|| bad("no end-of-directory record"))?;
    let count = u16_at(bytes, end + 10).ok_or_else(|| bad("short end record"))?;
    let mut at = usize_at(bytes, end + 16).ok_or_else(|| bad("short end record"))?;
    let mut files = BTreeMap::new();
    let mut total = 0usize;
    for index in 0..count {
        let entry_bad = |what: &str| bad(&format!("entry {index}: {what}"));
        if u32_at(bytes, at) != Some(DIRECTORY_ENTRY) {
            return Err(entry_bad("bad directory record"));
        }
        let field = |offset: usize| u16_at(bytes, at + offset).ok_or_else(|| entry_bad("cut off"));
        let method = field(10)?;
        let compressed = usize_at(bytes, at + 20).ok_or_else(|| entry_bad("cut off"))?;
        let size = usize_at(bytes, at + 24).ok_or_else(|| entry_bad("cut off"))?;
        let (name_len, extra_len, comment_len) = (field(28)?, field(30)?, field(32)?);
        let local = usize_at(bytes, at + 42).ok_or_else(|| entry_bad("cut off"))?;
        let path_bytes = bytes
            .get(at + 46..at + 46 + name_len)
            .ok_or_else(|| entry_bad("name cut off"))?;
        let path = String::from_utf8_lossy(path_bytes).into_owned();
        at += 46 + name_len + extra_len + comment_len;
        if path.ends_with('/') {
            continue;
        }
        total = total.saturating_add(size);
        if total > MAX_TOTAL_BYTES {
            return Err(bad(&format!(
                "inflates to more than {MAX_TOTAL_BYTES} bytes"
            )));
        }
        if u32_at(bytes, local) != Some(LOCAL_HEADER) {
            return Err(entry_bad(&format!("{path}: bad local header")));
        }
        let local_name = u16_at(bytes, local + 26).ok_or_else(|| entry_bad("cut off"))?;
        let local_extra = u16_at(bytes, local + 28).ok_or_else(|| entry_bad("cut off"))?;
        let start = local + 30 + local_name + local_extra;
        let data = start
            .checked_add(compressed)
            .and_then(|stop| bytes.get(start..stop))
            .ok_or_else(|| entry_bad(&format!("{path}: data cut off")))?;
        let content = match method {
            0 => data.to_vec(),
            8 => miniz_oxide::inflate::decompress_to_vec_with_limit(data, size)
                .map_err(|e| entry_bad(&format!("{path}: cannot inflate ({:?})", e.status)))?,
            other => return Err(entry_bad(&format!("{path}: compression method {other}"))),
        };
        files.insert(path, content);
    }
    Ok(files)
}

/// Removes the one folder every path starts with (`run-a/manifest.json` -> `manifest.json`),
/// so a zip of a run folder reads like the folder's content. Unchanged when paths differ.
pub fn strip_common_folder(files: BTreeMap<String, Vec<u8>>) -> BTreeMap<String, Vec<u8>> {
    let first = files
        .keys()
        .next()
        .and_then(|p| p.split_once('/'))
        .map(|(folder, _)| format!("{folder}/"));
    match first {
        Some(prefix) if files.keys().all(|p| p.starts_with(&prefix)) => files
            .into_iter()
            .map(|(path, bytes)| (path[prefix.len()..].to_owned(), bytes))
            .collect(),
        _ => files,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A zip with stored entries, laid out as the format says.
    pub(crate) fn stored_zip(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut directory = Vec::new();
        for (name, data) in entries {
            let offset = out.len() as u32;
            let head = |v: &mut Vec<u8>, sig: u32| {
                v.extend(sig.to_le_bytes());
            };
            head(&mut out, LOCAL_HEADER);
            out.extend([20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
            out.extend((data.len() as u32).to_le_bytes());
            out.extend((data.len() as u32).to_le_bytes());
            out.extend((name.len() as u16).to_le_bytes());
            out.extend([0, 0]);
            out.extend(name.as_bytes());
            out.extend(*data);
            head(&mut directory, DIRECTORY_ENTRY);
            directory.extend([20, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
            directory.extend((data.len() as u32).to_le_bytes());
            directory.extend((data.len() as u32).to_le_bytes());
            directory.extend((name.len() as u16).to_le_bytes());
            directory.extend([0; 12]);
            directory.extend(offset.to_le_bytes());
            directory.extend(name.as_bytes());
        }
        let dir_offset = out.len() as u32;
        let dir_len = directory.len() as u32;
        out.extend(directory);
        out.extend(END_OF_DIRECTORY.to_le_bytes());
        out.extend([0, 0, 0, 0]);
        out.extend((entries.len() as u16).to_le_bytes());
        out.extend((entries.len() as u16).to_le_bytes());
        out.extend(dir_len.to_le_bytes());
        out.extend(dir_offset.to_le_bytes());
        out.extend([0, 0]);
        out
    }

    #[test]
    fn stored_entries_read_back_without_their_folder() {
        let zip = stored_zip(&[
            ("run/manifest.json", b"{}"),
            ("run/importance/x.json", b"[1]"),
        ]);
        let files = strip_common_folder(read_zip("a.zip", &zip).unwrap());
        assert_eq!(files.get("manifest.json").unwrap(), b"{}");
        assert_eq!(files.get("importance/x.json").unwrap(), b"[1]");
    }

    #[test]
    fn truncated_archives_are_named() {
        let zip = stored_zip(&[("manifest.json", b"{}")]);
        let err = read_zip("a.zip", &zip[..zip.len() - 30]).unwrap_err();
        assert!(
            err.starts_with("a.zip: not a readable zip archive"),
            "{err}"
        );
        let err = read_zip("b.zip", b"not a zip").unwrap_err();
        assert!(err.starts_with("b.zip:"), "{err}");
    }
}
