//! Salient span masking, exactly as the paper's `mask_salient_spans`
//! (google-research `t5_closed_book_qa/t5_cbqa/preprocessors.py`): one example per salient span
//! of a sentence, inputs `"nem: " + sentence[:start] + "_X_" + sentence[limit:]`, targets the
//! span's text; a sentence without spans gives nothing. Offsets are UTF-8 bytes, as
//! `tf.strings.substr` counts them (the corpus readers convert code points to bytes).

use super::corpus::Span;

/// The task prefix of `mask_salient_spans` (joined with `": "`).
pub const PREFIX: &str = "nem";
/// What replaces the span in the inputs.
pub const MASK: &str = "_X_";

/// One text-to-text example.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextExample {
    pub inputs: String,
    pub targets: String,
}

/// The examples of one sentence, one per span in the order given. Every span must lie on
/// character boundaries of `sentence` (the readers check it); one that does not is skipped.
pub fn mask_salient_spans(sentence: &str, spans: &[Span]) -> Vec<TextExample> {
    spans
        .iter()
        .filter_map(|s| {
            let before = sentence.get(..s.start)?;
            let span = sentence.get(s.start..s.end)?;
            let after = sentence.get(s.end..)?;
            Some(TextExample {
                inputs: format!("{PREFIX}: {before}{MASK}{after}"),
                targets: span.to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(start: usize, end: usize) -> Span {
        Span {
            start,
            end,
            kind: String::new(),
        }
    }

    #[test]
    fn one_example_per_span() {
        let s = "Marie Curie won the Nobel Prize in 1903.";
        let ex = mask_salient_spans(s, &[span(0, 11), span(35, 39)]);
        assert_eq!(ex.len(), 2);
        assert_eq!(ex[0].inputs, "nem: _X_ won the Nobel Prize in 1903.");
        assert_eq!(ex[0].targets, "Marie Curie");
        assert_eq!(ex[1].inputs, "nem: Marie Curie won the Nobel Prize in _X_.");
        assert_eq!(ex[1].targets, "1903");
        assert!(mask_salient_spans(s, &[]).is_empty());
    }

    #[test]
    fn byte_offsets_on_multi_byte_text() {
        // "Dvořák" is 6 characters but 8 bytes.
        let s = "Dvořák žil v Praze.";
        let d = s.find("Praze").unwrap();
        assert_eq!(("Dvořák".len(), d), (8, 16));
        let ex = mask_salient_spans(s, &[span(0, 8), span(d, d + 5)]);
        assert_eq!(ex[0].targets, "Dvořák");
        assert_eq!(ex[0].inputs, "nem: _X_ žil v Praze.");
        assert_eq!(ex[1].inputs, "nem: Dvořák žil v _X_.");
        // An offset inside a character is never cut into a broken string.
        assert!(mask_salient_spans(s, &[span(0, 4)]).is_empty());
    }
}
