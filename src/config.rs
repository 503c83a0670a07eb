//! `T5Config`: Hugging Face's `config.json` for T5, with HF's key names.
//!
//! Mirrors `transformers.models.t5.configuration_t5.T5Config`. Keys we do not model are kept in
//! [`T5Config::extra`] and written back unchanged, and [`T5Config::to_json_string`] writes the same
//! bytes as transformers' `save_pretrained` (sorted keys, indent 2, Python float repr).

mod gin;
mod tensors;

pub use gin::CheckpointFacts;
pub(crate) use tensors::init_std;
pub use tensors::{expected_tensors, TensorPath, TensorSpec};

use crate::error::{Error, Result};
use crate::pyjson::to_python_json;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// The feed-forward variant of a T5 block (`feed_forward_proj`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedForward {
    /// T5 v1.0: `wo(relu(wi(x)))`.
    Relu,
    /// T5.1.1: `wo(gelu_new(wi_0(x)) * wi_1(x))`, gelu with the tanh approximation.
    GatedGelu,
    /// `wo(relu(wi_0(x)) * wi_1(x))`.
    GatedRelu,
}

impl FeedForward {
    /// Whether the block has `wi_0`/`wi_1` instead of `wi`.
    pub fn is_gated(self) -> bool {
        !matches!(self, FeedForward::Relu)
    }
    /// HF's `dense_act_fn` for this variant (`gated-gelu` maps to `gelu_new`, see T5Config).
    pub fn dense_act_fn(self) -> &'static str {
        match self {
            FeedForward::Relu | FeedForward::GatedRelu => "relu",
            FeedForward::GatedGelu => "gelu_new",
        }
    }
    /// The `feed_forward_proj` string.
    pub fn as_str(self) -> &'static str {
        match self {
            FeedForward::Relu => "relu",
            FeedForward::GatedGelu => "gated-gelu",
            FeedForward::GatedRelu => "gated-relu",
        }
    }
}

fn default_buckets() -> usize {
    32
}
fn default_max_distance() -> usize {
    128
}
fn default_dropout() -> f64 {
    0.1
}
fn default_eps() -> f64 {
    1e-6
}
fn default_factor() -> f64 {
    1.0
}
fn default_ff() -> String {
    "relu".into()
}
fn default_true() -> bool {
    true
}
fn is_true(b: &bool) -> bool {
    *b
}
fn default_eos() -> Option<u32> {
    Some(1)
}
fn default_pad() -> Option<u32> {
    Some(0)
}

/// A T5 config as in Hugging Face's `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct T5Config {
    pub vocab_size: usize,
    pub d_model: usize,
    /// Size of one attention head; its own key, not `d_model / num_heads`.
    pub d_kv: usize,
    pub d_ff: usize,
    /// Encoder depth.
    pub num_layers: usize,
    /// Decoder depth; HF defaults it to `num_layers` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_decoder_layers: Option<usize>,
    pub num_heads: usize,
    #[serde(default = "default_buckets")]
    pub relative_attention_num_buckets: usize,
    #[serde(default = "default_max_distance")]
    pub relative_attention_max_distance: usize,
    #[serde(default = "default_dropout")]
    pub dropout_rate: f64,
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f64,
    #[serde(default = "default_factor")]
    pub initializer_factor: f64,
    #[serde(default = "default_ff")]
    pub feed_forward_proj: String,
    /// Written only when false: transformers' `to_diff_dict` drops it at its default (true).
    #[serde(default = "default_true", skip_serializing_if = "is_true")]
    pub tie_word_embeddings: bool,
    #[serde(default = "default_pad")]
    pub pad_token_id: Option<u32>,
    #[serde(default = "default_eos")]
    pub eos_token_id: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decoder_start_token_id: Option<u32>,
    /// Every other key of the file, kept verbatim (model_type, architectures, use_cache, ...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Names of the bundled presets (`models/presets/<name>.json`).
pub const PRESETS: &[&str] = &[
    "tiny",
    "t5-small",
    "t5-base",
    "t5-large",
    "t5-3b",
    "t5-11b",
    "t5-v1_1-small",
    "t5-v1_1-base",
    "t5-v1_1-large",
    "t5-v1_1-xl",
    "t5-v1_1-xxl",
];

fn preset_text(name: &str) -> Option<&'static str> {
    Some(match name {
        "tiny" => include_str!("../models/presets/tiny.json"),
        "t5-small" => include_str!("../models/presets/t5-small.json"),
        "t5-base" => include_str!("../models/presets/t5-base.json"),
        "t5-large" => include_str!("../models/presets/t5-large.json"),
        "t5-3b" => include_str!("../models/presets/t5-3b.json"),
        "t5-11b" => include_str!("../models/presets/t5-11b.json"),
        "t5-v1_1-small" => include_str!("../models/presets/t5-v1_1-small.json"),
        "t5-v1_1-base" => include_str!("../models/presets/t5-v1_1-base.json"),
        "t5-v1_1-large" => include_str!("../models/presets/t5-v1_1-large.json"),
        "t5-v1_1-xl" => include_str!("../models/presets/t5-v1_1-xl.json"),
        "t5-v1_1-xxl" => include_str!("../models/presets/t5-v1_1-xxl.json"),
        _ => return None,
    })
}

impl T5Config {
    /// A bundled preset by name (see [`PRESETS`]).
    pub fn preset(name: &str) -> Result<Self> {
        let text = preset_text(name).ok_or_else(|| {
            Error::input(
                "preset",
                format!(
                    "unknown preset '{name}'; expected one of: {}",
                    PRESETS.join(", ")
                ),
            )
        })?;
        Self::from_json_str(text, Path::new(&format!("<preset {name}>")))
    }

    /// Read and validate `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io("read", path, e))?;
        Self::from_json_str(&text, path)
    }

    /// Parse and validate config text; `path` is only used in error messages.
    pub fn from_json_str(text: &str, path: &Path) -> Result<Self> {
        let value: Value = serde_json::from_str(text).map_err(|source| Error::Json {
            path: path.to_path_buf(),
            source,
        })?;
        let cfg_err = |msg: String| Error::Config {
            path: path.to_path_buf(),
            msg,
        };
        let obj = value
            .as_object()
            .ok_or_else(|| cfg_err("expected a JSON object".into()))?;
        match obj.get("model_type").and_then(Value::as_str) {
            Some("t5") | None => {}
            Some(other) => {
                return Err(cfg_err(format!(
                    "model_type is '{other}', expected 't5' (cbqa handles T5 encoder-decoders only)"
                )))
            }
        }
        for key in [
            "vocab_size",
            "d_model",
            "d_kv",
            "d_ff",
            "num_layers",
            "num_heads",
        ] {
            if !obj.contains_key(key) {
                return Err(cfg_err(format!(
                    "missing key '{key}' (a T5 config needs it)"
                )));
            }
        }
        let cfg: T5Config = serde_json::from_value(value).map_err(|e| cfg_err(e.to_string()))?;
        cfg.validate().map_err(cfg_err)?;
        Ok(cfg)
    }

    fn validate(&self) -> std::result::Result<(), String> {
        self.feed_forward()?;
        for (name, v) in [
            ("vocab_size", self.vocab_size),
            ("d_model", self.d_model),
            ("d_kv", self.d_kv),
            ("d_ff", self.d_ff),
            ("num_layers", self.num_layers),
            ("num_decoder_layers", self.decoder_layers()),
            ("num_heads", self.num_heads),
            (
                "relative_attention_num_buckets",
                self.relative_attention_num_buckets,
            ),
        ] {
            if v == 0 {
                return Err(format!("'{name}' must be positive"));
            }
        }
        if !(0.0..1.0).contains(&self.dropout_rate) {
            return Err(format!(
                "'dropout_rate' must be in [0, 1), got {}",
                self.dropout_rate
            ));
        }
        if self.layer_norm_epsilon <= 0.0 {
            return Err("'layer_norm_epsilon' must be positive".into());
        }
        Ok(())
    }

    /// The decoder depth (`num_decoder_layers`, or `num_layers` when absent).
    pub fn decoder_layers(&self) -> usize {
        self.num_decoder_layers.unwrap_or(self.num_layers)
    }

    /// `num_heads * d_kv`, the width of the attention projections.
    pub fn inner_dim(&self) -> usize {
        self.num_heads * self.d_kv
    }

    /// The parsed `feed_forward_proj`.
    pub fn feed_forward(&self) -> std::result::Result<FeedForward, String> {
        match self.feed_forward_proj.as_str() {
            "relu" => Ok(FeedForward::Relu),
            "gated-gelu" => Ok(FeedForward::GatedGelu),
            "gated-relu" => Ok(FeedForward::GatedRelu),
            other => Err(format!(
                "feed_forward_proj '{other}' is not supported; expected relu, gated-gelu or gated-relu"
            )),
        }
    }

    /// The feed-forward variant; the config was validated when it was built.
    pub fn ff(&self) -> FeedForward {
        self.feed_forward().unwrap_or(FeedForward::Relu)
    }

    /// Pad id (0 for T5).
    pub fn pad_id(&self) -> u32 {
        self.pad_token_id.unwrap_or(0)
    }
    /// End-of-sequence id (1 for T5).
    pub fn eos_id(&self) -> u32 {
        self.eos_token_id.unwrap_or(1)
    }
    /// The decoder's first input (T5 starts from the pad id).
    pub fn decoder_start_id(&self) -> u32 {
        self.decoder_start_token_id.unwrap_or_else(|| self.pad_id())
    }

    /// Number of parameters as stored (tied embeddings counted once).
    pub fn num_parameters(&self) -> usize {
        expected_tensors(self)
            .iter()
            .map(|t| t.shape.iter().product::<usize>())
            .sum()
    }

    /// The config as a JSON object, with the keys transformers derives from `feed_forward_proj`
    /// (`dense_act_fn`, `is_gated_act`) kept consistent.
    pub fn to_value(&self) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Value::Object(map) = &mut v {
            let ff = self.ff();
            map.insert("dense_act_fn".into(), Value::from(ff.dense_act_fn()));
            map.insert("is_gated_act".into(), Value::from(ff.is_gated()));
            // T5Config attributes transformers always writes.
            map.entry("classifier_dropout").or_insert(Value::from(0.0));
            if self.num_decoder_layers.is_none() {
                map.insert("num_decoder_layers".into(), Value::from(self.num_layers));
            }
        }
        v
    }

    /// `config.json` text exactly as transformers' `save_pretrained` would write it.
    pub fn to_json_string(&self) -> String {
        to_python_json(&self.to_value())
    }

    /// Write `config.json` into `dir` (atomically).
    pub fn save(&self, dir: &Path) -> Result<PathBuf> {
        let path = dir.join("config.json");
        crate::fsutil::write_atomic(&path, self.to_json_string().as_bytes())?;
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_loads_with_published_shapes() {
        for name in PRESETS {
            let c = T5Config::preset(name).unwrap();
            assert_eq!(
                c.extra.get("model_type").and_then(Value::as_str),
                Some("t5")
            );
            assert!(c.num_parameters() > 0);
        }
        let small = T5Config::preset("t5-small").unwrap();
        assert_eq!(
            (small.d_model, small.d_ff, small.num_heads, small.num_layers),
            (512, 2048, 8, 6)
        );
        // t5-small has 60.5M parameters (tied embeddings).
        assert_eq!(small.num_parameters(), 60_506_624);
        let xl = T5Config::preset("t5-v1_1-xl").unwrap();
        assert_eq!(xl.ff(), FeedForward::GatedGelu);
        assert!(!xl.tie_word_embeddings);
        let t11 = T5Config::preset("t5-11b").unwrap();
        assert_eq!((t11.d_kv, t11.num_heads, t11.d_ff), (128, 128, 65536));
    }

    #[test]
    fn rejects_other_architectures_and_bad_values() {
        let p = Path::new("bert/config.json");
        let e =
            T5Config::from_json_str(r#"{"model_type": "bert", "vocab_size": 3}"#, p).unwrap_err();
        assert!(e.to_string().contains("model_type is 'bert'"), "{e}");
        assert!(e.to_string().contains("bert/config.json"), "{e}");
        let e = T5Config::from_json_str(r#"{"vocab_size": 3, "d_model": 4}"#, p).unwrap_err();
        assert!(e.to_string().contains("missing key 'd_kv'"), "{e}");
        let base = T5Config::preset("tiny").unwrap();
        let mut v = base.to_value();
        v["feed_forward_proj"] = "gated-swish".into();
        let e = T5Config::from_json_str(&v.to_string(), p).unwrap_err();
        assert!(e.to_string().contains("gated-swish"), "{e}");
        let e = T5Config::from_json_str("[1]", p).unwrap_err();
        assert!(e.to_string().contains("expected a JSON object"), "{e}");
    }

    #[test]
    fn unknown_keys_survive_a_round_trip() {
        let text = r#"{"d_ff": 8, "d_kv": 2, "d_model": 4, "num_heads": 2, "num_layers": 1,
            "vocab_size": 10, "model_type": "t5", "my_key": {"nested": [1, 2.5e-7]}, "task_specific_params": {"x": 1}}"#;
        let c = T5Config::from_json_str(text, Path::new("c.json")).unwrap();
        let back = c.to_value();
        assert_eq!(back["my_key"]["nested"][1], 2.5e-7);
        assert_eq!(back["task_specific_params"]["x"], 1);
        assert_eq!(back["num_decoder_layers"], 1);
        let again = T5Config::from_json_str(&c.to_json_string(), Path::new("c.json")).unwrap();
        assert_eq!(again.to_json_string(), c.to_json_string());
    }
}
