//! Mesh-TensorFlow T5 variable names → Hugging Face tensor names, as transformers'
//! `load_tf_weights_in_t5` (`transformers/models/t5/modeling_t5.py`, 4.57.6) maps them into a
//! `T5ForConditionalGeneration`:
//!
//! - a name with a component `adam_v`, `adam_m`, `AdamWeightDecayOptimizer`,
//!   `AdamWeightDecayOptimizer_1` or `global_step`, or whose last component contains `_slot_`
//!   (Adafactor's `q_slot_vc`, `..._slot_vr`, `..._slot_v`), is skipped;
//! - `NAME_NNN` components index (`block_003` → `block.3`, `layer_001` → `layer.1`);
//! - `kernel`, `scale` and `embedding` become `weight`; `rms_norm` is the module's `layer_norm`,
//!   or at stack level `final_layer_norm`; `decoder/logits` is `lm_head`; `wi_0`/`wi_1` stay;
//!   a name ending at a module (`SelfAttention/q`, `relative_attention_bias`) gets `.weight`;
//! - every array but an `embedding` is transposed (`np.transpose`: TF stores dense kernels
//!   [in, out], torch's `nn.Linear` weight is [out, in]; `relative_attention_bias` is
//!   [heads, buckets] in TF and [buckets, heads] in the `nn.Embedding`; 1-D scales are unchanged).
//!
//! transformers' walk also has branches for `self_attention`, `enc_dec_attention`,
//! `dense_relu_dense`, `output_bias`, `beta` and `squad`; none of them reaches a tensor of
//! `T5ForConditionalGeneration` (they fail on the next `getattr`), so names with them, like any
//! name this walk cannot place, are reported as unexpected rather than loaded.

/// What a bundle variable is for cbqa.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Mapped {
    /// A model tensor: its Hugging Face name, and whether TF stores it transposed.
    Tensor { name: String, transpose: bool },
    /// Optimizer state or the step counter, skipped as transformers skips it.
    Skipped,
    /// Not a tensor of T5ForConditionalGeneration.
    Unknown,
}

/// Components that mark optimizer state or the step counter (transformers' skip list).
const SKIPPED_COMPONENTS: &[&str] = &[
    "adam_v",
    "adam_m",
    "AdamWeightDecayOptimizer",
    "AdamWeightDecayOptimizer_1",
    "global_step",
];

/// `block_003` → 3 for the given stem (transformers' `[A-Za-z]+_\d+` then `int()`).
fn indexed(component: &str, stem: &str) -> Option<usize> {
    let digits = component.strip_prefix(stem)?.strip_prefix('_')?;
    if digits.is_empty() || digits.len() > 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The HF name (below `{stack}.block.{b}.layer.{l}`) of a sublayer's variable, and whether it
/// is transposed.
fn sublayer(rest: &[&str]) -> Option<(String, bool)> {
    Some(match rest {
        ["SelfAttention" | "EncDecAttention", proj @ ("q" | "k" | "v" | "o")] => {
            (format!("{}.{proj}.weight", rest[0]), true)
        }
        ["SelfAttention", "relative_attention_bias"] => {
            ("SelfAttention.relative_attention_bias.weight".into(), true)
        }
        ["layer_norm" | "rms_norm", "scale"] => ("layer_norm.weight".into(), false),
        ["DenseReluDense", w @ ("wi" | "wo" | "wi_0" | "wi_1"), "kernel"] => {
            (format!("DenseReluDense.{w}.weight"), true)
        }
        _ => return None,
    })
}

/// Map the bundle variable `tf_name`.
pub(crate) fn map(tf_name: &str) -> Mapped {
    let parts: Vec<&str> = tf_name.split('/').collect();
    let last = parts.last().copied().unwrap_or("");
    if parts.iter().any(|p| SKIPPED_COMPONENTS.contains(p)) || last.contains("_slot_") {
        return Mapped::Skipped;
    }
    let found = match parts.as_slice() {
        ["shared", "embedding"] => Some(("shared.weight".to_string(), false)),
        ["decoder", "logits", "kernel"] => Some(("lm_head.weight".to_string(), true)),
        [stack @ ("encoder" | "decoder"), "final_layer_norm" | "rms_norm", "scale"] => {
            Some((format!("{stack}.final_layer_norm.weight"), false))
        }
        [stack @ ("encoder" | "decoder"), block, layer, rest @ ..] => {
            match (indexed(block, "block"), indexed(layer, "layer")) {
                (Some(b), Some(l)) => sublayer(rest)
                    .map(|(leaf, t)| (format!("{stack}.block.{b}.layer.{l}.{leaf}"), t)),
                _ => None,
            }
        }
        _ => None,
    };
    match found {
        Some((name, transpose)) => Mapped::Tensor { name, transpose },
        None => Mapped::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(name: &str, transpose: bool) -> Mapped {
        Mapped::Tensor {
            name: name.into(),
            transpose,
        }
    }

    #[test]
    fn mesh_tf_names_map_as_transformers_maps_them() {
        for (tf, hf, t) in [
            ("shared/embedding", "shared.weight", false),
            (
                "encoder/block_000/layer_000/SelfAttention/q",
                "encoder.block.0.layer.0.SelfAttention.q.weight",
                true,
            ),
            (
                "encoder/block_000/layer_000/SelfAttention/relative_attention_bias",
                "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
                true,
            ),
            (
                "encoder/block_011/layer_000/rms_norm/scale",
                "encoder.block.11.layer.0.layer_norm.weight",
                false,
            ),
            (
                "decoder/block_002/layer_001/EncDecAttention/o",
                "decoder.block.2.layer.1.EncDecAttention.o.weight",
                true,
            ),
            (
                "decoder/block_001/layer_002/layer_norm/scale",
                "decoder.block.1.layer.2.layer_norm.weight",
                false,
            ),
            (
                "encoder/block_000/layer_001/DenseReluDense/wi/kernel",
                "encoder.block.0.layer.1.DenseReluDense.wi.weight",
                true,
            ),
            (
                "decoder/block_000/layer_002/DenseReluDense/wi_1/kernel",
                "decoder.block.0.layer.2.DenseReluDense.wi_1.weight",
                true,
            ),
            (
                "encoder/rms_norm/scale",
                "encoder.final_layer_norm.weight",
                false,
            ),
            (
                "decoder/final_layer_norm/scale",
                "decoder.final_layer_norm.weight",
                false,
            ),
            ("decoder/logits/kernel", "lm_head.weight", true),
        ] {
            assert_eq!(map(tf), tensor(hf, t), "{tf}");
        }
    }

    #[test]
    fn optimizer_state_is_skipped() {
        for tf in [
            "global_step",
            "encoder/block_000/layer_000/SelfAttention/q_slot_vc",
            "encoder/block_000/layer_000/SelfAttention/q_slot_vr",
            "encoder/rms_norm/scale_slot_v",
            "bert/encoder/adam_m",
            "AdamWeightDecayOptimizer/shared/embedding",
        ] {
            assert_eq!(map(tf), Mapped::Skipped, "{tf}");
        }
    }

    #[test]
    fn names_transformers_cannot_place_are_unknown() {
        for tf in [
            "encoder/block_000/self_attention/q",
            "encoder/block_x/layer_000/SelfAttention/q",
            "encoder/block_000/layer_000/EncDecAttention/relative_attention_bias",
            "encoder/block_000/layer_000/SelfAttention/q/adafactor/vc",
            "decoder/logits/bias",
            "something_else",
        ] {
            assert_eq!(map(tf), Mapped::Unknown, "{tf}");
        }
    }
}
