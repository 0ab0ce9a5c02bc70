//! Python-compatible matching of `Key:\s*(word|word)` with `re.IGNORECASE`.
//!
//! The official scorer uses Python's `re` on `str`. Two details differ from the usual Rust
//! defaults and matter for exact reproduction: `\s` is `str.isspace()` (it includes U+001C..U+001F,
//! which Unicode `White_Space` does not), and case-insensitive matching of `i` and `s` also accepts
//! `İ`, `ı` and `ſ`. Both sets were enumerated from CPython 3.11 over all code points; the tests
//! pin them.

/// `\s` of Python's `re` for `str` patterns (equivalently `str.isspace()`).
pub(crate) fn is_py_space(c: char) -> bool {
    matches!(
        c,
        '\t'..='\r'
            | '\u{1c}'..='\u{1f}'
            | ' '
            | '\u{85}'
            | '\u{a0}'
            | '\u{1680}'
            | '\u{2000}'..='\u{200a}'
            | '\u{2028}'
            | '\u{2029}'
            | '\u{202f}'
            | '\u{205f}'
            | '\u{3000}'
    )
}

/// Whether `c` matches the pattern character `p` under Python's `re.IGNORECASE`.
///
/// `p` must be an ASCII lowercase letter or ASCII punctuation (all our patterns are).
pub(crate) fn py_ci_eq(c: char, p: char) -> bool {
    if c.to_ascii_lowercase() == p {
        return true;
    }
    match p {
        'i' => c == '\u{130}' || c == '\u{131}',
        's' => c == '\u{17f}',
        _ => false,
    }
}

/// A match of `key:\s*(word)`: where the key starts and the captured word as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KeyMatch<'a> {
    pub start: usize,
    pub word: &'a str,
}

/// If `s` starts with `lit` (a lowercase ASCII pattern) under Python's IGNORECASE, the byte
/// length of the matched prefix.
pub(crate) fn starts_with_ci(s: &str, lit: &str) -> Option<usize> {
    let mut chars = s.char_indices();
    for p in lit.chars() {
        let (_, c) = chars.next()?;
        if !py_ci_eq(c, p) {
            return None;
        }
    }
    Some(chars.next().map_or(s.len(), |(i, _)| i))
}

/// Python `re.search(key + r':\s*(' + '|'.join(words) + ')', hay, re.IGNORECASE)`.
///
/// `key` and `words` must be lowercase ASCII. Returns the leftmost match; alternatives are tried
/// in the given order, as Python does. No word boundary is required after the word.
pub(crate) fn search_key_word<'a>(hay: &'a str, key: &str, words: &[&str]) -> Option<KeyMatch<'a>> {
    for (start, _) in hay.char_indices() {
        let rest = &hay[start..];
        let Some(key_len) = starts_with_ci(rest, key) else {
            continue;
        };
        let Some(colon_len) = starts_with_ci(&rest[key_len..], ":") else {
            continue;
        };
        let after = &rest[key_len + colon_len..];
        let trimmed = after.trim_start_matches(is_py_space);
        for w in words {
            if let Some(len) = starts_with_ci(trimmed, w) {
                return Some(KeyMatch {
                    start,
                    word: &trimmed[..len],
                });
            }
        }
    }
    None
}

/// The last `n` characters (Unicode scalar values) of `s`, like Python's `s[-n:]`.
pub(crate) fn last_chars(s: &str, n: usize) -> &str {
    if n == 0 {
        return "";
    }
    match s.char_indices().rev().nth(n - 1) {
        Some((i, _)) => &s[i..],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_whitespace_includes_information_separators() {
        for c in ['\u{1c}', '\u{1f}', '\u{85}', '\u{3000}', '\t', '\u{b}'] {
            assert!(is_py_space(c), "{c:?}");
        }
        for c in ['\u{200b}', '\u{feff}', 'a', '\u{180e}'] {
            assert!(!is_py_space(c), "{c:?}");
        }
    }

    #[test]
    fn ignorecase_matches_python_special_letters() {
        assert!(py_ci_eq('\u{130}', 'i'));
        assert!(py_ci_eq('\u{131}', 'i'));
        assert!(py_ci_eq('\u{17f}', 's'));
        assert!(py_ci_eq('S', 's'));
        assert!(!py_ci_eq('\u{212a}', 'k'));
        assert!(!py_ci_eq('\u{e9}', 'e'));
    }

    #[test]
    fn search_is_leftmost_and_keeps_case() {
        let m = search_key_word(
            "x request:  HARMful; Request: unharmful",
            "request",
            &["harmful", "unharmful"],
        )
        .unwrap();
        assert_eq!(m.word, "HARMful");
        assert_eq!(m.start, 2);
        // no word boundary: "harmfulness" matches "harmful" as in Python
        let m = search_key_word("Request:harmfulness", "request", &["harmful"]).unwrap();
        assert_eq!(m.word, "harmful");
        assert!(search_key_word("Request: None", "request", &["harmful", "unharmful"]).is_none());
        assert!(search_key_word("Request harmful", "request", &["harmful"]).is_none());
    }

    #[test]
    fn last_chars_counts_scalars_not_bytes() {
        assert_eq!(last_chars("héllo", 4), "éllo");
        assert_eq!(last_chars("ab", 300), "ab");
        assert_eq!(last_chars("ab", 0), "");
    }
}
