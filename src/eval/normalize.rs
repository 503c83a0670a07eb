//! Answer normalisation, bit-for-bit the Python of the official evaluation code.
//!
//! Mirrors [`t5/evaluation/qa_utils.py`](https://github.com/google-research/text-to-text-transfer-transformer/blob/main/t5/evaluation/qa_utils.py)
//! (`_normalize_answer`, `normalize_squad`, `normalize_trivia_qa`), which in turn matches the
//! [SQuAD v1.1 script](https://github.com/allenai/bi-att-flow/blob/master/squad/evaluate-v1.1.py)
//! (`white_space_fix(remove_articles(remove_punc(lower(s))))`) and the
//! [TriviaQA evaluation](https://github.com/mandarjoshi90/triviaqa/blob/master/evaluation/triviaqa_evaluation.py),
//! plus ORQA/EfficientQA's NFD variant
//! ([`language/orqa/utils/eval_utils.py`](https://github.com/google-research/language/blob/master/language/orqa/utils/eval_utils.py)).
//!
//! Matching the Python "to the digit" means copying its string semantics, not regex-crate or
//! Rust defaults:
//! * `str.lower()`: full lowercase mapping (`İ` → `i̇`, two chars) with the Final_Sigma rule
//!   (`ΟΔΟΣ` → `οδος`, `ΑΣ,Α` → `ας,α`). Rust's [`str::to_lowercase`] implements the same rules
//!   (checked against CPython 3.11), so we use it; only the Unicode *version* can differ.
//! * `re.sub(r"\b(a|an|the)\b", " ", s)` on a `str`: `\b` is a change between "word" and
//!   "non-word", where word means `str.isalnum()` or `_`. In CPython that is general category
//!   L* or N* (verified over all code points for Python 3.11): combining marks (M*) are NOT word
//!   characters, unlike the regex crate's Unicode `\b`. So in NFD text `the\u{301}` loses its
//!   `the`. We scan by hand with that predicate.
//! * `" ".join(s.split())`: Python's whitespace set, which includes U+001C..U+001F and U+0085
//!   but not U+200B (see [`is_py_space`]).
//! * `string.punctuation`: exactly the 32 ASCII punctuation characters.

use std::sync::LazyLock;

use regex::Regex;
use unicode_normalization::UnicodeNormalization;

use crate::data::{is_py_space, Benchmark};

/// Which official normalisation to apply before comparing answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Normalizer {
    /// `qa_utils.normalize_squad`: lower, drop `string.punctuation`, drop articles, fix
    /// whitespace. T5-CBQA uses it for Natural Questions and WebQuestions.
    #[default]
    Squad,
    /// `qa_utils.normalize_trivia_qa`: like SQuAD but punctuation plus `‘’´` become spaces.
    /// T5-CBQA uses it for TriviaQA (against all aliases).
    TriviaQa,
}

impl Normalizer {
    pub const ALL: [Normalizer; 2] = [Normalizer::Squad, Normalizer::TriviaQa];

    /// The stable name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Normalizer::Squad => "squad",
            Normalizer::TriviaQa => "trivia_qa",
        }
    }

    /// The normalisation T5-CBQA reports for a benchmark (SQuAD unless it is TriviaQA).
    pub fn for_benchmark(benchmark: Benchmark) -> Normalizer {
        match benchmark {
            Benchmark::TriviaQa => Normalizer::TriviaQa,
            Benchmark::NaturalQuestions | Benchmark::WebQuestions | Benchmark::Unknown => {
                Normalizer::Squad
            }
        }
    }

    /// Normalises `text` (allocating). Use [`Normalizer::normalize_into`] in loops.
    pub fn normalize(self, text: &str) -> String {
        let mut out = String::new();
        self.normalize_into(text, &mut NormBuffers::default(), &mut out);
        out
    }

    /// Normalises `text` into `out` (cleared first), reusing `buf` between calls so that the
    /// hot loop allocates only when a string is longer than any before it.
    pub fn normalize_into(self, text: &str, buf: &mut NormBuffers, out: &mut String) {
        lower_into(text, &mut buf.lower);
        buf.punct.clear();
        match self {
            Normalizer::Squad => buf
                .punct
                .extend(buf.lower.chars().filter(|&c| !is_ascii_punct(c))),
            Normalizer::TriviaQa => buf.punct.extend(buf.lower.chars().map(|c| {
                if is_ascii_punct(c) || matches!(c, '\u{2018}' | '\u{2019}' | '\u{b4}') {
                    ' '
                } else {
                    c
                }
            })),
        }
        // `normalize_trivia_qa` ends with `.strip()`, a no-op after `white_space_fix`.
        remove_articles_fix_whitespace(&buf.punct, out);
    }
}

impl std::fmt::Display for Normalizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Normalizer {
    type Err = super::EvalError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let key = s.to_ascii_lowercase().replace('-', "_");
        match key.as_str() {
            "squad" => Ok(Normalizer::Squad),
            "trivia_qa" | "triviaqa" => Ok(Normalizer::TriviaQa),
            _ => Err(super::EvalError::UnknownNormalizer(s.to_string())),
        }
    }
}

/// Scratch space for [`Normalizer::normalize_into`].
#[derive(Debug, Default, Clone)]
pub struct NormBuffers {
    lower: String,
    punct: String,
    nfd: String,
}

/// ORQA / EfficientQA `normalize_answer`: `unicodedata.normalize("NFD", s)` first, then the
/// SQuAD steps. (Note the NFD: `é` becomes `e` + U+0301, a non-word character for `\b`.)
pub fn normalize_efficientqa(text: &str) -> String {
    let mut out = String::new();
    normalize_efficientqa_into(text, &mut NormBuffers::default(), &mut out);
    out
}

/// Buffer-reusing form of [`normalize_efficientqa`].
pub fn normalize_efficientqa_into(text: &str, buf: &mut NormBuffers, out: &mut String) {
    if text.is_ascii() {
        Normalizer::Squad.normalize_into(text, buf, out);
    } else {
        let mut nfd = std::mem::take(&mut buf.nfd);
        nfd.clear();
        nfd.extend(text.nfd());
        Normalizer::Squad.normalize_into(&nfd, buf, out);
        buf.nfd = nfd;
    }
}

/// Python's `str.lower()` into `out`.
fn lower_into(text: &str, out: &mut String) {
    out.clear();
    if text.is_ascii() {
        out.push_str(text);
        out.make_ascii_lowercase();
    } else {
        // Needs the whole string for the Final_Sigma context, hence no per-char mapping.
        out.push_str(&text.to_lowercase());
    }
}

/// Membership in Python's `string.punctuation` (`!"#$%&'()*+,-./:;<=>?@[\]^_`{|}~`).
pub fn is_ascii_punct(c: char) -> bool {
    c.is_ascii_punctuation()
}

/// General category L* or N*; a constant pattern, so compiling it cannot fail at run time.
static PY_ALNUM: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[\p{L}\p{N}]$").expect("constant regex compiles"));

/// A word character for Python 3 `re` on `str` patterns: `str.isalnum()` or `_`
/// (CPython's `SRE_UNI_IS_WORD`). `isalnum` is exactly general category L* or N*.
pub fn is_py_word(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_alphanumeric() || c == '_';
    }
    let mut tmp = [0u8; 4];
    PY_ALNUM.is_match(c.encode_utf8(&mut tmp))
}

/// `" ".join(re.sub(r"\b(a|an|the)\b", " ", s).split())` in one pass.
///
/// `re.sub` scans left to right, tries the alternatives in order (`a` before `an`), evaluates
/// every `\b` against the *original* string, and resumes after each match; scanning `s`
/// unmodified reproduces that exactly. A removed article becomes whitespace, which the join
/// then collapses.
pub fn remove_articles_fix_whitespace(s: &str, out: &mut String) {
    out.clear();
    let bytes = s.as_bytes();
    let mut pending_space = false;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let article = if (b == b'a' || b == b't') && !prev_is_word(s, i) {
            article_end(s, i)
        } else {
            None
        };
        if let Some(end) = article {
            pending_space = true;
            i = end;
            continue;
        }
        let c = s[i..].chars().next().unwrap_or(' ');
        if is_py_space(c) {
            pending_space = true;
        } else {
            if pending_space && !out.is_empty() {
                out.push(' ');
            }
            pending_space = false;
            out.push(c);
        }
        i += c.len_utf8();
    }
}

fn prev_is_word(s: &str, i: usize) -> bool {
    s[..i].chars().next_back().is_some_and(is_py_word)
}

fn boundary_after(s: &str, j: usize) -> bool {
    !s[j..].chars().next().is_some_and(is_py_word)
}

/// End of an article `a|an|the` starting at `i` (already known to follow a boundary).
fn article_end(s: &str, i: usize) -> Option<usize> {
    let rest = &s.as_bytes()[i..];
    if rest[0] == b'a' {
        if boundary_after(s, i + 1) {
            return Some(i + 1);
        }
        if rest.get(1) == Some(&b'n') && boundary_after(s, i + 2) {
            return Some(i + 2);
        }
        None
    } else if rest.starts_with(b"the") && boundary_after(s, i + 3) {
        Some(i + 3)
    } else {
        None
    }
}
