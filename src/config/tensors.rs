//! The tensors a [`T5Config`] describes: their names, composed from the module path as
//! `T5ForConditionalGeneration`'s `state_dict()` names them ([`TensorPath`]), their shapes
//! ([`expected_tensors`]) and the standard deviation transformers draws each one with
//! ([`init_std`]). Checkpoint I/O, the tch model, `cbqa init` and the exporter all take names
//! from here, so they match transformers by construction.

use super::T5Config;

/// One tensor a checkpoint must have: its HF name and shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub shape: Vec<usize>,
}

/// A dotted module path, composed like the module tree (`p / "encoder" / "block" / i`).
#[derive(Debug, Clone, Default)]
pub struct TensorPath(String);

impl TensorPath {
    /// The root of the model.
    pub fn root() -> Self {
        TensorPath(String::new())
    }
    /// The path as a dotted name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<T: std::fmt::Display> std::ops::Div<T> for &TensorPath {
    type Output = TensorPath;
    fn div(self, rhs: T) -> TensorPath {
        if self.0.is_empty() {
            TensorPath(rhs.to_string())
        } else {
            TensorPath(format!("{}.{rhs}", self.0))
        }
    }
}

impl<T: std::fmt::Display> std::ops::Div<T> for TensorPath {
    type Output = TensorPath;
    fn div(self, rhs: T) -> TensorPath {
        &self / rhs
    }
}

/// Every tensor `T5ForConditionalGeneration.save_pretrained` writes for `cfg`, in a stable order.
/// Tied embeddings are stored once as `shared.weight` (transformers drops the tied aliases
/// `encoder.embed_tokens`, `decoder.embed_tokens` and, when tied, `lm_head`).
pub fn expected_tensors(cfg: &T5Config) -> Vec<TensorSpec> {
    let mut out = Vec::new();
    let mut push = |p: TensorPath, shape: Vec<usize>| {
        out.push(TensorSpec {
            name: p.as_str().to_string(),
            shape,
        })
    };
    let root = TensorPath::root();
    let (d, inner, ff) = (cfg.d_model, cfg.inner_dim(), cfg.d_ff);
    push(&root / "shared" / "weight", vec![cfg.vocab_size, d]);
    let attention = |push: &mut dyn FnMut(TensorPath, Vec<usize>), p: TensorPath, bias: bool| {
        for proj in ["q", "k", "v"] {
            push(&p / proj / "weight", vec![inner, d]);
        }
        push(&p / "o" / "weight", vec![d, inner]);
        if bias {
            push(
                &p / "relative_attention_bias" / "weight",
                vec![cfg.relative_attention_num_buckets, cfg.num_heads],
            );
        }
    };
    let feed_forward = |push: &mut dyn FnMut(TensorPath, Vec<usize>), p: TensorPath| {
        let p = &p / "DenseReluDense";
        if cfg.ff().is_gated() {
            push(&p / "wi_0" / "weight", vec![ff, d]);
            push(&p / "wi_1" / "weight", vec![ff, d]);
        } else {
            push(&p / "wi" / "weight", vec![ff, d]);
        }
        push(&p / "wo" / "weight", vec![d, ff]);
    };
    for i in 0..cfg.num_layers {
        let block = &root / "encoder" / "block" / i;
        attention(&mut push, &block / "layer" / 0 / "SelfAttention", i == 0);
        push(&block / "layer" / 0 / "layer_norm" / "weight", vec![d]);
        feed_forward(&mut push, &block / "layer" / 1);
        push(&block / "layer" / 1 / "layer_norm" / "weight", vec![d]);
    }
    push(&root / "encoder" / "final_layer_norm" / "weight", vec![d]);
    for i in 0..cfg.decoder_layers() {
        let block = &root / "decoder" / "block" / i;
        attention(&mut push, &block / "layer" / 0 / "SelfAttention", i == 0);
        push(&block / "layer" / 0 / "layer_norm" / "weight", vec![d]);
        attention(&mut push, &block / "layer" / 1 / "EncDecAttention", false);
        push(&block / "layer" / 1 / "layer_norm" / "weight", vec![d]);
        feed_forward(&mut push, &block / "layer" / 2);
        push(&block / "layer" / 2 / "layer_norm" / "weight", vec![d]);
    }
    push(&root / "decoder" / "final_layer_norm" / "weight", vec![d]);
    if !cfg.tie_word_embeddings {
        push(&root / "lm_head" / "weight", vec![cfg.vocab_size, d]);
    }
    out
}

/// The standard deviation transformers initialises tensor `name` with (None: a layer norm, set to
/// `factor`). It mirrors `T5PreTrainedModel._init_weights` in `modeling_t5.py`: embeddings
/// N(0, factor), attention q at N(0, factor·(d_model·d_kv)^-½), k and v at N(0, factor·d_model^-½),
/// o at N(0, factor·(num_heads·d_kv)^-½), relative bias N(0, factor·d_model^-½), `wi*` at
/// N(0, factor·d_model^-½) and `wo` at N(0, factor·d_ff^-½).
pub(crate) fn init_std(name: &str, cfg: &T5Config) -> Option<f64> {
    let f = cfg.initializer_factor;
    let d = cfg.d_model as f64;
    let leaf = name.trim_end_matches(".weight");
    let last = leaf.rsplit('.').next().unwrap_or(leaf);
    if last == "layer_norm" || last == "final_layer_norm" {
        return None;
    }
    Some(match last {
        "shared" | "lm_head" => f,
        "q" => f * (d * cfg.d_kv as f64).powf(-0.5),
        "k" | "v" => f * d.powf(-0.5),
        "o" => f * (cfg.inner_dim() as f64).powf(-0.5),
        "relative_attention_bias" => f * d.powf(-0.5),
        "wi" | "wi_0" | "wi_1" => f * d.powf(-0.5),
        "wo" => f * (cfg.d_ff as f64).powf(-0.5),
        _ => f,
    })
}
