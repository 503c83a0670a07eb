//! DPR's answer-containment check, used for recall-style numbers.
//!
//! Mirrors `has_answer(answers, text, tokenizer, match_type="string")` of
//! [`dpr/data/qa_validation.py`](https://github.com/facebookresearch/DPR/blob/main/dpr/data/qa_validation.py)
//! with DPR's `SimpleTokenizer`
//! ([`dpr/utils/tokenizers.py`](https://github.com/facebookresearch/DPR/blob/main/dpr/utils/tokenizers.py)):
//! both texts are NFD-normalised, tokenised with
//! `regex.compile(r"([\p{L}\p{N}\p{M}]+)|([^\p{Z}\p{C}])", IGNORECASE | UNICODE | MULTILINE)`,
//! each token lowercased with `str.lower()` (`words(uncased=True)`), and the answer matches when
//! its token list occurs contiguously in the text's. The flags do not change what these classes
//! match (every case variant of an L/N/M character is L/N/M, and no Z/C character has one).
//!
//! Faithful quirk: an answer with *no* tokens (empty, or only spaces/control characters) is
//! contained in every text, because Python compares `[] == text[i:i]` for `i = 0`.

use std::sync::LazyLock;

use regex::Regex;
use unicode_normalization::UnicodeNormalization;

/// The SimpleTokenizer pattern; constant, so it cannot fail to compile at run time.
static TOKEN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"[\p{L}\p{N}\p{M}]+|[^\p{Z}\p{C}]").expect("constant regex compiles")
});

/// `SimpleTokenizer().tokenize(unicodedata.normalize("NFD", text)).words(uncased=True)`.
pub fn dpr_tokens(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    dpr_tokens_into(text, &mut out);
    out
}

/// Buffer-reusing form of [`dpr_tokens`].
pub fn dpr_tokens_into(text: &str, out: &mut Vec<String>) {
    out.clear();
    if text.is_ascii() {
        // NFD is the identity on ASCII, and the classes reduce to: runs of [A-Za-z0-9] (L/N),
        // any other printable character alone (space is Z, controls are C).
        let bytes = text.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            if b.is_ascii_alphanumeric() {
                let start = i;
                while i < bytes.len() && bytes[i].is_ascii_alphanumeric() {
                    i += 1;
                }
                out.push(text[start..i].to_ascii_lowercase());
            } else {
                if b > b' ' && b != 0x7f {
                    out.push((b as char).to_string());
                }
                i += 1;
            }
        }
    } else {
        let nfd: String = text.nfd().collect();
        // `str.lower()` per token: the Final_Sigma context is the token, as in Python.
        out.extend(TOKEN.find_iter(&nfd).map(|m| m.as_str().to_lowercase()));
    }
}

/// `has_answer(answers, text, SimpleTokenizer(), "string")`.
pub fn has_answer<S: AsRef<str>>(answers: &[S], text: &str) -> bool {
    let mut text_tokens = Vec::new();
    let mut answer_tokens = Vec::new();
    dpr_tokens_into(text, &mut text_tokens);
    answers.iter().any(|a| {
        dpr_tokens_into(a.as_ref(), &mut answer_tokens);
        contains_run(&text_tokens, &answer_tokens)
    })
}

/// Whether `needle` occurs contiguously in `haystack` (an empty needle always does).
pub(crate) fn contains_run(haystack: &[String], needle: &[String]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenizer_matches_simple_tokenizer() {
        assert_eq!(
            dpr_tokens("U.S. Open, 2008!"),
            ["u", ".", "s", ".", "open", ",", "2008", "!"]
        );
        assert_eq!(dpr_tokens("  \t\n"), Vec::<String>::new());
        assert_eq!(dpr_tokens("a\u{0}b\u{7f}c"), ["a", "b", "c"]);
        // NFD: the accent is a separate mark that stays inside the alphanumeric run.
        assert_eq!(dpr_tokens("Röntgen"), ["ro\u{308}ntgen"]);
        assert_eq!(dpr_tokens("54\u{a0}Mbit/s"), ["54", "mbit", "/", "s"]);
        // U+200B is Cf (C), U+200E is Cf: neither is a token.
        assert_eq!(dpr_tokens("a\u{200b}b \u{200e}"), ["a", "b"]);
        // Final sigma is decided per token.
        assert_eq!(dpr_tokens("ΟΔΟΣ"), ["οδος"]);
        assert_eq!(dpr_tokens("東京タワー"), ["東京タワー"]);
        assert_eq!(dpr_tokens("İ"), ["i\u{307}"]);
    }

    #[test]
    fn has_answer_cases() {
        assert!(has_answer(&["Sunset Blvd"], "It is sunset blvd."));
        assert!(has_answer(&["x", "Röntgen"], "Wilhelm Conrad RÖNTGEN"));
        // NFC vs NFD spellings of the same text match.
        assert!(has_answer(&["Ro\u{308}ntgen"], "Röntgen"));
        assert!(!has_answer(&["Sunset Blvd"], "sunsetblvd"));
        assert!(!has_answer(&["blvd sunset"], "sunset blvd"));
        assert!(!has_answer(&["a"], ""));
        assert!(!has_answer(&[] as &[&str], "anything"));
        // Token-less answers are contained everywhere (Python's `[] == []`).
        assert!(has_answer(&[""], "anything"));
        assert!(has_answer(&[" "], ""));
    }
}
