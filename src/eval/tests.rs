//! Table-driven tests of the awkward cases. Expected values were produced by the official
//! Python (CPython 3.11) through `scripts/official_metrics.py`, which transcribes
//! `qa_utils.py`, DPR's `has_answer` and ORQA's `normalize_answer`.

use super::*;
use crate::data::QaExample;

/// (input, normalize_squad, normalize_trivia_qa, ORQA/EfficientQA normalize_answer)
const NORMALIZATION: &[(&str, &str, &str, &str)] = &[
    ("The Beatles", "beatles", "beatles", "beatles"),
    ("54\u{a0}Mbit/s", "54 mbits", "54 mbit s", "54 mbits"),
    ("a\u{a0}the\u{a0}b", "b", "b", "b"),
    (
        "Ro\u{308}ntgen",
        "ro\u{308}ntgen",
        "ro\u{308}ntgen",
        "ro\u{308}ntgen",
    ),
    (
        "R\u{f6}ntgen",
        "r\u{f6}ntgen",
        "r\u{f6}ntgen",
        "ro\u{308}ntgen",
    ),
    (
        "the\u{301} end",
        "\u{301} end",
        "\u{301} end",
        "\u{301} end",
    ),
    (
        "th\u{e9} end",
        "th\u{e9} end",
        "th\u{e9} end",
        "\u{301} end",
    ),
    (
        "\u{2018}Think Different\u{2019}",
        "\u{2018}think different\u{2019}",
        "think different",
        "\u{2018}think different\u{2019}",
    ),
    (
        "\u{201c}quoted\u{201d} text",
        "\u{201c}quoted\u{201d} text",
        "\u{201c}quoted\u{201d} text",
        "\u{201c}quoted\u{201d} text",
    ),
    ("it\u{2019}s", "it\u{2019}s", "it s", "it\u{2019}s"),
    (
        "rock\u{b4}n\u{b4}roll",
        "rock\u{b4}n\u{b4}roll",
        "rock n roll",
        "rock\u{b4}n\u{b4}roll",
    ),
    (
        "en\u{2013}dash \u{2014} em",
        "en\u{2013}dash \u{2014} em",
        "en\u{2013}dash \u{2014} em",
        "en\u{2013}dash \u{2014} em",
    ),
    (
        "snake_case_name",
        "snakecasename",
        "snake case name",
        "snakecasename",
    ),
    ("a_b the_c", "ab thec", "b c", "ab thec"),
    ("", "", "", ""),
    ("   ", "", "", ""),
    (")", "", "", ""),
    ("---", "", "", ""),
    ("*", "", "", ""),
    ("A+", "", "", ""),
    ("a", "", "", ""),
    ("An", "", "", ""),
    ("THE", "", "", ""),
    ("theater", "theater", "theater", "theater"),
    ("a-team", "ateam", "team", "ateam"),
    ("anthem", "anthem", "anthem", "anthem"),
    ("the2", "the2", "the2", "the2"),
    ("2the", "2the", "2the", "2the"),
    ("a1 an", "a1", "a1", "a1"),
    ("\u{e9}the the", "\u{e9}the", "\u{e9}the", "e\u{301}"),
    ("the \u{e9}", "\u{e9}", "\u{e9}", "e\u{301}"),
    (
        "\u{6771}\u{4eac}the",
        "\u{6771}\u{4eac}the",
        "\u{6771}\u{4eac}the",
        "\u{6771}\u{4eac}the",
    ),
    (
        "the\u{6771}\u{4eac}",
        "the\u{6771}\u{4eac}",
        "the\u{6771}\u{4eac}",
        "the\u{6771}\u{4eac}",
    ),
    (
        "\u{c4}N a \u{c4}",
        "\u{e4}n \u{e4}",
        "\u{e4}n \u{e4}",
        "\u{308}n \u{308}",
    ),
    (
        "\u{39f}\u{394}\u{39f}\u{3a3}",
        "\u{3bf}\u{3b4}\u{3bf}\u{3c2}",
        "\u{3bf}\u{3b4}\u{3bf}\u{3c2}",
        "\u{3bf}\u{3b4}\u{3bf}\u{3c2}",
    ),
    (
        "\u{391}\u{3a3},\u{391}",
        "\u{3b1}\u{3c2}\u{3b1}",
        "\u{3b1}\u{3c2} \u{3b1}",
        "\u{3b1}\u{3c2}\u{3b1}",
    ),
    ("\u{3a3}", "\u{3c3}", "\u{3c3}", "\u{3c3}"),
    (
        "\u{130}stanbul",
        "i\u{307}stanbul",
        "i\u{307}stanbul",
        "i\u{307}stanbul",
    ),
    (
        "zero\u{200b}width",
        "zero\u{200b}width",
        "zero\u{200b}width",
        "zero\u{200b}width",
    ),
    ("next\u{85}line", "next line", "next line", "next line"),
    ("x\u{1c}y\u{1f}z", "x y z", "x y z", "x y z"),
    (
        "Angola \u{200e}",
        "angola \u{200e}",
        "angola \u{200e}",
        "angola \u{200e}",
    ),
    (
        "Llanfair\u{ad}pwll",
        "llanfair\u{ad}pwll",
        "llanfair\u{ad}pwll",
        "llanfair\u{ad}pwll",
    ),
    ("A\u{3000}B", "b", "b", "b"),
    ("a\u{2028}b", "b", "b", "b"),
    ("the \u{bd}", "\u{bd}", "\u{bd}", "\u{bd}"),
    ("\u{bd}the", "\u{bd}the", "\u{bd}the", "\u{bd}the"),
    ("\u{b2}the", "\u{b2}the", "\u{b2}the", "\u{b2}the"),
    ("the_", "", "", ""),
    ("_the", "", "", ""),
    ("aa the an a", "aa", "aa", "aa"),
    ("an an", "", "", ""),
    ("the, the", "", "", ""),
    (
        "The Who's \"Tommy\"",
        "whos tommy",
        "who s tommy",
        "whos tommy",
    ),
    (
        "St. Louis (MO)",
        "st louis mo",
        "st louis mo",
        "st louis mo",
    ),
    (
        "\tleading and trailing \n",
        "leading and trailing",
        "leading and trailing",
        "leading and trailing",
    ),
    ("\u{2170}the", "\u{2170}the", "\u{2170}the", "\u{2170}the"),
    ("the\u{345}", "\u{345}", "\u{345}", "\u{345}"),
];

#[test]
fn normalization_matches_python() {
    let mut buf = NormBuffers::default();
    let mut out = String::new();
    for &(input, squad, trivia, eqa) in NORMALIZATION {
        assert_eq!(Normalizer::Squad.normalize(input), squad, "squad {input:?}");
        assert_eq!(
            Normalizer::TriviaQa.normalize(input),
            trivia,
            "trivia {input:?}"
        );
        assert_eq!(normalize_efficientqa(input), eqa, "efficientqa {input:?}");
        // The buffer-reusing path gives the same answers in any order.
        Normalizer::TriviaQa.normalize_into(input, &mut buf, &mut out);
        assert_eq!(out, trivia, "trivia (reused buffers) {input:?}");
    }
}

/// (normalizer, references, prediction, EM, F1, DPR has_answer)
type MetricCase = (
    Normalizer,
    &'static [&'static str],
    &'static str,
    bool,
    f64,
    bool,
);

const METRICS: &[MetricCase] = &[
    (
        Normalizer::Squad,
        &["Bobby Scott", "Bob Russell"],
        "bobby scott",
        true,
        1.0,
        true,
    ),
    (
        Normalizer::TriviaQa,
        &["Bobby Scott", "Bob Russell"],
        "bobby scott",
        true,
        1.0,
        true,
    ),
    (
        Normalizer::Squad,
        &["December 1972"],
        "14 December 1972 UTC",
        false,
        0.6666666666666666,
        true,
    ),
    (
        Normalizer::TriviaQa,
        &["December 1972"],
        "14 December 1972 UTC",
        false,
        0.6666666666666666,
        true,
    ),
    (
        Normalizer::Squad,
        &["54\u{a0}Mbit/s"],
        "54 Mbit/s",
        true,
        1.0,
        true,
    ),
    (
        Normalizer::TriviaQa,
        &["54\u{a0}Mbit/s"],
        "54 Mbit/s",
        true,
        1.0,
        true,
    ),
    (Normalizer::Squad, &[")"], "", true, 0.0, false),
    (Normalizer::TriviaQa, &[")"], "", true, 0.0, false),
    (Normalizer::Squad, &["A+"], "A", true, 0.0, false),
    (Normalizer::TriviaQa, &["A+"], "A", true, 0.0, false),
    (Normalizer::Squad, &["---", "x"], "", true, 0.0, false),
    (Normalizer::TriviaQa, &["---", "x"], "", true, 0.0, false),
    (Normalizer::Squad, &["a b a"], "a b", true, 1.0, false),
    (Normalizer::TriviaQa, &["a b a"], "a b", true, 1.0, false),
    (
        Normalizer::Squad,
        &["b a b c"],
        "b b b",
        false,
        0.6666666666666666,
        false,
    ),
    (
        Normalizer::TriviaQa,
        &["b a b c"],
        "b b b",
        false,
        0.6666666666666666,
        false,
    ),
    (
        Normalizer::Squad,
        &["new york new york"],
        "new york",
        false,
        0.6666666666666666,
        false,
    ),
    (
        Normalizer::TriviaQa,
        &["new york new york"],
        "new york",
        false,
        0.6666666666666666,
        false,
    ),
    (
        Normalizer::Squad,
        &["R\u{f6}ntgen"],
        "Ro\u{308}ntgen",
        false,
        0.0,
        true,
    ),
    (
        Normalizer::TriviaQa,
        &["R\u{f6}ntgen"],
        "Ro\u{308}ntgen",
        false,
        0.0,
        true,
    ),
    (
        Normalizer::Squad,
        &["it\u{2019}s"],
        "it's",
        false,
        0.0,
        false,
    ),
    (
        Normalizer::TriviaQa,
        &["it\u{2019}s"],
        "it's",
        true,
        1.0,
        false,
    ),
    (Normalizer::Squad, &["the the"], "the", true, 0.0, false),
    (Normalizer::TriviaQa, &["the the"], "the", true, 0.0, false),
    (Normalizer::Squad, &[""], "", true, 0.0, true),
    (Normalizer::TriviaQa, &[""], "", true, 0.0, true),
    (
        Normalizer::Squad,
        &["one season", "one"],
        "one seasons",
        false,
        0.6666666666666666,
        true,
    ),
    (
        Normalizer::TriviaQa,
        &["one season", "one"],
        "one seasons",
        false,
        0.6666666666666666,
        true,
    ),
];

#[test]
fn em_f1_and_has_answer_match_python() {
    for &(normalizer, refs, pred, em, f1, has) in METRICS {
        let targets: Vec<String> = refs.iter().map(|r| normalizer.normalize(r)).collect();
        let p = normalizer.normalize(pred);
        let got_em = metric_max_over_ground_truths(exact_match, &targets, &p);
        let got_f1 = metric_max_over_ground_truths(f1_score, &targets, &p);
        assert_eq!(got_em, Some(em), "{normalizer} EM {refs:?} vs {pred:?}");
        assert_eq!(got_f1, Some(f1), "{normalizer} F1 {refs:?} vs {pred:?}");
        assert_eq!(
            has_answer(refs, pred),
            has,
            "has_answer {refs:?} in {pred:?}"
        );

        let example = QaExample {
            id: "q".into(),
            question: "?".into(),
            answers: refs.iter().map(|s| s.to_string()).collect(),
        };
        let scores = score_examples(&[Prediction::new(pred)], &[example], normalizer);
        let row = scores.map(|s| s.rows[0].clone());
        assert_eq!(
            row.as_ref().map(|r| (r.em, r.f1, r.has_answer)),
            Ok((em, f1, has))
        );
    }
}

#[test]
fn python_whitespace_and_word_sets() {
    for c in [
        '\u{1c}', '\u{1f}', '\u{85}', '\u{a0}', '\u{2007}', '\u{202f}', '\u{3000}',
    ] {
        assert!(is_py_space(c), "{c:?}");
    }
    for c in ['\u{200b}', '\u{180e}', '\u{feff}', 'a'] {
        assert!(!is_py_space(c), "{c:?}");
    }
    for c in ['a', '_', '9', 'é', '東', '½', '²', 'Ⅰ'] {
        assert!(is_py_word(c), "{c:?}");
    }
    for c in ['\u{301}', '\u{345}', '-', ' ', '\u{200b}', '’'] {
        assert!(!is_py_word(c), "{c:?}");
    }
    let punct: String = (0u8..128)
        .map(char::from)
        .filter(|&c| is_ascii_punct(c))
        .collect();
    assert_eq!(punct, "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~");
}

#[test]
fn f1_follows_counter_semantics() {
    assert_eq!(f1_score("a b", ""), 0.0);
    assert_eq!(f1_score("", ""), 0.0);
    assert_eq!(f1_score("x x y", "x y y"), 2.0 / 3.0);
    assert_eq!(f1_score("a\u{a0}b", "b a"), 1.0);
}

#[test]
fn pairwise_sum_is_numpys() {
    // 0.1 added 10 times: naive left-to-right gives 0.9999999999999999; NumPy's 8-way
    // unrolled block gives 1.0.
    let v = vec![0.1; 10];
    assert_eq!(v.iter().sum::<f64>(), 0.9999999999999999);
    assert_eq!(pairwise_sum(&v), 1.0);
    assert_eq!(pairwise_sum(&[]), 0.0);
    assert!(numpy_mean(&[]).is_nan());
    // Beyond one block: split at a multiple of 8 near the middle.
    let w: Vec<f64> = (0..1000).map(|i| 1.0 / f64::from(i + 1)).collect();
    let (a, b) = w.split_at(496);
    assert_eq!(pairwise_sum(&w), pairwise_sum(a) + pairwise_sum(b));
}

#[test]
fn qa_metrics_mirrors_python_and_its_errors() {
    let targets = vec![vec!["beatles"], vec!["x", "y z"], vec![""]];
    let m = qa_metrics(&targets, &["beatles", "z", ""]);
    assert_eq!(
        m,
        Ok(QaMetrics {
            em: 2.0 / 3.0 * 100.0,
            f1: (1.0 + 2.0 / 3.0 + 0.0) / 3.0 * 100.0,
        })
    );
    assert_eq!(
        qa_metrics(&targets, &["a"]),
        Err(EvalError::LengthMismatch {
            predictions: 1,
            references: 3
        })
    );
    let empty: Vec<Vec<&str>> = vec![vec![]];
    assert!(matches!(
        qa_metrics(&empty, &["a"]),
        Err(EvalError::NoReferences { index: 0, .. })
    ));
    let none: Vec<Vec<&str>> = vec![];
    assert_eq!(
        qa_metrics(&none, &[] as &[&str]),
        Err(EvalError::NoExamples)
    );
}

fn example(id: &str, answers: &[&str]) -> QaExample {
    QaExample {
        id: id.into(),
        question: "?".into(),
        answers: answers.iter().map(|s| s.to_string()).collect(),
    }
}

#[test]
fn score_examples_rows_recall_and_aggregates() {
    let refs = [
        example("0", &["Paris"]),
        example("1", &["Sunset Blvd", "Sunset Boulevard"]),
    ];
    let preds = [
        Prediction {
            id: Some("0".into()),
            text: "Lyon".into(),
            candidates: vec!["Lyon".into(), "Marseille".into(), "the Paris".into()],
        },
        Prediction {
            id: None,
            text: "sunset boulevard!".into(),
            candidates: vec![],
        },
    ];
    let opts = ScoreOptions {
        normalizer: Normalizer::Squad,
        recall_ks: vec![1, 2, 3, 10],
    };
    let s = match score_examples_with(&preds, &refs, &opts) {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(s.rows[0].recall_hits, [false, false, true, true]);
    assert_eq!(s.rows[1].recall_hits, [true, true, true, true]);
    assert_eq!(s.rows[1].normalized_prediction, "sunset boulevard");
    assert!(s.rows[1].em && s.rows[1].has_answer && s.rows[1].efficientqa_em);
    assert_eq!(s.aggregate.em, 50.0);
    assert_eq!(s.aggregate.f1, 50.0);
    assert_eq!(
        s.aggregate.recall_at_k,
        [(1, 50.0), (2, 50.0), (3, 100.0), (10, 100.0)]
    );
}

#[test]
fn single_question_helpers() {
    let refs = ["Sunset Blvd", "Sunset Boulevard"];
    let beams = ["sunset strip", "the sunset boulevard", "x"];
    assert!(!recall_at_k(&beams, &refs, 1, Normalizer::Squad));
    assert!(recall_at_k(&beams, &refs, 2, Normalizer::Squad));
    assert!(recall_at_k(&beams, &refs, 10, Normalizer::Squad));
    assert!(!recall_at_k(&beams, &refs, 0, Normalizer::Squad));
    assert!(efficientqa_exact_match("Ro\u{308}ntgen", &["Röntgen"]));
    assert!(!efficientqa_exact_match("Rontgen", &["Röntgen"]));
}

#[test]
fn score_examples_errors() {
    let refs = [example("a", &["x"])];
    let bad_id = Prediction {
        id: Some("b".into()),
        ..Prediction::new("x")
    };
    assert_eq!(
        score_examples(&[bad_id], &refs, Normalizer::Squad).err(),
        Some(EvalError::IdMismatch {
            index: 0,
            prediction: "b".into(),
            reference: "a".into()
        })
    );
    assert!(matches!(
        score_examples(&[], &refs, Normalizer::Squad),
        Err(EvalError::LengthMismatch { .. })
    ));
    assert_eq!(
        score_examples(&[], &[], Normalizer::Squad).err(),
        Some(EvalError::NoExamples)
    );
    let no_answers = [example("a", &[])];
    assert!(matches!(
        score_examples(&[Prediction::new("x")], &no_answers, Normalizer::Squad),
        Err(EvalError::NoReferences { .. })
    ));
    let opts = ScoreOptions {
        normalizer: Normalizer::Squad,
        recall_ks: vec![0],
    };
    assert_eq!(
        score_examples_with(&[Prediction::new("x")], &refs, &opts).err(),
        Some(EvalError::InvalidK)
    );
}

#[test]
fn normalizer_names_and_defaults() {
    use crate::data::Benchmark;
    for n in Normalizer::ALL {
        assert_eq!(n.name().parse::<Normalizer>(), Ok(n));
    }
    assert_eq!("TriviaQA".parse::<Normalizer>(), Ok(Normalizer::TriviaQa));
    assert!("bleu".parse::<Normalizer>().is_err());
    assert_eq!(
        Normalizer::for_benchmark(Benchmark::TriviaQa),
        Normalizer::TriviaQa
    );
    assert_eq!(
        Normalizer::for_benchmark(Benchmark::NaturalQuestions),
        Normalizer::Squad
    );
    assert_eq!(
        Normalizer::for_benchmark(Benchmark::WebQuestions),
        Normalizer::Squad
    );
}
