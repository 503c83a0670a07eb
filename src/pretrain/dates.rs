//! Salient spans for text without annotations: dates, found by a regular expression as REALM
//! found them (its named entities came from a trained tagger; `scripts/annotate_spans.py` adds
//! those with a spaCy English pipeline when one is installed).
//!
//! The expression ([`DATE_PATTERN`]) matches, leftmost and longest alternative first:
//! - day month year: `8 September 1841`, `8 Sept. 1841`;
//! - month day, year: `September 8, 1841`, `Sep 8 1841`;
//! - month year: `September 1841`; day month: `8 September`; month day: `September 8`;
//! - ISO dates: `1841-09-08`;
//! - years from 1000 to 2099 standing alone: `1841` (not `18410`, `1841.5` or `1,841`).
//!
//! Month names are English, full or abbreviated (`Sept`, `Sep.`), case-sensitive (`May` is a
//! month, `may` is not).

use super::corpus::Span;
use regex::Regex;
use std::sync::OnceLock;

/// The date expression (see the module documentation).
pub const DATE_PATTERN: &str = r"(?x)
    \b(?:
        \d{1,2}\s+MONTH,?\s+\d{4}
      | MONTH\s+\d{1,2}(?:st|nd|rd|th)?,?\s+\d{4}
      | MONTH,?\s+\d{4}
      | \d{1,2}\s+MONTH
      | MONTH\s+\d{1,2}(?:st|nd|rd|th)?
      | \d{4}-\d{2}-\d{2}
      | (?:1\d{3}|20\d{2})
    )\b";

const MONTH: &str = r"(?:January|February|March|April|May|June|July|August|September|October|November|December|Jan\.?|Feb\.?|Mar\.?|Apr\.?|Jun\.?|Jul\.?|Aug\.?|Sept?\.?|Oct\.?|Nov\.?|Dec\.?)";

fn date_regex() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(&DATE_PATTERN.replace("MONTH", MONTH)).expect("the date pattern compiles")
    })
}

/// The dates in `text` as spans of kind `DATE` (byte offsets), in order, not overlapping.
pub fn tag_dates(text: &str) -> Vec<Span> {
    date_regex()
        .find_iter(text)
        .filter(|m| !is_part_of_a_number(text, m.start(), m.end()))
        .map(|m| Span {
            start: m.start(),
            end: m.end(),
            kind: "DATE".into(),
        })
        .collect()
}

/// A match glued to digits by a `.` or `,` (`1841.5`, `2,1841`) is a number, not a date.
fn is_part_of_a_number(text: &str, start: usize, end: usize) -> bool {
    let mut after = text[end..].chars();
    let glued_after =
        matches!(after.next(), Some('.' | ',')) && after.next().is_some_and(|c| c.is_ascii_digit());
    let mut before = text[..start].chars().rev();
    let glued_before = matches!(before.next(), Some('.' | ','))
        && before.next().is_some_and(|c| c.is_ascii_digit());
    glued_after || glued_before
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dates(text: &str) -> Vec<&str> {
        tag_dates(text)
            .iter()
            .map(|s| &text[s.start..s.end])
            .collect()
    }

    #[test]
    fn dates_in_their_usual_forms() {
        assert_eq!(
            dates("Dvořák was born on 8 September 1841 and died on May 1, 1904."),
            ["8 September 1841", "May 1, 1904"]
        );
        assert_eq!(
            dates("In September 1939, on 1939-09-01."),
            ["September 1939", "1939-09-01"]
        );
        assert_eq!(
            dates("It opened on Sept. 3rd and closed in 2001."),
            ["Sept. 3rd", "2001"]
        );
        assert_eq!(
            dates("Founded 1066; population 18410 or 2,1841 or 1841.5."),
            ["1066"]
        );
        assert!(dates("You may go in march.").is_empty());
    }
}
