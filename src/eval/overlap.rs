//! Test/train overlap after Lewis, Stenetorp & Riedel (2021), "Question and Answer Test-Train
//! Overlap in Open-Domain Question Answering Datasets" (EACL): test questions are split into
//!
//! * **question overlap**: the question (normalised) also occurs in the training data;
//! * **answer overlap only**: no question overlap, but some reference answer (normalised) is the
//!   answer of a training question;
//! * **no overlap**: neither.
//!
//! Lewis et al. marked paraphrased questions by hand on a sample; here question overlap is exact
//! match after SQuAD normalisation, so paraphrases count as "answer overlap only". Answers are
//! compared with the benchmark's own normaliser, as the metrics are.

use super::{numpy_mean, ExampleScore, Normalizer};
use crate::data::QaExample;
use std::collections::HashSet;

/// The overlap class of one test question.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OverlapClass {
    Question,
    AnswerOnly,
    None,
}

impl OverlapClass {
    /// Name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            OverlapClass::Question => "question_overlap",
            OverlapClass::AnswerOnly => "answer_overlap_only",
            OverlapClass::None => "no_overlap",
        }
    }
    pub const ALL: [OverlapClass; 3] = [
        OverlapClass::Question,
        OverlapClass::AnswerOnly,
        OverlapClass::None,
    ];
}

/// Classify every test example against the training set.
pub fn classify(test: &[QaExample], train: &[QaExample], answers: Normalizer) -> Vec<OverlapClass> {
    let questions: HashSet<String> = train
        .iter()
        .map(|e| Normalizer::Squad.normalize(&e.question))
        .collect();
    let train_answers: HashSet<String> = train
        .iter()
        .flat_map(|e| e.answers.iter().map(|a| answers.normalize(a)))
        .filter(|a| !a.is_empty())
        .collect();
    test.iter()
        .map(|e| {
            if questions.contains(&Normalizer::Squad.normalize(&e.question)) {
                OverlapClass::Question
            } else if e
                .answers
                .iter()
                .any(|a| train_answers.contains(&answers.normalize(a)))
            {
                OverlapClass::AnswerOnly
            } else {
                OverlapClass::None
            }
        })
        .collect()
}

/// (class, count, EM ×100, F1 ×100) for each class; classes without examples have NaN scores.
pub fn subset_metrics(
    rows: &[ExampleScore],
    classes: &[OverlapClass],
) -> Vec<(OverlapClass, usize, f64, f64)> {
    OverlapClass::ALL
        .iter()
        .map(|&c| {
            let (em, f1): (Vec<f64>, Vec<f64>) = rows
                .iter()
                .zip(classes)
                .filter(|(_, k)| **k == c)
                .map(|(r, _)| (if r.em { 100.0 } else { 0.0 }, r.f1 * 100.0))
                .unzip();
            let n = em.len();
            if n == 0 {
                (c, 0, f64::NAN, f64::NAN)
            } else {
                (c, n, numpy_mean(&em), numpy_mean(&f1))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(q: &str, a: &[&str]) -> QaExample {
        QaExample {
            id: q.into(),
            question: q.into(),
            answers: a.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn classes_follow_lewis_et_al() {
        let train = [
            ex("Who wrote Hamlet?", &["William Shakespeare"]),
            ex("capital of france", &["Paris"]),
        ];
        let test = [
            ex("who wrote hamlet", &["Shakespeare"]),
            ex("where is the eiffel tower", &["paris"]),
            ex("who painted the mona lisa", &["Leonardo da Vinci"]),
        ];
        let c = classify(&test, &train, Normalizer::Squad);
        assert_eq!(
            c,
            vec![
                OverlapClass::Question,
                OverlapClass::AnswerOnly,
                OverlapClass::None
            ]
        );
    }
}
