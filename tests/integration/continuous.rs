//! Continuous batching (`generate::Stream`): questions that join a running batch at later steps,
//! and questions that leave it early, get exactly the tokens transformers' `generate` gives them
//! (greedy and beam-4), on every backend over cbqa's exports; an optimum export refuses to join
//! a running batch, with a clear error.

use crate::runtime::{
    assert_beam4, beam_opts, cbqa_export, greedy_opts, optimum_export, reference, Reference,
};
use cbqa::generate::{GenerateOptions, Hypothesis, Stream};
use cbqa::runtime::{EncoderInput, OnnxDir, Seq2Seq};

const FIXTURES: [&str; 2] = ["t5_v1_0", "t5_v1_1"];

/// Row `i` of the reference batch, without its padding.
fn row(r: &Reference, i: usize) -> Vec<u32> {
    let len = r.input.len;
    let ids = &r.input.ids[i * len..(i + 1) * len];
    let mask = &r.input.mask[i * len..(i + 1) * len];
    ids.iter()
        .zip(mask)
        .filter(|(_, &m)| m == 1)
        .map(|(&t, _)| t as u32)
        .collect()
}

/// Decode the reference questions with row `i` joining the running batch after
/// `joins_after[i]` steps of it (rows joining at the same step join together), and question
/// `leaves` (if any) removed after 2 steps. Per row, its hypotheses (empty for the one removed).
fn staggered<B: Seq2Seq>(
    backend: &B,
    r: &Reference,
    opts: &GenerateOptions,
    joins_after: &[usize],
    leaves: Option<usize>,
) -> Vec<Vec<Hypothesis>> {
    let mut stream = Stream::new(backend, opts).unwrap();
    let mut out = vec![Vec::new(); r.input.batch];
    let mut step = 0;
    loop {
        let joining: Vec<usize> = (0..r.input.batch)
            .filter(|&i| joins_after[i] == step)
            .collect();
        let mut finished = Vec::new();
        if !joining.is_empty() {
            let seqs: Vec<Vec<u32>> = joining.iter().map(|&i| row(r, i)).collect();
            let input = EncoderInput::from_sequences(&seqs, opts.pad_token_id);
            finished.extend(stream.admit(&input, joining).unwrap());
        }
        if step == 2 {
            if let Some(gone) = leaves {
                assert_eq!(stream.remove(|&k| k == gone).unwrap(), vec![gone]);
            }
        }
        let waiting = joins_after.iter().any(|&j| j > step);
        if stream.is_empty() && !waiting {
            for (i, h) in finished {
                out[i] = h;
            }
            return out;
        }
        finished.extend(stream.step().unwrap());
        for (i, h) in finished {
            out[i] = h;
        }
        step += 1;
    }
}

/// Staggered joins (and one question leaving) give every row transformers' tokens, greedy and
/// beam-4, and beam scores within 1e-4.
fn check_joins<B: Seq2Seq>(backend: &B, name: &str, what: &str) {
    assert!(backend.joins_any_position(), "{what}: cannot join");
    let r = reference(name);
    let n = r.input.batch;
    assert!(n >= 3, "{name}: the reference batch has {n} rows");
    // row 0 first, row 1 after one step, the others together after three
    let joins: Vec<usize> = (0..n).map(|i| [0, 1, 3][i.min(2)]).collect();
    let got = staggered(backend, &r, &greedy_opts(), &joins, None);
    for (i, (g, want)) in got.iter().zip(&r.greedy).enumerate() {
        assert_eq!(&g[0].tokens, want, "{what} {name}: greedy row {i}");
    }
    let got = staggered(backend, &r, &beam_opts(), &joins, Some(1));
    // question 1 was removed after two steps
    let max_diff = assert_beam4(&got, &r, &format!("{what} {name}"), &[1]);
    eprintln!("{what} {name}: staggered joins identical, max beam score diff {max_diff:.2e}");
}

#[test]
fn ort_questions_joining_a_running_batch_decode_as_alone() {
    for name in FIXTURES {
        let dir = OnnxDir::open(&cbqa_export(name)).unwrap();
        let backend = cbqa::runtime::ort::OrtSeq2Seq::load(&dir, &Default::default()).unwrap();
        check_joins(&backend, name, "ort");
    }
}

#[test]
fn tract_questions_joining_a_running_batch_decode_as_alone() {
    for name in FIXTURES {
        let dir = OnnxDir::open(&cbqa_export(name)).unwrap();
        let backend = cbqa::runtime::tract::TractSeq2Seq::load(&dir).unwrap();
        check_joins(&backend, name, "tract");
    }
}

#[cfg(feature = "train")]
#[test]
fn tch_questions_joining_a_running_batch_decode_as_alone() {
    for name in FIXTURES {
        let dir = cbqa::ModelDir::open(&crate::common::fixture(name)).unwrap();
        let backend = cbqa::runtime::tch::TchSeq2Seq::load(&dir, tch::Device::Cpu).unwrap();
        check_joins(&backend, name, "tch");
    }
}

#[test]
fn an_optimum_export_does_not_join_a_running_batch() {
    let dir = OnnxDir::open(&optimum_export("t5_v1_0")).unwrap();
    let backend = cbqa::runtime::ort::OrtSeq2Seq::load(&dir, &Default::default()).unwrap();
    assert!(!backend.joins_any_position());
    let r = reference("t5_v1_0");
    let opts = greedy_opts();
    let mut stream = Stream::new(&backend, &opts).unwrap();
    let one = |i| EncoderInput::from_sequences(&[row(&r, i)], opts.pad_token_id);
    assert!(stream.can_admit());
    stream.admit(&one(0), vec![0]).unwrap();
    stream.step().unwrap();
    assert!(!stream.can_admit());
    let err = stream.admit(&one(1), vec![1]).unwrap_err().to_string();
    assert!(err.contains("cannot add questions"), "{err}");
    // the running question is not disturbed: it still decodes as transformers does
    let mut done = Vec::new();
    while !stream.is_empty() {
        done.extend(stream.step().unwrap());
    }
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].1[0].tokens, r.greedy[0]);
}
