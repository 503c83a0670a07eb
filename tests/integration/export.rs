//! `cbqa export`: the reference forward pass against transformers, the exported graphs against
//! the reference in ONNX Runtime and tract, and interoperability with the real tools of the venv
//! (onnx.checker, optimum's ORTModelForSeq2SeqLM).

use cbqa::export::{self, ExportOptions, ReferenceT5};
use cbqa::ModelDir;
use ndarray::{Array2, Array3, ArrayD};
use std::path::{Path, PathBuf};

const FIXTURES: [&str; 2] = ["t5_v1_0", "t5_v1_1"];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A tensor of the fixture's reference.safetensors.
fn reference_tensor(name: &str, tensor: &str) -> (Vec<usize>, Vec<u8>, safetensors::Dtype) {
    let bytes = std::fs::read(fixture(name).join("reference.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(tensor).unwrap();
    (t.shape().to_vec(), t.data().to_vec(), t.dtype())
}

fn reference_i64(name: &str, tensor: &str) -> ArrayD<i64> {
    let (shape, data, dtype) = reference_tensor(name, tensor);
    assert_eq!(dtype, safetensors::Dtype::I64);
    let v = data
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    ArrayD::from_shape_vec(shape, v).unwrap()
}

fn reference_f32(name: &str, tensor: &str) -> ArrayD<f32> {
    let (shape, data, dtype) = reference_tensor(name, tensor);
    assert_eq!(dtype, safetensors::Dtype::F32);
    let v = data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    ArrayD::from_shape_vec(shape, v).unwrap()
}

fn max_abs_diff(a: &ArrayD<f32>, b: &ArrayD<f32>) -> f32 {
    assert_eq!(a.shape(), b.shape());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn max_abs(a: &ArrayD<f32>) -> f32 {
    a.iter().fold(0.0f32, |m, v| m.max(v.abs()))
}

fn two_d(a: ArrayD<i64>) -> Array2<i64> {
    a.into_dimensionality().unwrap()
}

#[test]
fn reference_forward_matches_transformers() {
    for name in FIXTURES {
        let model = ModelDir::open(&fixture(name)).unwrap();
        let r = ReferenceT5::new(&model.config, &model.weights);
        let ids = two_d(reference_i64(name, "input_ids"));
        let mask = two_d(reference_i64(name, "attention_mask"));
        let dec = two_d(reference_i64(name, "decoder_input_ids"));
        let enc = r.encode(&ids, &mask).unwrap();
        let d_enc = max_abs_diff(
            &enc.clone().into_dyn(),
            &reference_f32(name, "encoder_last_hidden_state"),
        );
        let want: Array3<f32> = reference_f32(name, "encoder_last_hidden_state")
            .into_dimensionality()
            .unwrap();
        let out = r.decode(&dec, &want, &mask).unwrap();
        let d_logits = max_abs_diff(&out.logits.into_dyn(), &reference_f32(name, "logits"));
        // 1e-4 per unit of the output's scale (see ValidateOptions::tolerance: transformers'
        // own float32 logits differ from float64 by 1.2e-2 and 9.6e-2 on these fixtures).
        let scale = |t| max_abs(&reference_f32(name, t)).max(1.0);
        let (s_enc, s_logits) = (scale("encoder_last_hidden_state"), scale("logits"));
        eprintln!(
            "{name}: reference vs transformers: encoder {d_enc:.2e} (max|ref| {s_enc:.1}), \
             logits {d_logits:.2e} (max|ref| {s_logits:.1})"
        );
        assert!(d_enc <= 1e-4 * s_enc, "{name}: encoder differs by {d_enc}");
        assert!(d_logits <= 1e-4 * s_logits, "{name}: logits differ by {d_logits}");
    }
}
