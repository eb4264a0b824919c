//! The lower layer list `L1:L2:...` (top-first, as kernel overlay's `lowerdir=`), read the same
//! way wherever a user gives one: `unionfuse mount L1:L2`, `run LAYERS`, `diff --lower` and the
//! fuse-overlayfs form's `-o lowerdir=`. Bytes, not text: a layer path need not be UTF-8.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// Split a lower layer list on ':'; a backslash makes the next byte literal (`\:` is a colon,
/// `\\` a backslash). An empty list or an empty entry is refused: kernel overlay gives `::` a
/// meaning (data-only lower layers) that unionfuse does not implement, so silently dropping it
/// would mount something else than asked. The error is a reason; the caller names the list.
pub fn parse(list: &OsStr) -> Result<Vec<PathBuf>, String> {
    let bytes = list.as_bytes();
    if bytes.is_empty() {
        return Err("the lower layer list is empty".into());
    }
    let mut entries: Vec<Vec<u8>> = vec![Vec::new()];
    let mut it = bytes.iter();
    while let Some(&b) = it.next() {
        // `entries` starts with one element and only grows.
        let cur = entries.len() - 1;
        match b {
            b':' => entries.push(Vec::new()),
            b'\\' => entries[cur].extend(it.next()),
            b => entries[cur].push(b),
        }
    }
    if entries.iter().any(Vec::is_empty) {
        return Err("empty entry in the lower layer list \
                    (data-only lower layers, `::`, are not supported)"
            .into());
    }
    Ok(entries
        .into_iter()
        .map(|e| PathBuf::from(OsStr::from_bytes(&e)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Vec<PathBuf> {
        parse(OsStr::new(s)).expect(s)
    }

    #[test]
    fn layers_split_on_colons_with_escapes() {
        assert_eq!(ok("/a:/b"), [PathBuf::from("/a"), PathBuf::from("/b")]);
        assert_eq!(
            ok(r"/a\:x:/b"),
            [PathBuf::from("/a:x"), PathBuf::from("/b")]
        );
        assert_eq!(ok(r"/e\\f"), [PathBuf::from(r"/e\f")]);
        assert_eq!(ok("l/AAA"), [PathBuf::from("l/AAA")]);
    }

    #[test]
    fn empty_entries_are_refused() {
        for bad in ["", "/a::/b", "/a:", ":/a", "::"] {
            let e = parse(OsStr::new(bad)).expect_err(bad);
            assert!(e.contains("lower layer list"), "{bad}: {e}");
        }
    }

    #[test]
    fn non_utf8_paths_survive() {
        let raw = OsStr::from_bytes(b"/a\xff:/b");
        assert_eq!(parse(raw).unwrap()[0].as_os_str().as_bytes(), b"/a\xff");
    }
}
