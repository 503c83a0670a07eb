//! Every backend × {greedy, beam-4} × {v1.0, T5.1.1} against transformers' `generate`
//! on padded batches of mixed lengths, over optimum's own exports of the fixtures.

use crate::common::*;
use cbqa::generate::{generate, EarlyStopping, GenerateOptions, Hypothesis};
use cbqa::runtime::{EncoderInput, OnnxDir, Seq2Seq};
use std::path::PathBuf;
use std::sync::Mutex;

const FIXTURES: [&str; 2] = ["t5_v1_0", "t5_v1_1"];

/// optimum's ONNX export of a fixture (made once per checkout, under target/).
pub fn optimum_export(name: &str) -> PathBuf {
    static LOCK: Mutex<()> = Mutex::new(());
    let _g = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let out = root()
        .join("target")
        .join("test-exports")
        .join("optimum")
        .join(name);
    if out.join("decoder_with_past_model.onnx").exists() {
        return out;
    }
    let cli = root().join(".venv").join("bin").join("optimum-cli");
    assert!(
        cli.exists(),
        "{} not found: run scripts/setup.sh (installs optimum-onnx)",
        cli.display()
    );
    let tmp = out.with_extension("tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    let st = std::process::Command::new(&cli)
        .args(["export", "onnx", "--model"])
        .arg(fixture(name))
        .args([
            "--task",
            "text2text-generation-with-past",
            "--no-post-process",
        ])
        .arg(&tmp)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .expect("cannot run optimum-cli");
    assert!(
        tmp.join("decoder_with_past_model.onnx").exists(),
        "optimum-cli export failed:\n{}",
        String::from_utf8_lossy(&st.stderr)
    );
    std::fs::rename(&tmp, &out).unwrap();
    out
}

/// cbqa's own export of a fixture (made once per checkout, under target/; not validated here,
/// the export tests do that).
pub fn cbqa_export(name: &str) -> PathBuf {
    static LOCK: Mutex<()> = Mutex::new(());
    let _g = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let out = root()
        .join("target")
        .join("test-exports")
        .join("cbqa")
        .join(name);
    // An export made before the masked decoder existed is made again.
    if out.join(cbqa::export::DECODER_WITH_PAST_MASKED).exists() {
        return out;
    }
    let mut opts = cbqa::export::ExportOptions::new(fixture(name), &out);
    opts.force = true;
    cbqa::export::export(&opts).unwrap();
    out
}

pub struct Reference {
    pub input: EncoderInput,
    pub greedy: Vec<Vec<u32>>,
    pub beam: Vec<Vec<u32>>,
    pub beam_scores: Vec<f32>,
}

fn trim(seq: &[i64], eos: i64) -> Vec<u32> {
    // drop the decoder start token; stop after EOS (transformers pads after it)
    let mut out = Vec::new();
    for &t in &seq[1..] {
        out.push(t as u32);
        if t == eos {
            break;
        }
    }
    out
}

pub fn reference(name: &str) -> Reference {
    let bytes = std::fs::read(fixture(name).join("reference.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let i64s = |n: &str| -> (Vec<i64>, Vec<usize>) {
        let t = st.tensor(n).unwrap();
        (
            t.data()
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            t.shape().to_vec(),
        )
    };
    let (ids, shape) = i64s("input_ids");
    let (mask, _) = i64s("attention_mask");
    let rows = |n: &str| {
        let (d, s) = i64s(n);
        d.chunks(s[1]).map(|r| trim(r, 1)).collect::<Vec<_>>()
    };
    let scores = st.tensor("beam4_scores").unwrap();
    Reference {
        input: EncoderInput {
            ids,
            mask,
            batch: shape[0],
            len: shape[1],
        },
        greedy: rows("greedy_sequences"),
        beam: rows("beam4_sequences"),
        beam_scores: scores
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect(),
    }
}

pub fn greedy_opts() -> GenerateOptions {
    GenerateOptions {
        max_new_tokens: 12,
        ..Default::default()
    }
}

pub fn beam_opts() -> GenerateOptions {
    GenerateOptions {
        max_new_tokens: 12,
        num_beams: 4,
        num_return_sequences: 4,
        early_stopping: EarlyStopping::True,
        ..Default::default()
    }
}

/// The parity suite, written once and run on every backend.
pub fn check_parity<B: Seq2Seq>(backend: &B, name: &str, what: &str) {
    let r = reference(name);
    let got: Vec<Vec<Hypothesis>> = generate(backend, &r.input, &greedy_opts()).unwrap();
    for (i, (g, want)) in got.iter().zip(&r.greedy).enumerate() {
        assert_eq!(&g[0].tokens, want, "{what} {name}: greedy row {i}");
    }
    let got = generate(backend, &r.input, &beam_opts()).unwrap();
    let max_diff = assert_beam4(&got, &r, &format!("{what} {name}"), &[]);
    eprintln!("{what} {name}: greedy and beam-4 identical, max beam score diff {max_diff:.2e}");
}

/// Every question's four beam-4 hypotheses have transformers' tokens and scores within 1e-4,
/// except the questions in `skip` (which have none); returns the largest score difference.
pub fn assert_beam4(got: &[Vec<Hypothesis>], r: &Reference, what: &str, skip: &[usize]) -> f32 {
    let mut max_diff = 0f32;
    for (q, hyps) in got.iter().enumerate() {
        if skip.contains(&q) {
            assert!(hyps.is_empty(), "{what}: question {q} has hypotheses");
            continue;
        }
        assert_eq!(hyps.len(), 4, "{what}: question {q}");
        for (k, h) in hyps.iter().enumerate() {
            let j = q * 4 + k;
            assert_eq!(
                h.tokens, r.beam[j],
                "{what}: beam question {q} candidate {k}"
            );
            max_diff = max_diff.max((h.score - r.beam_scores[j]).abs());
        }
    }
    assert!(max_diff <= 1e-4, "{what}: beam scores differ by {max_diff}");
    max_diff
}

#[test]
fn ort_matches_transformers_on_optimum_exports() {
    for name in FIXTURES {
        let dir = OnnxDir::open(&optimum_export(name)).unwrap();
        let backend = cbqa::runtime::ort::OrtSeq2Seq::load(&dir, &Default::default()).unwrap();
        check_parity(&backend, name, "ort/optimum");
    }
}

#[test]
fn tract_matches_transformers_on_optimum_exports() {
    for name in FIXTURES {
        let dir = OnnxDir::open(&optimum_export(name)).unwrap();
        let backend = cbqa::runtime::tract::TractSeq2Seq::load(&dir).unwrap();
        check_parity(&backend, name, "tract/optimum");
    }
}

#[test]
fn ort_matches_transformers_on_cbqa_exports() {
    for name in FIXTURES {
        let dir = OnnxDir::open(&cbqa_export(name)).unwrap();
        let backend = cbqa::runtime::ort::OrtSeq2Seq::load(&dir, &Default::default()).unwrap();
        check_parity(&backend, name, "ort/cbqa");
    }
}

#[test]
fn tract_matches_transformers_on_cbqa_exports() {
    for name in FIXTURES {
        let dir = OnnxDir::open(&cbqa_export(name)).unwrap();
        let backend = cbqa::runtime::tract::TractSeq2Seq::load(&dir).unwrap();
        check_parity(&backend, name, "tract/cbqa");
    }
}

#[cfg(feature = "train")]
#[test]
fn tch_matches_transformers_through_the_same_decoding() {
    for name in FIXTURES {
        let dir = cbqa::ModelDir::open(&fixture(name)).unwrap();
        let backend = cbqa::runtime::tch::TchSeq2Seq::load(&dir, tch::Device::Cpu).unwrap();
        check_parity(&backend, name, "tch");
    }
}

/// ONNX Runtime on `dir` with the default options, and with `other`.
fn ort_default_and(
    dir: &OnnxDir,
    other: cbqa::runtime::ort::OrtOptions,
) -> (
    cbqa::runtime::ort::OrtSeq2Seq,
    cbqa::runtime::ort::OrtSeq2Seq,
) {
    use cbqa::runtime::ort::OrtSeq2Seq;
    let default = OrtSeq2Seq::load(dir, &Default::default()).unwrap();
    (default, OrtSeq2Seq::load(dir, &other).unwrap())
}

/// The CPU default maps `model.onnx_data` once and hands the weights to all three sessions;
/// the result must be bit-identical to ONNX Runtime loading each graph's weights itself, also
/// after the mapped pages were dropped (they are, once loading ends).
#[test]
fn ort_shared_weights_give_the_same_logits_as_ort_own_loading() {
    use cbqa::runtime::ort::OrtOptions;
    for name in FIXTURES {
        let dir = OnnxDir::open(&cbqa_export(name)).unwrap();
        let (shared, own) = ort_default_and(
            &dir,
            OrtOptions {
                share_weights: false,
                ..Default::default()
            },
        );
        assert!(
            shared.describe().contains("shared-weights="),
            "{}",
            shared.describe()
        );
        assert!(
            !own.describe().contains("shared-weights="),
            "{}",
            own.describe()
        );
        let input = reference(name).input;
        let rows = input.batch;
        let (mut a, mut b) = (shared.encode(&input).unwrap(), own.encode(&input).unwrap());
        let mut tokens = vec![0i64; rows];
        for step in 0..4 {
            let (la, sa) = shared.step(a, &tokens).unwrap();
            let (lb, sb) = own.step(b, &tokens).unwrap();
            assert_eq!(la.data, lb.data, "{name}: logits differ at step {step}");
            // feed back each row's argmax, so the steps see varied tokens
            tokens = (0..rows)
                .map(|r| {
                    let row = la.row(r);
                    (0..row.len())
                        .max_by(|&i, &j| row[i].total_cmp(&row[j]))
                        .unwrap() as i64
                })
                .collect();
            (a, b) = (sa, sb);
        }
    }
}

/// Rows kept before each step of [`logits_through_selections`]: repeated (new sources),
/// reordered within their question (the same sources), one question dropped (its padding may be
/// trimmed), the questions swapped (as many rows, other sources).
const SELECTIONS: [&[usize]; 7] = [
    &[0, 1, 2],
    &[0, 0, 1, 1, 2, 2],
    &[1, 0, 3, 2, 5, 4],
    &[0, 1, 2, 3, 4, 5],
    &[2, 3, 4, 5],
    &[1, 0, 2, 3],
    &[3, 2, 1, 0],
];

/// The logits of every step of `input` (three questions) through [`SELECTIONS`], then joined
/// with a fresh state of the same questions at the same position, stepped, selected and
/// stepped again.
fn logits_through_selections<B: Seq2Seq>(
    b: &B,
    input: &EncoderInput,
) -> Vec<cbqa::runtime::Logits> {
    let mut state = b.encode(input).unwrap();
    let mut tokens = vec![0i64; input.batch];
    let mut all = Vec::new();
    for rows in SELECTIONS {
        state = b.select(state, rows).unwrap();
        tokens = rows.iter().map(|&r| tokens[r]).collect();
        let (logits, next) = b.step(state, &tokens).unwrap();
        tokens = argmax_tokens(&logits);
        all.push(logits);
        state = next;
    }
    let (other, other_tokens, _) = steps(b, b.encode(input).unwrap(), vec![0; 3], SELECTIONS.len());
    let joined = b.concat(state, other).unwrap();
    tokens.extend(other_tokens);
    let (logits, state) = b.step(joined, &tokens).unwrap();
    all.push(logits);
    let rows = [4, 0, 1, 6];
    let state = b.select(state, &rows).unwrap();
    all.push(b.step(state, &rows.map(|r| tokens[r])).unwrap().0);
    all
}

/// On the CPU, ONNX Runtime writes each step's self-attention cache into blocks the state owns
/// (`ort_cache.rs`), and a row selection that keeps every row's question gathers only the self
/// caches. Through beam-like selections and a join, the logits must be bit-identical to ONNX
/// Runtime allocating every output, and agree with tract (which gathers every state tensor);
/// greedy and beam-4 answers must be identical.
#[test]
fn ort_caches_written_in_place_decode_as_ort_allocated_ones() {
    use cbqa::runtime::ort::OrtOptions;
    for name in FIXTURES {
        let dir = OnnxDir::open(&cbqa_export(name)).unwrap();
        let (in_place, allocated) = ort_default_and(
            &dir,
            OrtOptions {
                cache_in_place: false,
                ..Default::default()
            },
        );
        let tract = cbqa::runtime::tract::TractSeq2Seq::load(&dir).unwrap();
        let input = questions(name, 0..3);
        let a = logits_through_selections(&in_place, &input);
        let b = logits_through_selections(&allocated, &input);
        let t = logits_through_selections(&tract, &input);
        for (step, ((a, b), t)) in a.iter().zip(&b).zip(&t).enumerate() {
            let what = format!("{name}: step {step}");
            assert!(
                a.data == b.data,
                "{what}: in place and allocated logits differ"
            );
            let d = row_diff(a, 0..a.rows, t, &what);
            assert!(d <= 1e-4, "{what}: onnxruntime vs tract {d:.2e}");
        }
        for beams in [1, 4] {
            let opts = GenerateOptions {
                num_beams: beams,
                num_return_sequences: beams,
                max_new_tokens: 12,
                ..Default::default()
            };
            let input = questions(name, 0..4);
            let a = generate(&in_place, &input, &opts).unwrap();
            let b = generate(&allocated, &input, &opts).unwrap();
            assert_eq!(a, b, "{name}: beams {beams}");
            assert!(a.iter().all(|h| h.len() == beams), "{name}: {a:?}");
        }
    }
}

/// Weights that lie past the end of the data file are refused before ONNX Runtime sees them,
/// naming the graph and the tensor.
#[test]
fn ort_names_the_tensor_when_the_weight_file_is_short() {
    let src = cbqa_export("t5_v1_0");
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&src, tmp.path());
    let data = tmp.path().join("model.onnx_data");
    let len = std::fs::metadata(&data).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&data)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let dir = OnnxDir::open(tmp.path()).unwrap();
    let err = cbqa::runtime::ort::OrtSeq2Seq::load(&dir, &Default::default())
        .err()
        .expect("a truncated model.onnx_data must be refused")
        .to_string();
    // the decoder's weights lie in the second half of the file
    assert!(
        err.contains("decoder_model.onnx: tensor `decoder.")
            && err.contains("past the end of")
            && err.contains("model.onnx_data"),
        "{err}"
    );
}

/// A failure inside ONNX Runtime keeps ONNX Runtime's own error as the `source`, with its code
/// (here: int64 token ids given as floats to the encoder, through the graph-level call).
#[test]
fn ort_failure_keeps_the_ort_error_as_source() {
    use cbqa::runtime::{Backend, BackendOptions, GraphInput};
    use std::error::Error as _;
    let dir = OnnxDir::open(&cbqa_export("t5_v1_0")).unwrap();
    let backend = Backend::load(&dir, &BackendOptions::default()).unwrap();
    let ids = ndarray::Array2::<f32>::zeros((1, 3)).into_dyn();
    let mask = ndarray::Array2::<i64>::ones((1, 3)).into_dyn();
    let e = backend
        .run_graph(
            cbqa::export::ENCODER,
            vec![
                ("input_ids".into(), GraphInput::F32(ids)),
                ("attention_mask".into(), GraphInput::I64(mask)),
            ],
        )
        .unwrap_err();
    assert!(
        matches!(
            e,
            cbqa::Error::Backend {
                backend: "onnxruntime",
                ..
            }
        ),
        "{e:?}"
    );
    let source = e.source().expect("a source");
    let ort = source
        .downcast_ref::<ort::Error>()
        .unwrap_or_else(|| panic!("source is not an ort::Error: {source:?}"));
    eprintln!("{e}: {ort} ({:?})", ort.code());
}

/// The argmax of every row (the greedy token each row feeds next).
fn argmax_tokens(logits: &cbqa::runtime::Logits) -> Vec<i64> {
    (0..logits.rows)
        .map(|r| {
            let row = logits.row(r);
            (0..row.len())
                .max_by(|&i, &j| row[i].total_cmp(&row[j]))
                .unwrap() as i64
        })
        .collect()
}

/// Step `state` `n` times from `tokens`, feeding each row's argmax; returns the state, the
/// tokens to feed next and the logits of every step.
fn steps<B: Seq2Seq>(
    b: &B,
    mut state: B::State,
    mut tokens: Vec<i64>,
    n: usize,
) -> (B::State, Vec<i64>, Vec<cbqa::runtime::Logits>) {
    let mut all = Vec::new();
    for _ in 0..n {
        let (logits, next) = b.step(state, &tokens).unwrap();
        tokens = argmax_tokens(&logits);
        all.push(logits);
        state = next;
    }
    (state, tokens, all)
}

/// The fixture's questions `rows` as their own batch (padded to their own longest).
fn questions(name: &str, rows: std::ops::Range<usize>) -> EncoderInput {
    let input = reference(name).input;
    let seqs: Vec<Vec<u32>> = rows
        .map(|r| {
            let ids = &input.ids[r * input.len..(r + 1) * input.len];
            let mask = &input.mask[r * input.len..(r + 1) * input.len];
            ids.iter()
                .zip(mask)
                .filter(|(_, &m)| m == 1)
                .map(|(&t, _)| t as u32)
                .collect()
        })
        .collect();
    EncoderInput::from_sequences(&seqs, 0)
}

/// Largest |difference| between rows `rows` of `got` and all rows of `want`, with the argmax
/// tokens required equal.
fn row_diff(
    got: &cbqa::runtime::Logits,
    rows: std::ops::Range<usize>,
    want: &cbqa::runtime::Logits,
    what: &str,
) -> f32 {
    assert_eq!(rows.len(), want.rows, "{what}: rows");
    let (g, w) = (argmax_tokens(got), argmax_tokens(want));
    assert_eq!(g[rows.clone()], w[..], "{what}: argmax tokens differ");
    let mut max = 0f32;
    for (i, r) in rows.enumerate() {
        for (a, b) in got.row(r).iter().zip(want.row(i)) {
            max = max.max((a - b).abs());
        }
    }
    max
}

/// The largest |logit| of `logits` (the scale fp32 rounding grows with).
fn scale(logits: &[cbqa::runtime::Logits]) -> f32 {
    logits
        .iter()
        .flat_map(|l| &l.data)
        .fold(0f32, |m, v| m.max(v.abs()))
}

/// Questions A (3 rows) stepped `k` times and B (2 rows, another encoder length) `j` times,
/// joined, then stepped `more` times with their own argmax tokens: every row's logits must be
/// those of A and B decoded apart. Then only B's rows are kept: the padding every kept row has is
/// trimmed (the cache shrinks to B's own length) and the logits still match. Returns the largest
/// logit difference and the largest |logit| compared.
fn check_join<B: Seq2Seq>(
    b: &B,
    name: &str,
    (k, j): (usize, usize),
    cache_len: impl Fn(&B::State) -> usize,
    what: &str,
) -> (f32, f32) {
    let (qa, qb) = (questions(name, 0..3), questions(name, 3..5));
    assert_ne!(
        qa.len, qb.len,
        "{name}: the two batches should differ in encoder length"
    );
    let more = 4;
    let start = |q: &EncoderInput| vec![0i64; q.batch];
    // Apart: A and B decoded on their own, k + more + 2 and j + more + 2 steps.
    let (_, _, want_a) = steps(b, b.encode(&qa).unwrap(), start(&qa), k + more + 2);
    let (_, _, want_b) = steps(b, b.encode(&qb).unwrap(), start(&qb), j + more + 2);
    // Joined after k and j steps.
    let (sa, ta, _) = steps(b, b.encode(&qa).unwrap(), start(&qa), k);
    let (sb, tb, _) = steps(b, b.encode(&qb).unwrap(), start(&qb), j);
    let joined = b.concat(sa, sb).unwrap();
    assert_eq!(b.rows(&joined), 5, "{what}: rows after concat");
    assert_eq!(cache_len(&joined), k.max(j), "{what}: joined cache length");
    let tokens: Vec<i64> = ta.into_iter().chain(tb).collect();
    let (joined, tokens, got) = steps(b, joined, tokens, more);
    let mut max = 0f32;
    for (s, logits) in got.iter().enumerate() {
        let at = |x: usize| format!("{what} {name}: joined step {s} (position {})", x + s);
        max = max.max(row_diff(logits, 0..3, &want_a[k + s], &at(k)));
        max = max.max(row_diff(logits, 3..5, &want_b[j + s], &at(j)));
    }
    // Only B's rows stay, one of them twice: the columns padded in all of them are trimmed.
    let before = cache_len(&joined);
    let kept = b.select(joined, &[4, 3, 4]).unwrap();
    let trimmed = before - (k.max(j) - j);
    assert_eq!(
        cache_len(&kept),
        trimmed,
        "{what}: cache length after select"
    );
    let tokens = vec![tokens[4], tokens[3], tokens[4]];
    let (_, _, got) = steps(b, kept, tokens, 2);
    for (s, logits) in got.iter().enumerate() {
        let want = &want_b[j + more + s];
        let what = format!("{what} {name}: after select, step {s}");
        let rows = |r: usize| cbqa::runtime::Logits {
            data: want.row(r).to_vec(),
            rows: 1,
            vocab: want.vocab,
        };
        max = max.max(row_diff(logits, 0..1, &rows(1), &what));
        max = max.max(row_diff(logits, 1..2, &rows(0), &what));
        max = max.max(row_diff(logits, 2..3, &rows(1), &what));
    }
    (max, scale(&want_a).max(scale(&want_b)))
}

/// The joins every backend that joins at any position must pass on fixture `name`: B behind A,
/// A behind B, and at the same position. The logits must agree to float32 rounding: 1e-6 per
/// unit of the logits' scale (`max(1, max|logit|)`; the fixtures' logits reach 17 to 42, where
/// one float32 step is 2e-6 to 4e-6: the padded, longer attention and the larger batch sum in
/// another order), and the argmax tokens exactly.
fn check_joins<B: Seq2Seq>(
    b: &B,
    cache_len: impl Fn(&B::State) -> usize + Copy,
    name: &str,
    what: &str,
) {
    assert!(b.joins_any_position(), "{what}");
    let (mut max, mut rel) = (0f32, 0f32);
    for positions in [(3, 1), (1, 4), (2, 2)] {
        let (d, scale) = check_join(b, name, positions, cache_len, what);
        max = max.max(d);
        rel = rel.max(d / scale.max(1.0));
    }
    eprintln!(
        "{what} {name}: joined states give the tokens and logits of separate runs, max abs diff \
         {max:.2e} ({rel:.2e} of the logits' scale)"
    );
    assert!(
        rel <= 1e-6,
        "{what} {name}: logits differ by {max:.2e} ({rel:.2e} of their scale) after joining"
    );
}

#[test]
fn ort_joins_states_at_any_position() {
    use cbqa::runtime::ort::{OrtSeq2Seq, OrtState};
    for name in FIXTURES {
        let dir = OnnxDir::open(&cbqa_export(name)).unwrap();
        let b = OrtSeq2Seq::load(&dir, &Default::default()).unwrap();
        check_joins(&b, OrtState::cache_len, name, "ort/cbqa");
    }
}

#[test]
fn tract_joins_states_at_any_position() {
    use cbqa::runtime::tract::{TractSeq2Seq, TractState};
    for name in FIXTURES {
        let dir = OnnxDir::open(&cbqa_export(name)).unwrap();
        let b = TractSeq2Seq::load(&dir).unwrap();
        check_joins(&b, TractState::cache_len, name, "tract/cbqa");
    }
}

#[cfg(feature = "train")]
#[test]
fn tch_joins_states_at_any_position() {
    use cbqa::runtime::tch::{TchSeq2Seq, TchState};
    for name in FIXTURES {
        let dir = cbqa::ModelDir::open(&fixture(name)).unwrap();
        let b = TchSeq2Seq::load(&dir, tch::Device::Cpu).unwrap();
        check_joins(&b, TchState::cache_len, name, "tch");
    }
}

/// An export in optimum's layout (cbqa's without the masked decoder, and optimum's own) joins
/// only states at the same position; at different positions the error names the export and
/// says to re-export.
#[test]
fn exports_without_the_masked_decoder_join_only_at_the_same_position() {
    use cbqa::runtime::{Backend, BackendKind, BackendOptions};
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&cbqa_export("t5_v1_0"), tmp.path());
    std::fs::remove_file(tmp.path().join(cbqa::export::DECODER_WITH_PAST_MASKED)).unwrap();
    let dirs = [tmp.path().to_path_buf(), optimum_export("t5_v1_0")];
    for (dir, kind) in dirs
        .iter()
        .flat_map(|d| [(d, BackendKind::Ort), (d, BackendKind::Tract)])
    {
        let what = format!("{kind:?} {}", dir.display());
        let onnx = OnnxDir::open(dir).unwrap();
        let opts = BackendOptions {
            kind,
            ..Default::default()
        };
        let b = Backend::load(&onnx, &opts).unwrap();
        assert!(!b.joins_any_position(), "{what}");
        let (qa, qb) = (questions("t5_v1_0", 0..3), questions("t5_v1_0", 3..5));
        let (sa, _, _) = steps(&b, b.encode(&qa).unwrap(), vec![0; 3], 2);
        let (sb, _, _) = steps(&b, b.encode(&qb).unwrap(), vec![0; 2], 1);
        let err = b
            .concat(sa, sb)
            .err()
            .expect("different positions")
            .to_string();
        assert!(
            err.contains(&dir.display().to_string())
                && err.contains("positions 2 and 1")
                && err.contains("cbqa export"),
            "{what}: {err}"
        );
        // The same position joins, and decodes as apart (no padding of the self cache).
        let (_, _, want_b) = steps(&b, b.encode(&qb).unwrap(), vec![0; 2], 3);
        let (sa, ta, _) = steps(&b, b.encode(&qa).unwrap(), vec![0; 3], 2);
        let (sb, tb, _) = steps(&b, b.encode(&qb).unwrap(), vec![0; 2], 2);
        let joined = b.concat(sa, sb).unwrap();
        let tokens: Vec<i64> = ta.into_iter().chain(tb).collect();
        let (logits, _) = b.step(joined, &tokens).unwrap();
        let d = row_diff(&logits, 3..5, &want_b[2], &what);
        assert!(d <= 1e-5, "{what}: {d:.2e}");
    }
}

/// ONNX Runtime decoding batches at once, one thread and one session copy each (the default of
/// `cbqa eval`; the steps a batch runs alone on the lone session, on every thread), answers
/// exactly as one batch at a time on all threads: the same texts, scores and candidates, greedy
/// and beam-4, over several batches of both fixtures.
#[test]
fn parallel_batches_answer_as_serial_batches_do() {
    use cbqa::generate::BatchPolicy;
    use cbqa::runtime::BackendOptions;
    let questions: Vec<String> = (0..11)
        .map(|i| format!("question number {i} about {}", "the moon ".repeat(i % 4)))
        .collect();
    let questions: Vec<&str> = questions.iter().map(String::as_str).collect();
    for name in ["t5_v1_0", "t5_v1_1"] {
        let model = cbqa_export(name);
        for beams in [1, 4] {
            let load = |parallel_batches: bool| {
                let opts = cbqa::AnswererOptions {
                    backend: BackendOptions {
                        threads: 2,
                        parallel_batches,
                        ..Default::default()
                    },
                    generate: GenerateOptions {
                        num_beams: beams,
                        num_return_sequences: beams.min(2),
                        ..Default::default()
                    },
                    batch: BatchPolicy {
                        max_batch_size: 3 * beams,
                        ..Default::default()
                    },
                    ..Default::default()
                };
                cbqa::Answerer::load(&model, opts).unwrap()
            };
            let (serial, parallel) = (load(false), load(true));
            assert!(
                !serial.describe().contains("at once"),
                "{}",
                serial.describe()
            );
            assert!(
                parallel
                    .describe()
                    .contains("x 2 batches at once (a batch alone: threads=2)"),
                "{}",
                parallel.describe()
            );
            let a: Vec<_> = serial
                .answer_batch(&questions)
                .into_iter()
                .map(Result::unwrap)
                .collect();
            let b: Vec<_> = parallel
                .answer_batch(&questions)
                .into_iter()
                .map(Result::unwrap)
                .collect();
            assert_eq!(a, b, "{name} beams {beams}");
            assert!(a.iter().all(|x| x.candidates.len() == beams.min(2)));
        }
    }
}
