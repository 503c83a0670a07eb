//! File formats of the closed-book QA benchmarks, and their detection.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use super::error::DataError;

/// The on-disk layouts we read. See `shared/data/README.md` for the real files of each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataFormat {
    /// One JSON object per line. NQ-open's canonical `{"question": str, "answer": [str, ...]}`
    /// ([NQ-open README](https://github.com/google-research-datasets/natural-questions/tree/master/nq_open)),
    /// the EfficientQA files with their extra fields, DPR's WebQuestions topics, and any generic
    /// JSONL (field names are options).
    Jsonl,
    /// DPR's `*.qa.csv` (Anserini's `topics.dpr.*.txt`): `question<TAB>python-list-literal`, no
    /// header, pandas/`csv`-module quoting with doubled quotes. Used for TriviaQA test/dev and
    /// DPR's NQ test.
    DprTsv,
    /// A JSON array of objects; by default brmson's WebQuestions layout
    /// `{"qId": str, "answers": [str, ...], "qText": str}`
    /// ([brmson/dataset-factoid-webquestions](https://github.com/brmson/dataset-factoid-webquestions)).
    JsonArray,
    /// Comma-separated with a header row (columns chosen by name).
    Csv,
    /// Tab-separated with a header row (columns chosen by name).
    Tsv,
}

impl DataFormat {
    /// All formats, in the order used in help texts.
    pub const ALL: [DataFormat; 5] = [
        DataFormat::Jsonl,
        DataFormat::DprTsv,
        DataFormat::JsonArray,
        DataFormat::Csv,
        DataFormat::Tsv,
    ];

    /// The stable name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            DataFormat::Jsonl => "jsonl",
            DataFormat::DprTsv => "dpr-tsv",
            DataFormat::JsonArray => "json-array",
            DataFormat::Csv => "csv",
            DataFormat::Tsv => "tsv",
        }
    }

    /// Default (question, answers, id) field names; the id field is optional in each record.
    pub(crate) fn default_fields(self) -> (&'static str, &'static str, &'static str) {
        match self {
            DataFormat::JsonArray => ("qText", "answers", "qId"),
            _ => ("question", "answer", "id"),
        }
    }

    /// Detects the format from the file extension and the first non-blank line of `text`.
    ///
    /// Content wins over the extension where they disagree, because the real files are
    /// misleadingly named: DPR's `*.qa.csv` and Anserini's `topics.*.txt` are tab-separated, and
    /// Anserini's `topics.dpr.wq.test.txt` is JSON lines.
    pub fn detect(path: &Path, text: &str) -> Result<DataFormat, DataError> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .unwrap_or_default();
        let first = text
            .lines()
            .map(|l| l.trim_start_matches('\u{feff}').trim())
            .find(|l| !l.is_empty());
        let Some(first) = first else {
            return Err(DataError::Empty {
                path: path.to_path_buf(),
                detail: " (the file is blank)".to_string(),
            });
        };
        if first.starts_with('{') {
            return Ok(DataFormat::Jsonl);
        }
        if first.starts_with('[') {
            return Ok(DataFormat::JsonArray);
        }
        if looks_like_dpr_line(first) {
            return Ok(DataFormat::DprTsv);
        }
        match ext.as_str() {
            "jsonl" | "ndjson" => Ok(DataFormat::Jsonl),
            "json" => Ok(DataFormat::JsonArray),
            "csv" => Ok(DataFormat::Csv),
            "tsv" => Ok(DataFormat::Tsv),
            _ => Err(DataError::UnknownFormat {
                path: path.to_path_buf(),
                reason: format!(
                    "extension {ext:?} and a first line that is neither JSON nor \
                     `question<TAB>['answer', ...]`"
                ),
            }),
        }
    }
}

/// A DPR line ends in a tab followed by a (possibly CSV-quoted) Python list literal.
fn looks_like_dpr_line(line: &str) -> bool {
    let Some((_, last)) = line.rsplit_once('\t') else {
        return false;
    };
    let last = last.trim();
    (last.starts_with('[') && last.ends_with(']'))
        || (last.starts_with("\"[") && last.ends_with("]\""))
}

impl fmt::Display for DataFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DataFormat {
    type Err = DataError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DataFormat::ALL
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| DataError::UnknownFormatName {
                name: s.to_string(),
                expected: DataFormat::ALL.map(DataFormat::name).join(", "),
            })
    }
}

/// Which benchmark a file belongs to, guessed from its name; it chooses the default metric
/// normalisation (T5-CBQA scores TriviaQA with TriviaQA normalisation, NQ and WebQuestions
/// with SQuAD normalisation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Benchmark {
    NaturalQuestions,
    TriviaQa,
    WebQuestions,
    Unknown,
}

impl Benchmark {
    /// The paper's task name of the benchmark (`nq`, `trivia_qa`, `wq`, as in its input
    /// prefixes `nq question: ` …); `None` for another file.
    pub fn task_name(self) -> Option<&'static str> {
        match self {
            Benchmark::NaturalQuestions => Some("nq"),
            Benchmark::TriviaQa => Some("trivia_qa"),
            Benchmark::WebQuestions => Some("wq"),
            Benchmark::Unknown => None,
        }
    }

    /// Guesses from the file name and parent directory (`trivia`, `wq`/`webquestions`,
    /// `nq`/`natural`), falling back to the format (a JSON array is brmson WebQuestions).
    pub fn guess(path: &Path, format: DataFormat) -> Benchmark {
        let name = path
            .iter()
            .rev()
            .take(2)
            .map(|p| p.to_string_lossy().to_lowercase())
            .collect::<Vec<_>>()
            .join("/");
        let has_token = |tok: &str| {
            name.split(|c: char| !c.is_ascii_alphanumeric())
                .any(|part| part == tok)
        };
        if name.contains("trivia") {
            Benchmark::TriviaQa
        } else if name.contains("webquestions") || has_token("wq") || name.contains("brmson") {
            Benchmark::WebQuestions
        } else if name.contains("natural") || has_token("nq") || name.contains("nq-open") {
            Benchmark::NaturalQuestions
        } else if format == DataFormat::JsonArray {
            Benchmark::WebQuestions
        } else {
            Benchmark::Unknown
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_real_layouts() {
        let d = |p: &str, t: &str| DataFormat::detect(Path::new(p), t).ok();
        assert_eq!(
            d("NQ-open.dev.jsonl", "{\"question\": \"q\"}\n"),
            Some(DataFormat::Jsonl)
        );
        assert_eq!(
            d("topics.dpr.wq.test.txt", "{\"question\": \"q\"}\n"),
            Some(DataFormat::Jsonl)
        );
        assert_eq!(
            d("test.json", "[\n {\"qId\": 1}\n]"),
            Some(DataFormat::JsonArray)
        );
        assert_eq!(
            d("trivia.txt", "q?\t['a', 'b']\n"),
            Some(DataFormat::DprTsv)
        );
        assert_eq!(
            d("trivia.txt", "\"\"\"q\"\"\"\t\"['a', \"\"b's\"\"]\"\n"),
            Some(DataFormat::DprTsv)
        );
        assert_eq!(d("nq-test.qa.csv", "q\t['a']\n"), Some(DataFormat::DprTsv));
        assert_eq!(d("x.csv", "question,answer\n"), Some(DataFormat::Csv));
        assert_eq!(d("x.tsv", "question\tanswer\n"), Some(DataFormat::Tsv));
        assert_eq!(d("x.txt", "hello\n"), None);
        assert!(matches!(
            DataFormat::detect(Path::new("x.jsonl"), "\n \n"),
            Err(DataError::Empty { .. })
        ));
    }

    #[test]
    fn names_round_trip() {
        for f in DataFormat::ALL {
            assert_eq!(f.name().parse::<DataFormat>().ok(), Some(f));
        }
        let err = "parquet".parse::<DataFormat>().err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("jsonl, dpr-tsv")));
    }

    #[test]
    fn guesses_benchmarks_from_real_paths() {
        let g = |p: &str, f| Benchmark::guess(Path::new(p), f);
        use Benchmark::*;
        use DataFormat::*;
        assert_eq!(
            g("data/triviaqa/topics.dpr.trivia.test.txt", DprTsv),
            TriviaQa
        );
        assert_eq!(
            g("data/nq-open/dpr/topics.dpr.nq.test.txt", DprTsv),
            NaturalQuestions
        );
        assert_eq!(g("data/nq-open/NQ-open.dev.jsonl", Jsonl), NaturalQuestions);
        assert_eq!(
            g("webquestions/dpr/topics.dpr.wq.test.txt", Jsonl),
            WebQuestions
        );
        assert_eq!(
            g("webquestions/brmson-main/test.json", JsonArray),
            WebQuestions
        );
        assert_eq!(g("mine/dev.jsonl", Jsonl), Unknown);
    }
}
