//! Our metrics against `scripts/official_metrics.py` (a plain-Python transcription of T5's
//! `qa_utils.py`, DPR's `has_answer` and ORQA's `normalize_answer`) on every NQ-open dev and
//! TriviaQA test question, plus a table of tricky strings.

use std::fmt::Write as _;
use std::path::Path;

use cbqa::data::{Dataset, QaExample, ReadOptions};
use cbqa::eval::{
    normalize_efficientqa, score_examples_with, Normalizer, Prediction, ScoreOptions,
};
use serde_json::{json, Value};
use unicode_normalization::UnicodeNormalization;

use crate::support::{data_file, run_script, temp_dir};

const KS: [usize; 3] = [1, 2, 3];

/// Deterministic predictions exercising every branch: exact, case/punctuation/article
/// changes, another question's answer, truncation, empty, extra words, NBSP/curly quote/NFD,
/// underscores. Candidates mix a wrong answer, the prediction and a reference.
fn perturbed_predictions(examples: &[QaExample]) -> Vec<Prediction> {
    let n = examples.len();
    examples
        .iter()
        .enumerate()
        .map(|(i, ex)| {
            let a = &ex.answers[i % ex.answers.len()];
            let other = &examples[(i * 7919 + 13) % n].answers[0];
            let text = match i % 10 {
                0 => a.clone(),
                1 => format!("The {}.", a.to_uppercase()),
                2 => other.clone(),
                3 => a.chars().take(a.chars().count().div_ceil(2)).collect(),
                4 => String::new(),
                5 => format!("it was {a}, I think"),
                6 => a
                    .replace(' ', "\u{a0}")
                    .replace('\'', "\u{2019}")
                    .nfd()
                    .collect(),
                7 => format!("an {}!!", a.to_lowercase()),
                8 => format!("{} (the)", a.replace(' ', "_")),
                _ => a.split(' ').rev().collect::<Vec<_>>().join(" - "),
            };
            let mut candidates = vec![other.clone(), text.clone(), ex.answers[0].to_lowercase()];
            candidates.rotate_left(i % 3);
            Prediction {
                id: Some(ex.id.clone()),
                text,
                candidates,
            }
        })
        .collect()
}

const TRICKY: &[&str] = &[
    "The Beatles",
    "54\u{a0}Mbit/s",
    "a\u{a0}the\u{a0}b",
    "Ro\u{308}ntgen",
    "Röntgen",
    "the\u{301} end",
    "thé end",
    "‘Think Different’",
    "“quoted” text",
    "it’s",
    "it's",
    "rock´n´roll",
    "en–dash — em",
    "snake_case_name",
    "a_b the_c",
    "",
    "   ",
    ")",
    "---",
    "*",
    "A+",
    "a",
    "An",
    "THE",
    "theater",
    "a-team",
    "anthem",
    "the2",
    "2the",
    "a1 an",
    "éthe the",
    "the é",
    "東京the",
    "the東京",
    "ÄN a Ä",
    "ΟΔΟΣ",
    "ΑΣ,Α",
    "Σ",
    "σ",
    "ς",
    "İstanbul",
    "istanbul",
    "zero\u{200b}width",
    "next\u{85}line",
    "x\u{1c}y\u{1f}z",
    "Angola \u{200e}",
    "Llanfair\u{ad}pwll",
    "A\u{3000}B",
    "a\u{2028}b",
    "the ½",
    "½the",
    "²the",
    "the_",
    "_the",
    "aa the an a",
    "an an",
    "the, the",
    "The Who's \"Tommy\"",
    "St. Louis (MO)",
    "\tleading and trailing \n",
    "ⅰthe",
    "the\u{345}",
    "STRASSE",
    "straße",
    "new york new york",
    "New York",
    "14 December 1972 UTC",
    "December 1972",
    "S\u{c4}\u{83}o Paulo",
    "-\u{c2}\u{a0} Fear itself",
    "Beyoncé",
    "Beyonce\u{301}",
    "U.S.",
    "u s",
    "\u{1F600} smile",
];

/// Two examples per tricky string: against its neighbours in the table (a match only when
/// normalisation collapses them), and against its own upper-cased, NFC and NFD forms.
fn tricky_examples() -> (Vec<QaExample>, Vec<Prediction>) {
    let m = TRICKY.len();
    let mut refs = Vec::new();
    let mut preds = Vec::new();
    for (j, s) in TRICKY.iter().enumerate() {
        let neighbours = vec![
            TRICKY[(j + 1) % m].to_string(),
            TRICKY[(j + 7) % m].to_string(),
            TRICKY[(j + 3) % m].to_uppercase(),
        ];
        let own = vec![s.to_uppercase(), s.nfc().collect(), s.nfd().collect()];
        for (k, answers) in [neighbours, own].into_iter().enumerate() {
            let id = format!("t{j}.{k}");
            refs.push(QaExample {
                id: id.clone(),
                question: "?".into(),
                answers,
            });
            preds.push(Prediction {
                id: Some(id),
                text: s.to_string(),
                candidates: vec![TRICKY[(j + 5) % m].into(), s.to_lowercase(), s.to_string()],
            });
        }
    }
    (refs, preds)
}

/// Runs the oracle and compares every example and the corpus means; returns the count.
fn compare_with_python(
    name: &str,
    normalizer: Normalizer,
    refs: &[QaExample],
    preds: &[Prediction],
) -> usize {
    let dir = temp_dir(&format!("oracle-{name}"));
    let input = dir.join("input.jsonl");
    let output = dir.join("output.jsonl");
    let mut text = String::new();
    for (r, p) in refs.iter().zip(preds) {
        let line = json!({
            "id": r.id, "prediction": p.text, "references": r.answers, "candidates": p.candidates,
        });
        let _ = writeln!(text, "{line}");
    }
    write(&input, &text);
    run_script(
        "official_metrics.py",
        &[
            Path::new("--normalizer"),
            Path::new(normalizer.name()),
            &input,
            &output,
        ],
    );
    let lines: Vec<Value> = std::fs::read_to_string(&output)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or(Value::Null))
        .collect();
    assert_eq!(lines.len(), refs.len() + 1, "{name}: oracle output lines");

    let opts = ScoreOptions {
        normalizer,
        recall_ks: KS.to_vec(),
    };
    let ours = match score_examples_with(preds, refs, &opts) {
        Ok(s) => s,
        Err(e) => panic!("{name}: {e}"),
    };
    let mut f1_bit_exact = 0;
    for (i, (py, row)) in lines.iter().zip(&ours.rows).enumerate() {
        let ctx = || {
            format!(
                "{name} #{i}: prediction {:?}, references {:?}",
                preds[i].text, refs[i].answers
            )
        };
        assert_eq!(
            py["norm_prediction"].as_str(),
            Some(row.normalized_prediction.as_str()),
            "{}",
            ctx()
        );
        let norm_refs: Vec<Value> = refs[i]
            .answers
            .iter()
            .map(|a| Value::from(normalizer.normalize(a)))
            .collect();
        assert_eq!(py["norm_references"], Value::Array(norm_refs), "{}", ctx());
        assert_eq!(py["em"].as_bool(), Some(row.em), "{}", ctx());
        let f1 = py_float(&py["f1"]);
        assert!(
            (f1 - row.f1).abs() <= 1e-12,
            "{}: f1 {f1} vs {}",
            ctx(),
            row.f1
        );
        f1_bit_exact += usize::from(f1.to_bits() == row.f1.to_bits());
        assert_eq!(
            py["has_answer"].as_bool(),
            Some(row.has_answer),
            "{}",
            ctx()
        );
        assert_eq!(
            py["efficientqa_em"].as_bool(),
            Some(row.efficientqa_em),
            "{}",
            ctx()
        );
        assert_eq!(
            py["norm_prediction_efficientqa"].as_str(),
            Some(normalize_efficientqa(&preds[i].text).as_str()),
            "{}",
            ctx()
        );
        let cand: Vec<bool> = py["candidate_em"]
            .as_array()
            .map(|v| v.iter().map(|b| b.as_bool() == Some(true)).collect())
            .unwrap_or_default();
        let want: Vec<bool> = KS
            .iter()
            .map(|&k| cand.iter().take(k).any(|&b| b))
            .collect();
        assert_eq!(row.recall_hits, want, "{}", ctx());
    }
    assert_eq!(
        f1_bit_exact,
        refs.len(),
        "{name}: every F1 should be bit-identical"
    );

    let summary = &lines[refs.len()]["summary"];
    let agg = &ours.aggregate;
    for (key, value) in [
        ("em", agg.em),
        ("f1", agg.f1),
        ("has_answer", agg.has_answer),
        ("efficientqa_em", agg.efficientqa_em),
    ] {
        let py = py_float(&summary[key]);
        assert_eq!(
            py.to_bits(),
            value.to_bits(),
            "{name} corpus {key}: python {py:?}, ours {value:?}"
        );
    }
    eprintln!(
        "{name}: {} examples identical to the Python oracle (EM {:?}, F1 {:?}; numpy checked: {}, regex checked: {})",
        refs.len(),
        agg.em,
        agg.f1,
        summary["numpy_checked"],
        summary["regex_checked"]
    );
    let _ = std::fs::remove_dir_all(&dir);
    refs.len()
}

/// A float the oracle wrote as a `repr()` string (Rust's `parse` rounds correctly).
fn py_float(v: &Value) -> f64 {
    v.as_str().and_then(|s| s.parse().ok()).unwrap_or(f64::NAN)
}

fn write(path: &Path, text: &str) {
    if let Err(e) = std::fs::write(path, text) {
        panic!("cannot write {}: {e}", path.display());
    }
}

fn load(rel: &str) -> Vec<QaExample> {
    match Dataset::read(data_file(rel), &ReadOptions::default()) {
        Ok(ds) => ds.examples,
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn nq_open_dev_matches_python_oracle() {
    let refs = load("nq-open/NQ-open.dev.jsonl");
    let preds = perturbed_predictions(&refs);
    assert_eq!(
        compare_with_python("nq-dev", Normalizer::Squad, &refs, &preds),
        3610
    );
}

#[test]
fn triviaqa_test_matches_python_oracle() {
    let refs = load("triviaqa/topics.dpr.trivia.test.txt");
    let preds = perturbed_predictions(&refs);
    assert_eq!(
        compare_with_python("tqa-test", Normalizer::TriviaQa, &refs, &preds),
        11313
    );
}

#[test]
fn tricky_strings_match_python_oracle() {
    let (refs, preds) = tricky_examples();
    for normalizer in Normalizer::ALL {
        compare_with_python(&format!("tricky-{normalizer}"), normalizer, &refs, &preds);
    }
}
