//! A small parser for Python list literals of strings, e.g. `['Scorpio', "Scorpio's", 'Sk\xf6rpio']`.
//!
//! DPR wrote its `*.qa.csv` files (the TriviaQA and NQ "topics" files of Anserini/Pyserini) with
//! `str(list_of_answers)`, i.e. Python's `repr`, and reads them back with `eval(row[1])`
//! ([`CsvQASrc` in DPR's `dpr/data/retriever_data.py`](https://github.com/facebookresearch/DPR/blob/main/dpr/data/retriever_data.py)).
//! We never evaluate anything: this parser accepts exactly the subset of Python's
//! [string literal grammar](https://docs.python.org/3/reference/lexical_analysis.html#string-and-bytes-literals)
//! that can occur in such a list:
//!
//! * `[`, `]`, commas (a trailing comma is allowed), and any whitespace between tokens;
//! * single-, double- and triple-quoted strings with optional `u`/`r` prefixes, and implicit
//!   concatenation of adjacent literals (`'a' 'b'` is `'ab'`), as `literal_eval` accepts them;
//! * the escapes `\\ \' \" \a \b \f \n \r \t \v`, octal `\ooo`, `\xNN`, `\uNNNN`,
//!   `\UNNNNNNNN`, and backslash-newline; an unknown escape such as `\s` keeps its backslash,
//!   exactly as Python does.
//!
//! Deviations, all of which are errors rather than silent guesses: `\N{NAME}` (we carry no
//! name table), bytes/f-strings, and lone surrogates. A `\uD83D\uDE00` surrogate *pair* is joined
//! into one character, because a Rust `String` cannot hold surrogates (Python would keep two
//! unencodable code points).

use std::fmt;

/// Why a Python list literal was rejected; `position` is a 1-based character column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PyListError {
    pub position: usize,
    pub message: String,
}

impl fmt::Display for PyListError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at character {}", self.message, self.position)
    }
}

impl std::error::Error for PyListError {}

/// Parses `text` as a Python list literal whose items are all string literals.
pub fn parse_python_str_list(text: &str) -> Result<Vec<String>, PyListError> {
    let mut p = Parser {
        chars: text.chars().collect(),
        pos: 0,
    };
    p.skip_ws();
    p.expect('[')?;
    let mut items = Vec::new();
    loop {
        p.skip_ws();
        match p.peek() {
            Some(']') => {
                p.pos += 1;
                break;
            }
            None => return Err(p.error("unterminated list: missing ']'")),
            _ => {}
        }
        items.push(p.string_item()?);
        p.skip_ws();
        match p.peek() {
            Some(',') => p.pos += 1,
            Some(']') => {}
            Some(c) => return Err(p.error(&format!("expected ',' or ']', found {c:?}"))),
            None => return Err(p.error("unterminated list: missing ']'")),
        }
    }
    p.skip_ws();
    if let Some(c) = p.peek() {
        return Err(p.error(&format!("unexpected {c:?} after the closing ']'")));
    }
    Ok(items)
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn peek_at(&self, offset: usize) -> Option<char> {
        self.chars.get(self.pos + offset).copied()
    }

    fn error(&self, message: &str) -> PyListError {
        PyListError {
            position: self.pos + 1,
            message: message.to_string(),
        }
    }

    /// Skips whitespace between tokens (Python's tokenizer allows any inside brackets).
    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    fn expect(&mut self, want: char) -> Result<(), PyListError> {
        match self.peek() {
            Some(c) if c == want => {
                self.pos += 1;
                Ok(())
            }
            Some(c) => Err(self.error(&format!("expected {want:?}, found {c:?}"))),
            None => Err(self.error(&format!("expected {want:?}, found end of text"))),
        }
    }

    /// One list item: one or more adjacent string literals, concatenated.
    fn string_item(&mut self) -> Result<String, PyListError> {
        let mut out = String::new();
        self.string_literal(&mut out)?;
        loop {
            let save = self.pos;
            self.skip_ws();
            if self.at_string_start() {
                self.string_literal(&mut out)?;
            } else {
                self.pos = save;
                return Ok(out);
            }
        }
    }

    fn at_string_start(&self) -> bool {
        match self.peek() {
            Some('\'' | '"') => true,
            Some('u' | 'U' | 'r' | 'R') => matches!(self.peek_at(1), Some('\'' | '"')),
            _ => false,
        }
    }

    fn string_literal(&mut self, out: &mut String) -> Result<(), PyListError> {
        let mut raw = false;
        match self.peek() {
            Some('u' | 'U') => self.pos += 1,
            Some('r' | 'R') => {
                raw = true;
                self.pos += 1;
            }
            Some('b' | 'B' | 'f' | 'F') if matches!(self.peek_at(1), Some('\'' | '"')) => {
                return Err(self.error("bytes and f-string literals are not plain strings"));
            }
            _ => {}
        }
        let quote = match self.peek() {
            Some(q @ ('\'' | '"')) => q,
            Some(c) => return Err(self.error(&format!("expected a string literal, found {c:?}"))),
            None => return Err(self.error("expected a string literal, found end of text")),
        };
        let start = self.pos;
        let triple = self.peek_at(1) == Some(quote) && self.peek_at(2) == Some(quote);
        self.pos += if triple { 3 } else { 1 };
        loop {
            let Some(c) = self.peek() else {
                self.pos = start;
                return Err(self.error("unterminated string literal"));
            };
            if c == quote {
                if !triple {
                    self.pos += 1;
                    return Ok(());
                }
                if self.peek_at(1) == Some(quote) && self.peek_at(2) == Some(quote) {
                    self.pos += 3;
                    return Ok(());
                }
                out.push(c);
                self.pos += 1;
            } else if c == '\\' {
                if raw {
                    // In raw strings a backslash escapes nothing but still keeps the next
                    // character (so `r'\''` is backslash + quote).
                    out.push('\\');
                    self.pos += 1;
                    if let Some(next) = self.peek() {
                        out.push(next);
                        self.pos += 1;
                    }
                } else {
                    self.escape(out)?;
                }
            } else if c == '\n' && !triple {
                return Err(self.error("newline inside a single-quoted string literal"));
            } else {
                out.push(c);
                self.pos += 1;
            }
        }
    }

    /// Decodes one escape sequence; `self.pos` is at the backslash.
    fn escape(&mut self, out: &mut String) -> Result<(), PyListError> {
        let Some(kind) = self.peek_at(1) else {
            return Err(self.error("unterminated string literal (trailing backslash)"));
        };
        let simple = match kind {
            '\\' => Some('\\'),
            '\'' => Some('\''),
            '"' => Some('"'),
            'a' => Some('\u{7}'),
            'b' => Some('\u{8}'),
            'f' => Some('\u{c}'),
            'n' => Some('\n'),
            'r' => Some('\r'),
            't' => Some('\t'),
            'v' => Some('\u{b}'),
            _ => None,
        };
        if let Some(c) = simple {
            out.push(c);
            self.pos += 2;
            return Ok(());
        }
        match kind {
            '\n' => {
                self.pos += 2;
                Ok(())
            }
            '0'..='7' => {
                let mut value = 0u32;
                let mut len = 0;
                while len < 3 {
                    match self.peek_at(1 + len).and_then(|c| c.to_digit(8)) {
                        Some(d) => value = value * 8 + d,
                        None => break,
                    }
                    len += 1;
                }
                let c = self.scalar(value)?;
                out.push(c);
                self.pos += 1 + len;
                Ok(())
            }
            'x' => self.hex_escape(out, 2),
            'u' => self.hex_escape(out, 4),
            'U' => self.hex_escape(out, 8),
            'N' => Err(self.error("\\N{...} named escapes are not supported")),
            other => {
                // Python keeps unknown escapes verbatim (with a DeprecationWarning).
                out.push('\\');
                out.push(other);
                self.pos += 2;
                Ok(())
            }
        }
    }

    fn hex_digits(&self, offset: usize, len: usize) -> Result<u32, PyListError> {
        let mut value = 0u32;
        for i in 0..len {
            match self.peek_at(offset + i).and_then(|c| c.to_digit(16)) {
                Some(d) => value = value * 16 + d,
                None => {
                    return Err(self.error(&format!(
                        "truncated \\{} escape: expected {len} hex digits",
                        self.peek_at(1).unwrap_or('?')
                    )));
                }
            }
        }
        Ok(value)
    }

    fn hex_escape(&mut self, out: &mut String, len: usize) -> Result<(), PyListError> {
        let value = self.hex_digits(2, len)?;
        if (0xD800..0xDC00).contains(&value) && len == 4 {
            // A high surrogate: only valid here as the first half of a `\uXXXX\uXXXX` pair.
            if self.peek_at(6) == Some('\\') && self.peek_at(7) == Some('u') {
                let low = self.hex_digits(8, 4)?;
                if (0xDC00..0xE000).contains(&low) {
                    let joined = 0x10000 + ((value - 0xD800) << 10) + (low - 0xDC00);
                    out.push(self.scalar(joined)?);
                    self.pos += 12;
                    return Ok(());
                }
            }
        }
        out.push(self.scalar(value)?);
        self.pos += 2 + len;
        Ok(())
    }

    fn scalar(&self, value: u32) -> Result<char, PyListError> {
        char::from_u32(value).ok_or_else(|| {
            self.error(&format!(
                "escape yields U+{value:04X}, which is a lone surrogate or out of range"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> Vec<String> {
        match parse_python_str_list(text) {
            Ok(v) => v,
            Err(e) => panic!("{text:?}: {e}"),
        }
    }

    #[test]
    fn plain_lists() {
        assert_eq!(ok("[]"), Vec::<String>::new());
        assert_eq!(ok(" [ ] "), Vec::<String>::new());
        assert_eq!(ok("['a']"), ["a"]);
        assert_eq!(ok("['a', \"b\"]"), ["a", "b"]);
        assert_eq!(ok("['a',]"), ["a"]);
        assert_eq!(ok("[\n 'a' ,\t'b' ]"), ["a", "b"]);
        assert_eq!(ok("['', \"\"]"), ["", ""]);
        assert_eq!(ok("['a, b', 'c]']"), ["a, b", "c]"]);
    }

    #[test]
    fn quotes_and_escapes() {
        assert_eq!(ok(r#"["Hitler's"]"#), ["Hitler's"]);
        assert_eq!(ok(r"['Michael Jackson\'s']"), ["Michael Jackson's"]);
        assert_eq!(ok(r#"['say \"hi\"']"#), ["say \"hi\""]);
        assert_eq!(ok(r"['a\\b']"), ["a\\b"]);
        assert_eq!(ok(r"['a\nb\tc\rd']"), ["a\nb\tc\rd"]);
        assert_eq!(ok(r"['\a\b\f\v']"), ["\u{7}\u{8}\u{c}\u{b}"]);
        assert_eq!(ok(r"['S\xc3\x83o']"), ["S\u{c3}\u{83}o"]);
        assert_eq!(ok(r"['Llanfair\xadpwll']"), ["Llanfair\u{ad}pwll"]);
        assert_eq!(ok(r"['Angola \u200e']"), ["Angola \u{200e}"]);
        assert_eq!(ok(r"['\U0001F600']"), ["\u{1F600}"]);
        assert_eq!(ok(r"['\ud83d\ude00']"), ["\u{1F600}"]);
        assert_eq!(ok(r"['\101\0']"), ["A\0"]);
        // Unknown escapes keep the backslash, like Python.
        assert_eq!(ok(r"['Ladies \singles']"), ["Ladies \\singles"]);
        assert_eq!(ok("['a\\\nb']"), ["ab"]);
    }

    #[test]
    fn prefixes_triple_quotes_and_concatenation() {
        assert_eq!(ok("[u'a', r'\\d', R\"\\'\"]"), ["a", "\\d", "\\'"]);
        assert_eq!(
            ok("['''it's''', \"\"\"say \"x\" \"\"\"]"),
            ["it's", "say \"x\" "]
        );
        assert_eq!(ok("['a' 'b', \"c\"'d']"), ["ab", "cd"]);
    }

    #[test]
    fn non_ascii_passes_through() {
        assert_eq!(
            ok("['Wilhelm Conrad Röntgen', '54\u{a0}Mbit/s', '東京']"),
            ["Wilhelm Conrad Röntgen", "54\u{a0}Mbit/s", "東京"]
        );
    }

    #[test]
    fn rejects_bad_input() {
        let cases = [
            ("", "expected '['"),
            ("'a'", "expected '['"),
            ("['a'", "missing ']'"),
            ("['a' 'b'", "missing ']'"),
            ("['a\"]", "unterminated string"),
            ("['a' , 3]", "expected a string literal"),
            ("['a'; 'b']", "expected ',' or ']'"),
            ("['a'] x", "after the closing"),
            (r"['\x4']", "truncated \\x escape"),
            (r"['\ud800']", "lone surrogate"),
            (r"['\U00110000']", "out of range"),
            (r"['\N{BULLET}']", "named escapes"),
            ("[b'a']", "bytes"),
            ("['a\nb']", "newline"),
            ("[None]", "expected a string literal"),
        ];
        for (text, want) in cases {
            match parse_python_str_list(text) {
                Ok(v) => panic!("{text:?} parsed as {v:?}"),
                Err(e) => assert!(e.to_string().contains(want), "{text:?}: {e}"),
            }
        }
    }

    #[test]
    fn error_positions_are_one_based_columns() {
        let err = parse_python_str_list("['a', 7]").err();
        assert_eq!(err.map(|e| e.position), Some(7));
    }
}
