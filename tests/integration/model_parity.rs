//! Parity of the tch T5 with transformers, on the fixtures made by scripts/make_fixtures.py:
//! encoder output and logits on right-padded batches (fp32, max abs diff ≤ 1e-4), greedy tokens,
//! cached decoding equal to the full forward pass, and a save that transformers loads back.

pub(crate) use crate::common::{fixture, python as venv_python};
use cbqa::checkpoint::expected_tensors;
use cbqa::generate::{generate, GenerateOptions};
use cbqa::model::{DecoderInput, T5};
use cbqa::runtime::tch::TchSeq2Seq;
use cbqa::runtime::EncoderInput;
use cbqa::ModelDir;
use std::collections::HashMap;
use tch::{Device, Kind, Tensor};

pub(crate) fn reference(name: &str) -> HashMap<String, Tensor> {
    Tensor::read_safetensors(fixture(name).join("reference.safetensors"))
        .unwrap()
        .into_iter()
        .collect()
}

pub(crate) fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    (a - b).abs().max().double_value(&[])
}

fn load(name: &str) -> T5 {
    let dir = ModelDir::open(&fixture(name)).unwrap();
    T5::from_model_dir(&dir, Device::Cpu, Kind::Float).unwrap()
}

/// Greedy decoding through the crate's one decoder over the tch backend, laid out as
/// transformers' `sequences`: the decoder start token, the generated tokens, and padding after
/// `</s>` to the longest row.
fn greedy_sequences(t5: T5, ids: &Tensor, mask: &Tensor, max_new_tokens: usize) -> Vec<Vec<i64>> {
    let c = &t5.config;
    let (start, pad) = (c.decoder_start_id(), c.pad_id());
    let opts = GenerateOptions {
        max_new_tokens,
        decoder_start_token_id: start,
        eos_token_id: c.eos_id(),
        pad_token_id: pad,
        ..GenerateOptions::default()
    };
    let rows = Vec::<Vec<i64>>::try_from(ids).unwrap();
    let masks = Vec::<Vec<i64>>::try_from(mask).unwrap();
    let input = EncoderInput {
        ids: rows.concat(),
        mask: masks.concat(),
        batch: rows.len(),
        len: rows[0].len(),
    };
    let backend = TchSeq2Seq::from_model(t5);
    let hyps = generate(&backend, &input, &opts).unwrap();
    let seqs: Vec<Vec<i64>> = hyps
        .iter()
        .map(|h| {
            std::iter::once(start)
                .chain(h[0].tokens.iter().copied())
                .map(i64::from)
                .collect()
        })
        .collect();
    let width = seqs.iter().map(Vec::len).max().unwrap_or(0);
    seqs.into_iter()
        .map(|mut s| {
            s.resize(width, i64::from(pad));
            s
        })
        .collect()
}

fn check_fixture(name: &str) {
    let t5 = load(name);
    let r = reference(name);
    let (ids, mask) = (&r["input_ids"], &r["attention_mask"]);
    assert!(
        mask.sum(Kind::Int64).int64_value(&[]) < mask.numel() as i64,
        "the fixture batch should be padded"
    );
    let m = t5.model();
    let _g = tch::no_grad_guard();
    let enc = m.encode(ids, mask, false).unwrap();
    let enc_diff = max_abs_diff(&enc, &r["encoder_last_hidden_state"]);
    let logits = m
        .forward(ids, mask, &r["decoder_input_ids"], false)
        .unwrap();
    let diff = max_abs_diff(&logits, &r["logits"]);
    eprintln!("{name}: encoder max abs diff {enc_diff:.3e}, logits max abs diff {diff:.3e}");
    assert!(enc_diff <= 1e-4, "{name}: encoder diff {enc_diff}");
    assert!(diff <= 1e-4, "{name}: logits diff {diff}");

    // Step-by-step decoding through the explicit cache gives the same logits up to rounding: one
    // query row at a time rounds differently from the full matmul. transformers' own cached
    // decoding differs from its full pass by exactly the same amounts on these fixtures
    // (1.24e-3 and 2.69e-3 with logits up to 50 and 391), so the bound is relative.
    let dec = &r["decoder_input_ids"];
    let mut cache = None;
    let mut steps = Vec::new();
    for t in 0..dec.size()[1] {
        let out = m
            .decode(
                DecoderInput {
                    input_ids: &dec.narrow(1, t, 1),
                    encoder_hidden_states: &enc,
                    encoder_attention_mask: mask,
                    cache,
                },
                false,
            )
            .unwrap();
        steps.push(out.logits);
        cache = Some(out.cache);
    }
    let cached = Tensor::cat(&steps, 1);
    let cdiff = max_abs_diff(&cached, &r["logits"]);
    let scale = r["logits"].abs().max().double_value(&[]);
    eprintln!("{name}: cached decoding max abs diff {cdiff:.3e} (max |logit| {scale:.1})");
    assert!(
        cdiff <= 1e-4 * scale,
        "{name}: cached decoding diff {cdiff}"
    );
    let cache = cache.unwrap();
    assert_eq!(cache.layers.len(), t5.config.decoder_layers());
    let c = &t5.config;
    let (b, s, t) = (ids.size()[0], ids.size()[1], dec.size()[1]);
    let (h, dk) = (c.num_heads as i64, c.d_kv as i64);
    assert_eq!(cache.layers[0].self_key.size(), [b, h, t, dk]);
    assert_eq!(cache.layers[0].cross_value.size(), [b, h, s, dk]);

    let greedy = greedy_sequences(t5, ids, mask, 12);
    let expected = &r["greedy_sequences"];
    assert_eq!(
        greedy,
        Vec::<Vec<i64>>::try_from(expected).unwrap(),
        "{name}: greedy tokens differ from transformers"
    );
}

#[test]
fn t5_v1_0_matches_transformers() {
    check_fixture("t5_v1_0");
}

#[test]
fn t5_v1_1_matches_transformers() {
    check_fixture("t5_v1_1");
}

#[test]
fn parameter_names_are_the_hf_names() {
    // drawing random weights takes from libtorch's global generator: not beside a training
    let _serial = crate::train::serial();
    for name in ["t5_v1_0", "t5_v1_1"] {
        let dir = ModelDir::open(&fixture(name)).unwrap();
        let t5 = T5::new(&dir.config, Device::Cpu).unwrap();
        let mut ours: Vec<(String, Vec<i64>)> = t5
            .named_parameters()
            .into_iter()
            .map(|(n, t)| (n, t.size()))
            .collect();
        ours.sort();
        let mut theirs: Vec<(String, Vec<i64>)> = expected_tensors(&dir.config)
            .into_iter()
            .map(|s| (s.name, s.shape.iter().map(|&d| d as i64).collect()))
            .collect();
        theirs.sort();
        assert_eq!(ours, theirs, "{name}");
        let mut files: Vec<String> = dir.weights.names().map(str::to_string).collect();
        files.sort();
        let names: Vec<String> = theirs.into_iter().map(|(n, _)| n).collect();
        assert_eq!(files, names, "{name}: names in the transformers-made file");
    }
}

/// The project venv's python, or a failure that says how to get it.
#[test]
fn transformers_loads_what_we_save() {
    let _serial = crate::train::serial();
    let py = venv_python();
    for name in ["t5_v1_0", "t5_v1_1"] {
        let src = fixture(name);
        let dir = ModelDir::open(&src).unwrap();
        let t5 = T5::new(&dir.config, Device::Cpu).unwrap(); // random weights, not the fixture's
        let out = tempfile::tempdir().unwrap();
        dir.config.save(out.path()).unwrap();
        t5.save_safetensors(&out.path().join("model.safetensors"))
            .unwrap();
        let r = reference(name);
        let logits = {
            let _g = tch::no_grad_guard();
            t5.model()
                .forward(
                    &r["input_ids"],
                    &r["attention_mask"],
                    &r["decoder_input_ids"],
                    false,
                )
                .unwrap()
        };
        let ours = out.path().join("ours.safetensors");
        Tensor::write_safetensors(&[("logits", &logits)], &ours).unwrap();
        let script = r#"
import sys, torch
from safetensors.torch import load_file
from transformers import T5ForConditionalGeneration
out, ref, ours = sys.argv[1], sys.argv[2], sys.argv[3]
m, info = T5ForConditionalGeneration.from_pretrained(out, output_loading_info=True)
bad = {k: v for k, v in info.items() if v}
assert not bad, f"loading info: {bad}"
m.eval()
r = load_file(ref)
with torch.no_grad():
    lg = m(input_ids=r["input_ids"], attention_mask=r["attention_mask"],
           decoder_input_ids=r["decoder_input_ids"]).logits
d = (lg - load_file(ours)["logits"]).abs().max().item()
print(f"max abs diff {d:.3e}")
assert d <= 1e-4, d
"#;
        let res = std::process::Command::new(&py)
            .arg("-c")
            .arg(script)
            .arg(out.path())
            .arg(src.join("reference.safetensors"))
            .arg(&ours)
            .output()
            .unwrap();
        assert!(
            res.status.success(),
            "{name}: transformers could not load our checkpoint:\n{}\n{}",
            String::from_utf8_lossy(&res.stdout),
            String::from_utf8_lossy(&res.stderr)
        );
    }
}

#[test]
fn bf16_compute_stays_close_to_fp32() {
    // A normally initialised model (the fixtures' initializer_factor 3 makes activations so large
    // that bf16 rounding flips attention patterns; that tests nothing about the code path).
    let dir = ModelDir::open(&fixture("t5_v1_1")).unwrap();
    let mut cfg = dir.config.clone();
    cfg.initializer_factor = 1.0;
    let _serial = crate::train::serial();
    tch::manual_seed(0);
    let fp32 = T5::new(&cfg, Device::Cpu).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    cfg.save(tmp.path()).unwrap();
    fp32.save_safetensors(&tmp.path().join("model.safetensors"))
        .unwrap();
    let weights = cbqa::checkpoint::Weights::open(tmp.path(), &cfg).unwrap();
    let bf16 = T5::from_weights_with_compute(
        &cfg,
        &weights,
        Device::Cpu,
        Kind::Float,
        Some(Kind::BFloat16),
    )
    .unwrap();
    let r = reference("t5_v1_1");
    let _g = tch::no_grad_guard();
    let run = |t5: &T5| {
        t5.model()
            .forward(
                &r["input_ids"],
                &r["attention_mask"],
                &r["decoder_input_ids"],
                false,
            )
            .unwrap()
    };
    let (want, got) = (run(&fp32), run(&bf16));
    assert_eq!(got.kind(), Kind::BFloat16);
    let diff = max_abs_diff(&got.to_kind(Kind::Float), &want);
    let scale = want.abs().max().double_value(&[]);
    eprintln!("bf16 compute: logits max abs diff {diff:.3e} (max |logit| {scale:.2})");
    assert!(diff > 0.0 && diff < 0.05 * scale, "{diff} vs {scale}");
}

/// Loading a checkpoint draws nothing from libtorch's global generator (a training running beside
/// it in the same process draws its dropout masks from there, and its exact resume depends on it).
#[test]
fn loading_a_checkpoint_leaves_the_global_generator_alone() {
    let _serial = crate::train::serial();
    tch::manual_seed(7);
    let want = Tensor::randn([8], (Kind::Float, Device::Cpu));
    tch::manual_seed(7);
    let _t5 = load("t5_v1_1");
    let got = Tensor::randn([8], (Kind::Float, Device::Cpu));
    assert_eq!(max_abs_diff(&got, &want), 0.0);
    // a new model does draw
    tch::manual_seed(7);
    let dir = ModelDir::open(&fixture("t5_v1_1")).unwrap();
    let _t5 = T5::new(&dir.config, Device::Cpu).unwrap();
    let drawn = Tensor::randn([8], (Kind::Float, Device::Cpu));
    assert!(max_abs_diff(&drawn, &want) > 0.0);
}
