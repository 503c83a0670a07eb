//! Exact match with SQuAD's answer normalisation (lower case, drop ASCII punctuation, drop the
//! articles a/an/the, collapse whitespace), as the T5 closed-book code scores NQ.
//!
//! Kept here for dev-set evaluation during training; it should be replaced by the crate's
//! evaluation metrics (the ones `cbqa eval` uses) once they exist, so training and evaluation
//! report the same number.

use regex::Regex;
use std::sync::OnceLock;

/// SQuAD's `normalize_answer`.
pub fn normalize(s: &str) -> String {
    static ARTICLES: OnceLock<Regex> = OnceLock::new();
    let lower = s.to_lowercase();
    let no_punc: String = lower
        .chars()
        .filter(|c| !c.is_ascii_punctuation())
        .collect();
    let re =
        ARTICLES.get_or_init(|| Regex::new(r"\b(a|an|the)\b").expect("a constant, valid regex"));
    let no_articles = re.replace_all(&no_punc, " ");
    no_articles.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// 1.0 when the normalised prediction equals any normalised reference.
pub fn exact_match(prediction: &str, references: &[String]) -> f64 {
    let p = normalize(prediction);
    if references.iter().any(|r| normalize(r) == p) {
        1.0
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn squad_normalisation() {
        assert_eq!(normalize("The  Beatles!"), "beatles");
        assert_eq!(normalize("an apple, a day"), "apple day");
        assert_eq!(
            exact_match(
                "December 1972.",
                &["14 December 1972".into(), "december 1972".into()]
            ),
            1.0
        );
        assert_eq!(exact_match("1973", &["1972".into()]), 0.0);
    }
}
