//! Scoring speed on the largest eval set: all 11,313 TriviaQA test questions (14 aliases on
//! average) against deterministic predictions, single-threaded.
//!
//! Data: `$CBQA_DATA_DIR` or `$CARGO_MANIFEST_DIR/../shared/data`.

use std::hint::black_box;
use std::path::{Path, PathBuf};

use criterion::{criterion_group, criterion_main, Criterion};

use cbqa::data::{Dataset, QaExample, ReadOptions};
use cbqa::eval::{score_examples_with, NormBuffers, Normalizer, Prediction, ScoreOptions};

fn triviaqa_test() -> Vec<QaExample> {
    let dir = std::env::var_os("CBQA_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data"));
    let path = dir.join("triviaqa/topics.dpr.trivia.test.txt");
    match Dataset::read(&path, &ReadOptions::default()) {
        Ok(ds) => ds.examples,
        Err(e) => panic!("{e} (set CBQA_DATA_DIR to the shared data folder)"),
    }
}

/// A realistic mix: a third exact aliases, a third decorated aliases, a third wrong answers;
/// five beam candidates each.
fn predictions(examples: &[QaExample]) -> Vec<Prediction> {
    let n = examples.len();
    examples
        .iter()
        .enumerate()
        .map(|(i, ex)| {
            let alias = &ex.answers[i % ex.answers.len()];
            let wrong = &examples[(i * 7919 + 13) % n].answers[0];
            let text = match i % 3 {
                0 => alias.clone(),
                1 => format!("The {}.", alias.to_uppercase()),
                _ => wrong.clone(),
            };
            let candidates = vec![
                text.clone(),
                wrong.clone(),
                alias.to_lowercase(),
                "x".into(),
                "y".into(),
            ];
            Prediction {
                id: None,
                text,
                candidates,
            }
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let refs = triviaqa_test();
    let preds = predictions(&refs);
    let aliases: usize = refs.iter().map(|e| e.answers.len()).sum();
    eprintln!("{} questions, {aliases} aliases", refs.len());

    let opts = ScoreOptions {
        normalizer: Normalizer::TriviaQa,
        recall_ks: vec![1, 5],
    };
    let mut group = c.benchmark_group("triviaqa_test");
    group.sample_size(20);
    group.bench_function(
        "score_examples (EM, F1, has_answer, EfficientQA EM, recall@k)",
        |b| b.iter(|| score_examples_with(black_box(&preds), black_box(&refs), &opts)),
    );
    group.bench_function("normalize all aliases (trivia_qa)", |b| {
        let mut buf = NormBuffers::default();
        let mut out = String::new();
        b.iter(|| {
            let mut total = 0;
            for a in refs.iter().flat_map(|e| &e.answers) {
                Normalizer::TriviaQa.normalize_into(black_box(a), &mut buf, &mut out);
                total += out.len();
            }
            total
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
