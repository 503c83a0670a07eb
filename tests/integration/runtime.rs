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
    if out.join("decoder_with_past_model.onnx").exists() {
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
    let mut max_diff = 0f32;
    for (q, hyps) in got.iter().enumerate() {
        assert_eq!(hyps.len(), 4, "{what} {name}: question {q}");
        for (k, h) in hyps.iter().enumerate() {
            let j = q * 4 + k;
            assert_eq!(
                h.tokens, r.beam[j],
                "{what} {name}: beam question {q} candidate {k}"
            );
            max_diff = max_diff.max((h.score - r.beam_scores[j]).abs());
        }
    }
    assert!(
        max_diff <= 1e-4,
        "{what} {name}: beam scores differ by {max_diff}"
    );
    eprintln!("{what} {name}: greedy and beam-4 identical, max beam score diff {max_diff:.2e}");
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

/// The CPU default maps `model.onnx_data` once and hands the weights to all three sessions;
/// the result must be bit-identical to ONNX Runtime loading each graph's weights itself, also
/// after the mapped pages were dropped (they are, once loading ends).
#[test]
fn ort_shared_weights_give_the_same_logits_as_ort_own_loading() {
    use cbqa::runtime::ort::{OrtOptions, OrtSeq2Seq};
    for name in FIXTURES {
        let dir = OnnxDir::open(&cbqa_export(name)).unwrap();
        let shared = OrtSeq2Seq::load(&dir, &OrtOptions::default()).unwrap();
        let own = OrtSeq2Seq::load(
            &dir,
            &OrtOptions {
                share_weights: false,
                ..Default::default()
            },
        )
        .unwrap();
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
