//! Foundation: config, checkpoint and tokenizer I/O against transformers, `cbqa init`, bad inputs.

use crate::common::*;
use cbqa::checkpoint::{expected_tensors, save_safetensors, OwnedTensor, Weights};
use cbqa::{ModelDir, T5Config};
use safetensors::Dtype;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

const FIXTURES: [&str; 2] = ["t5_v1_0", "t5_v1_1"];

fn all_tensors(w: &Weights) -> BTreeMap<String, OwnedTensor> {
    w.names()
        .map(|n| {
            let r = w.raw(n).unwrap();
            (
                n.to_string(),
                OwnedTensor {
                    dtype: r.dtype,
                    shape: r.shape.to_vec(),
                    bytes: r.bytes.to_vec(),
                },
            )
        })
        .collect()
}

#[test]
fn config_json_round_trips_byte_for_byte() {
    for f in FIXTURES {
        let path = fixture(f).join("config.json");
        let text = std::fs::read_to_string(&path).unwrap();
        let cfg = T5Config::from_file(&path).unwrap();
        assert_eq!(
            cfg.to_json_string(),
            text,
            "{f}: our config.json differs from transformers'"
        );
    }
}

#[test]
fn presets_written_by_us_are_what_transformers_writes() {
    let tmp = tempfile::tempdir().unwrap();
    for preset in ["t5-small", "t5-v1_1-xl", "tiny"] {
        let ours = tmp.path().join(preset);
        std::fs::create_dir_all(&ours).unwrap();
        T5Config::preset(preset).unwrap().save(&ours).unwrap();
        let theirs = tmp.path().join(format!("{preset}-hf"));
        run_python(
            "hf_oracle.py",
            &[
                "resave-config",
                ours.to_str().unwrap(),
                theirs.to_str().unwrap(),
            ],
        );
        let a: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(ours.join("config.json")).unwrap())
                .unwrap();
        let mut b: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(theirs.join("config.json")).unwrap())
                .unwrap();
        // transformers stamps its version; everything else must be identical.
        b.as_object_mut().unwrap().remove("transformers_version");
        assert_eq!(a, b, "{preset}");
        // and our reading of transformers' file writes its bytes back
        let text = std::fs::read_to_string(theirs.join("config.json")).unwrap();
        let cfg = T5Config::from_file(&theirs.join("config.json")).unwrap();
        assert_eq!(cfg.to_json_string(), text, "{preset}");
    }
}

#[test]
fn tensor_names_and_shapes_equal_a_transformers_checkpoint() {
    for f in FIXTURES {
        let dir = fixture(f);
        let cfg = T5Config::from_file(&dir.join("config.json")).unwrap();
        let w = Weights::open(&dir, &cfg).unwrap();
        assert!(w.unexpected.is_empty(), "{f}: {:?}", w.unexpected);
        let ours: BTreeMap<String, Vec<usize>> = expected_tensors(&cfg)
            .into_iter()
            .map(|t| (t.name, t.shape))
            .collect();
        let file: BTreeMap<String, Vec<usize>> = w
            .names()
            .map(|n| (n.to_string(), w.raw(n).unwrap().shape.to_vec()))
            .collect();
        assert_eq!(
            ours, file,
            "{f}: names/shapes differ from transformers' safetensors"
        );
        // and against transformers' in-memory state_dict (which also lists the tied aliases)
        let out = run_python("hf_oracle.py", &["load", dir.to_str().unwrap()]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let hf: BTreeSet<String> = v["tensors"].as_object().unwrap().keys().cloned().collect();
        for name in ours.keys() {
            assert!(hf.contains(name), "{f}: transformers has no {name}");
        }
        let aliases: BTreeSet<&str> = hf
            .iter()
            .map(String::as_str)
            .filter(|n| !ours.contains_key(*n))
            .collect();
        let mut allowed: BTreeSet<&str> =
            ["encoder.embed_tokens.weight", "decoder.embed_tokens.weight"].into();
        if cfg.tie_word_embeddings {
            allowed.insert("lm_head.weight");
        }
        assert_eq!(aliases, allowed, "{f}");
        assert_eq!(
            v["parameters"].as_u64().unwrap() as usize,
            cfg.num_parameters(),
            "{f}"
        );
    }
}

#[test]
fn init_writes_a_directory_transformers_loads_with_identical_tokenizer_ids() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("model");
    let nq = data_dir().join("nq-open").join("NQ-open.dev.jsonl");
    let (ok, stdout, stderr) = run_cbqa(&[
        "init",
        "--out",
        out.to_str().unwrap(),
        "--preset",
        "tiny",
        "--train-tokenizer",
        nq.to_str().unwrap(),
        "--vocab-size",
        "1200",
        "--extra-ids",
        "10",
    ]);
    assert!(ok, "cbqa init failed: {stderr}");
    assert!(stdout.contains("created"), "{stdout}");
    let model = ModelDir::open(&out).unwrap();
    assert_eq!(model.config.vocab_size, 1200);
    assert_eq!(model.tokenizer.token_to_id("<extra_id_0>"), Some(1199));

    let v: serde_json::Value = serde_json::from_str(&run_python(
        "hf_oracle.py",
        &["load", out.to_str().unwrap()],
    ))
    .unwrap();
    assert_eq!(v["missing"], serde_json::json!([]), "{v}");
    assert_eq!(v["unexpected"], serde_json::json!([]), "{v}");
    assert_eq!(v["mismatched"], serde_json::json!([]), "{v}");
    assert_eq!(
        v["parameters"].as_u64().unwrap() as usize,
        model.config.num_parameters()
    );

    let ids_file = tmp.path().join("hf_ids.jsonl");
    run_python(
        "hf_oracle.py",
        &[
            "tokenize",
            out.join("tokenizer.json").to_str().unwrap(),
            nq.to_str().unwrap(),
            ids_file.to_str().unwrap(),
        ],
    );
    let hf_ids = std::fs::read_to_string(&ids_file).unwrap();
    let questions: Vec<String> = std::fs::read_to_string(&nq)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["question"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let hf: Vec<Vec<u32>> = hf_ids
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(hf.len(), 3610);
    assert_eq!(questions.len(), hf.len());
    for (i, (q, want)) in questions.iter().zip(&hf).enumerate() {
        let got = model
            .tokenizer
            .encode(q.as_str(), true)
            .unwrap()
            .get_ids()
            .to_vec();
        assert_eq!(&got, want, "question {i}: {q:?}");
    }
}

#[test]
fn init_is_seeded_and_refuses_to_overwrite() {
    let tmp = tempfile::tempdir().unwrap();
    let tok = fixture("t5_v1_0").join("tokenizer.json");
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    for out in [&a, &b] {
        let (ok, _, e) = run_cbqa(&[
            "init",
            "--out",
            out.to_str().unwrap(),
            "--preset",
            "tiny",
            "--tokenizer",
            tok.to_str().unwrap(),
            "--seed",
            "7",
        ]);
        assert!(ok, "{e}");
    }
    assert_eq!(
        std::fs::read(a.join("model.safetensors")).unwrap(),
        std::fs::read(b.join("model.safetensors")).unwrap()
    );
    let before = std::fs::read(a.join("model.safetensors")).unwrap();
    let (ok, _, e) = run_cbqa(&[
        "init",
        "--out",
        a.to_str().unwrap(),
        "--tokenizer",
        tok.to_str().unwrap(),
        "--seed",
        "8",
    ]);
    assert!(!ok);
    assert!(e.contains("not empty") && e.contains("--force"), "{e}");
    assert_eq!(std::fs::read(a.join("model.safetensors")).unwrap(), before);
    let (ok, _, e) = run_cbqa(&[
        "init",
        "--out",
        a.to_str().unwrap(),
        "--tokenizer",
        tok.to_str().unwrap(),
        "--seed",
        "8",
        "--force",
    ]);
    assert!(ok, "{e}");
    assert_ne!(std::fs::read(a.join("model.safetensors")).unwrap(), before);
    // the metadata transformers needs
    let bytes = std::fs::read(a.join("model.safetensors")).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    assert_eq!(
        meta.metadata()
            .as_ref()
            .unwrap()
            .get("format")
            .map(String::as_str),
        Some("pt")
    );
}

#[test]
fn init_std_follows_transformers() {
    // T5PreTrainedModel._init_weights: spot-check the empirical std of a fresh t5-small-shaped
    // attention block against the formulas.
    let mut cfg = T5Config::preset("t5-small").unwrap();
    cfg.vocab_size = 64;
    cfg.num_layers = 1;
    cfg.num_decoder_layers = Some(1);
    let w = cbqa::init::random_weights(&cfg, 3).unwrap();
    let std_of = |name: &str| {
        let t = &w[name];
        let v: Vec<f32> = t
            .bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let mean = v.iter().map(|x| *x as f64).sum::<f64>() / v.len() as f64;
        (v.iter().map(|x| (*x as f64 - mean).powi(2)).sum::<f64>() / v.len() as f64).sqrt()
    };
    let close = |got: f64, want: f64| assert!((got / want - 1.0).abs() < 0.03, "{got} vs {want}");
    close(
        std_of("encoder.block.0.layer.0.SelfAttention.q.weight"),
        (512.0f64 * 64.0).powf(-0.5),
    );
    close(
        std_of("encoder.block.0.layer.0.SelfAttention.k.weight"),
        512f64.powf(-0.5),
    );
    close(
        std_of("encoder.block.0.layer.0.SelfAttention.o.weight"),
        512f64.powf(-0.5),
    );
    close(
        std_of("encoder.block.0.layer.1.DenseReluDense.wo.weight"),
        2048f64.powf(-0.5),
    );
    close(std_of("shared.weight"), 1.0);
    let ln = &w["encoder.final_layer_norm.weight"];
    assert!(ln
        .bytes
        .chunks_exact(4)
        .all(|c| f32::from_le_bytes(c.try_into().unwrap()) == 1.0));
}

fn copy_fixture(name: &str, to: &Path) -> (T5Config, BTreeMap<String, OwnedTensor>) {
    copy_dir(&fixture(name), to);
    let cfg = T5Config::from_file(&to.join("config.json")).unwrap();
    let w = Weights::open(to, &cfg).unwrap();
    let t = all_tensors(&w);
    (cfg, t)
}

fn open_err(dir: &Path) -> String {
    match ModelDir::open(dir) {
        Ok(_) => panic!("{} opened but should not", dir.display()),
        Err(e) => {
            let mut s = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(c) = src {
                s.push_str(&format!(": {c}"));
                src = c.source();
            }
            s
        }
    }
}

#[test]
fn bad_checkpoints_name_the_file_and_the_problem() {
    let tmp = tempfile::tempdir().unwrap();

    // truncated safetensors
    let d = tmp.path().join("truncated");
    copy_fixture("t5_v1_0", &d);
    let st = d.join("model.safetensors");
    let bytes = std::fs::read(&st).unwrap();
    std::fs::write(&st, &bytes[..bytes.len() / 2]).unwrap();
    let e = open_err(&d);
    assert!(
        e.contains("model.safetensors") && e.contains("truncated"),
        "{e}"
    );

    // wrong shape
    let d = tmp.path().join("shape");
    let (_, mut t) = copy_fixture("t5_v1_0", &d);
    let name = "decoder.block.1.layer.1.EncDecAttention.k.weight";
    let mut bad = t[name].clone();
    bad.shape = vec![bad.shape[1], bad.shape[0]];
    t.insert(name.into(), bad);
    save_safetensors(&d.join("model.safetensors"), &t).unwrap();
    let e = open_err(&d);
    assert!(
        e.contains(name) && e.contains("shape [48, 60]") && e.contains("expected [60, 48]"),
        "{e}"
    );

    // missing tensor
    let d = tmp.path().join("missing");
    let (_, mut t) = copy_fixture("t5_v1_1", &d);
    t.remove("lm_head.weight");
    save_safetensors(&d.join("model.safetensors"), &t).unwrap();
    let e = open_err(&d);
    assert!(e.contains("lm_head.weight") && e.contains("missing"), "{e}");

    // unsupported dtype
    let d = tmp.path().join("dtype");
    let (_, mut t) = copy_fixture("t5_v1_0", &d);
    let name = "encoder.final_layer_norm.weight";
    let mut bad = t[name].clone();
    bad.dtype = Dtype::I32;
    t.insert(name.into(), bad);
    save_safetensors(&d.join("model.safetensors"), &t).unwrap();
    let e = open_err(&d);
    assert!(
        e.contains(name) && e.contains("is int32; a T5 state dict holds float32/float16/bfloat16"),
        "{e}"
    );

    // a config for another architecture
    let d = tmp.path().join("bert");
    copy_fixture("t5_v1_0", &d);
    std::fs::write(
        d.join("config.json"),
        r#"{"model_type": "bert", "hidden_size": 8}"#,
    )
    .unwrap();
    let e = open_err(&d);
    assert!(
        e.contains("config.json") && e.contains("model_type is 'bert'"),
        "{e}"
    );

    // a tokenizer without the special tokens T5 needs
    let d = tmp.path().join("tok");
    copy_fixture("t5_v1_0", &d);
    let tok_path = d.join("tokenizer.json");
    let text = std::fs::read_to_string(&tok_path)
        .unwrap()
        .replace("</s>", "[SEP]");
    std::fs::write(&tok_path, text).unwrap();
    let e = open_err(&d);
    assert!(
        e.contains("tokenizer.json") && e.contains("</s> is missing"),
        "{e}"
    );

    // missing files
    for file in ["tokenizer.json", "config.json", "model.safetensors"] {
        let d = tmp.path().join(format!("no-{file}"));
        copy_fixture("t5_v1_0", &d);
        std::fs::remove_file(d.join(file)).unwrap();
        let e = open_err(&d);
        let named = if file == "model.safetensors" {
            "model.safetensors.index.json"
        } else {
            file
        };
        assert!(e.contains(named), "{file}: {e}");
    }

    // and the CLI prints the chain and fails
    let (ok, _, stderr) = run_cbqa(&["inspect", tmp.path().join("shape").to_str().unwrap()]);
    assert!(!ok);
    assert!(
        stderr.contains("error:") && stderr.contains("EncDecAttention.k.weight"),
        "{stderr}"
    );
}

#[test]
fn sharded_and_half_precision_checkpoints_load() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("sharded");
    let (cfg, t) = copy_fixture("t5_v1_1", &d);
    std::fs::remove_file(d.join("model.safetensors")).unwrap();
    let (mut a, mut b) = (BTreeMap::new(), BTreeMap::new());
    let mut weight_map = serde_json::Map::new();
    for (i, (k, v)) in t.iter().enumerate() {
        let (shard, file) = if i % 2 == 0 {
            (&mut a, "model-00001-of-00002.safetensors")
        } else {
            (&mut b, "model-00002-of-00002.safetensors")
        };
        shard.insert(k.clone(), v.clone());
        weight_map.insert(k.clone(), file.into());
    }
    save_safetensors(&d.join("model-00001-of-00002.safetensors"), &a).unwrap();
    save_safetensors(&d.join("model-00002-of-00002.safetensors"), &b).unwrap();
    let index = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": weight_map});
    std::fs::write(d.join("model.safetensors.index.json"), index.to_string()).unwrap();
    let m = ModelDir::open(&d).unwrap();
    for (k, v) in &t {
        assert_eq!(m.weights.raw(k).unwrap().bytes, &v.bytes[..], "{k}");
    }
    // transformers reads our sharded layout too
    let v: serde_json::Value =
        serde_json::from_str(&run_python("hf_oracle.py", &["load", d.to_str().unwrap()])).unwrap();
    assert_eq!(v["missing"], serde_json::json!([]), "{v}");

    // bf16 and f16 copies are accepted and widen exactly
    for (dtype, name) in [(Dtype::BF16, "bf16"), (Dtype::F16, "f16")] {
        let d = tmp.path().join(name);
        copy_dir(&fixture("t5_v1_1"), &d);
        let half_t: BTreeMap<String, OwnedTensor> = t
            .iter()
            .map(|(k, v)| {
                let vals: Vec<f32> = v
                    .bytes
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                    .collect();
                let bytes: Vec<u8> = vals
                    .iter()
                    .flat_map(|x| match dtype {
                        Dtype::BF16 => half::bf16::from_f32(*x).to_le_bytes(),
                        _ => half::f16::from_f32(*x).to_le_bytes(),
                    })
                    .collect();
                (
                    k.clone(),
                    OwnedTensor {
                        dtype,
                        shape: v.shape.clone(),
                        bytes,
                    },
                )
            })
            .collect();
        save_safetensors(&d.join("model.safetensors"), &half_t).unwrap();
        let m = ModelDir::open(&d).unwrap();
        assert_eq!(m.weights.dtype(), dtype);
        let (vals, shape) = m.weights.f32("shared.weight").unwrap();
        assert_eq!(shape, vec![cfg.vocab_size, cfg.d_model]);
        let orig: Vec<f32> = t["shared.weight"]
            .bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let max = vals
            .iter()
            .zip(&orig)
            .map(|(a, b)| (a - b).abs() / b.abs().max(1e-3))
            .fold(0f32, f32::max);
        assert!(max < 1e-2, "{name}: relative error {max}");
    }
}

#[test]
fn generation_config_round_trips() {
    let d = fixture("t5_v1_0");
    let text = std::fs::read_to_string(d.join("generation_config.json")).unwrap();
    let g = cbqa::GenerationConfig::from_file(&d.join("generation_config.json")).unwrap();
    assert_eq!(g.decoder_start_token_id, Some(0));
    assert_eq!(g.eos_token_id, Some(1));
    let tmp = tempfile::tempdir().unwrap();
    g.save(tmp.path()).unwrap();
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("generation_config.json")).unwrap(),
        text
    );
}

#[test]
fn help_explains_every_subcommand() {
    let (ok, out, _) = run_cbqa(&["--help"]);
    assert!(ok);
    for sub in ["init", "inspect", "doctor"] {
        assert!(out.contains(sub), "{out}");
    }
    let (ok, out, _) = run_cbqa(&["init", "--help"]);
    assert!(
        ok && out.contains("--train-tokenizer") && out.contains("--preset"),
        "{out}"
    );
}

#[test]
fn doctor_finds_the_native_libraries() {
    let (ok, out, err) = run_cbqa(&["doctor"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("libonnxruntime.so") && !out.contains("error"),
        "{out}"
    );
    // A wrong ORT_DYLIB_PATH is an error that names the fix.
    let out = cbqa()
        .arg("doctor")
        .env("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so")
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        s.contains("does not exist") && s.contains("scripts/setup.sh"),
        "{s}"
    );
}

#[test]
fn init_with_a_trained_tokenizer_is_reproducible() {
    let tmp = tempfile::tempdir().unwrap();
    let data = root().join("eval/demo/nq-open-200.jsonl");
    let mut files = Vec::new();
    for run in ["a", "b"] {
        let out = tmp.path().join(run);
        let (ok, _, e) = run_cbqa(&[
            "init",
            "--out",
            out.to_str().unwrap(),
            "--train-tokenizer",
            data.to_str().unwrap(),
            "--vocab-size",
            "900",
            "--extra-ids",
            "5",
            "--seed",
            "3",
        ]);
        assert!(ok, "{e}");
        files.push((
            std::fs::read(out.join("tokenizer.json")).unwrap(),
            std::fs::read(out.join("model.safetensors")).unwrap(),
        ));
    }
    assert!(
        files[0].0 == files[1].0,
        "tokenizer.json differs between two identical inits"
    );
    assert!(
        files[0].1 == files[1].1,
        "model.safetensors differs between two identical inits"
    );
}
