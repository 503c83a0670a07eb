//! A [`T5Config`] derived from Mesh-TensorFlow's `operative_config.gin`, for checkpoint
//! directories that have no `config.json` (the paper's original T5 checkpoints).
//!
//! gin files bind `[scope/]Configurable.parameter = value` and macros `name = value`, referenced
//! as `%name`; a binding without a scope applies to every scope. Values may span lines (a
//! trailing `\` or open brackets), `#` starts a comment. Only the few bindings a T5 config needs
//! are read, each from the encoder's and the decoder's scope (they must agree, HF's config
//! having one value for both):
//!
//! | T5Config | gin (first found) |
//! |---|---|
//! | `d_model` | `Unitransformer.d_model`, macro `d_model` |
//! | `d_ff` | `DenseReluDense.hidden_size`, macro `d_ff` |
//! | `d_kv` | `SelfAttention.key_value_size`, macro `d_kv` |
//! | `num_heads` | `SelfAttention.num_heads`, macro `num_heads` |
//! | `num_layers` / `num_decoder_layers` | `encoder/` / `decoder/make_layer_stack.num_layers`, macro `num_layers` |
//! | `relative_attention_num_buckets` | `SelfAttention.relative_attention_num_buckets` (Mesh-TF default 32) |
//! | `dropout_rate` | `SelfAttention.dropout_rate`, macro `dropout_rate` (HF default 0.1) |
//! | `feed_forward_proj` | `DenseReluDense.activation`: `'relu'` → relu, `['gelu', 'linear']` → gated-gelu, `['relu', 'linear']` → gated-relu (default relu) |
//! | `layer_norm_epsilon` | `sublayer_rms_norm.epsilon` (default 1e-6) |
//! | `tie_word_embeddings` | `decoder/Unitransformer.shared_embedding_and_softmax_weights`, else whether the checkpoint lacks `decoder/logits/kernel` |
//! | `vocab_size` | the rows of the checkpoint's `shared/embedding` (gin does not hold it) |
//!
//! `relative_attention_max_distance` is 128: Mesh-TF's `_relative_position_bucket` default, which
//! no gin binding changes. Token ids are T5's (pad 0, eos 1, decoder start 0).

use super::T5Config;
use crate::error::{Error, Result};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;

/// What a config needs from the checkpoint itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointFacts {
    /// Rows of the embedding matrix.
    pub vocab_size: usize,
    /// Whether the checkpoint has its own output projection (`decoder/logits/kernel`).
    pub separate_logits: bool,
}

/// The bindings of a gin file: key (as written, module path included) → (value text, line).
struct Bindings {
    values: BTreeMap<String, (String, usize)>,
}

/// The text of `line` before a `#` that is outside quotes.
fn strip_comment(line: &str) -> &str {
    let mut quote: Option<char> = None;
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (None, '#') => return &line[..i],
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), _) if c == q => quote = None,
            _ => {}
        }
    }
    line
}

/// Bracket depth change of `text` (quotes ignored loosely: gin strings rarely hold brackets).
fn depth(text: &str) -> i64 {
    text.chars()
        .map(|c| match c {
            '[' | '(' | '{' => 1,
            ']' | ')' | '}' => -1,
            _ => 0,
        })
        .sum()
}

impl Bindings {
    fn parse(text: &str) -> std::result::Result<Self, String> {
        let mut values = BTreeMap::new();
        let mut pending = String::new();
        let mut start = 0;
        for (n, raw) in text.lines().enumerate() {
            let line = strip_comment(raw).trim_end();
            if pending.is_empty() {
                start = n + 1;
            }
            let continued = line.ends_with('\\');
            pending.push_str(line.trim_end_matches('\\'));
            pending.push(' ');
            if continued || depth(&pending) > 0 {
                continue;
            }
            let stmt = std::mem::take(&mut pending);
            let stmt = stmt.trim();
            if stmt.is_empty() || stmt.starts_with("import ") || stmt.starts_with("include ") {
                continue;
            }
            let (key, value) = stmt
                .split_once('=')
                .ok_or_else(|| format!("line {start}: expected `name = value`, got `{stmt}`"))?;
            values.insert(key.trim().to_string(), (value.trim().to_string(), start));
        }
        if !pending.trim().is_empty() {
            return Err(format!("line {start}: unclosed bracket or trailing `\\`"));
        }
        Ok(Bindings { values })
    }

    /// The binding of `configurable.param` in `scope`: the scoped binding, else the unscoped
    /// one; a module path before the configurable (`transformer.Unitransformer.d_model`) is
    /// allowed, as gin allows it.
    fn binding(&self, scope: &str, configurable: &str, param: &str) -> Option<&(String, usize)> {
        let tail = format!("{configurable}.{param}");
        let find = |scoped: bool| {
            self.values.iter().find_map(|(k, v)| {
                let (s, name) = k.rsplit_once('/').unwrap_or(("", k));
                let name_ok = name == tail || name.ends_with(&format!(".{tail}"));
                let scope_ok = if scoped { s == scope } else { s.is_empty() };
                (name_ok && scope_ok).then_some(v)
            })
        };
        find(true).or_else(|| find(false))
    }

    /// `value` with `%macro` references followed (at most 16 deep).
    fn resolve<'a>(
        &'a self,
        mut value: &'a (String, usize),
    ) -> std::result::Result<&'a (String, usize), String> {
        for _ in 0..16 {
            let Some(name) = value.0.strip_prefix('%') else {
                return Ok(value);
            };
            value = self
                .values
                .get(name)
                .ok_or_else(|| format!("line {}: macro %{name} is not defined", value.1))?;
        }
        Err(format!("line {}: macro references nest too deep", value.1))
    }

    /// The resolved text bound to (`scope`) `configurable.param`, else to macro `fallback`.
    fn lookup(
        &self,
        scope: &str,
        configurable: &str,
        param: &str,
        fallback: Option<&str>,
    ) -> std::result::Result<Option<(String, usize)>, String> {
        let found = self
            .binding(scope, configurable, param)
            .or_else(|| fallback.and_then(|m| self.values.get(m)));
        found.map(|v| self.resolve(v).cloned()).transpose()
    }
}

/// A gin value as JSON: ints, floats, True/False/None, quoted strings, lists of those.
fn parse_value(text: &str) -> Option<Value> {
    let t = text.trim();
    if let Some(inner) = t.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        let items: Option<Vec<Value>> = inner
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(parse_value)
            .collect();
        return items.map(Value::Array);
    }
    for q in ['\'', '"'] {
        if let Some(s) = t.strip_prefix(q).and_then(|r| r.strip_suffix(q)) {
            return Some(Value::String(s.to_string()));
        }
    }
    match t {
        "True" => return Some(Value::Bool(true)),
        "False" => return Some(Value::Bool(false)),
        "None" => return Some(Value::Null),
        _ => {}
    }
    if let Ok(i) = t.parse::<u64>() {
        return Some(json!(i));
    }
    t.parse::<f64>().ok().map(|f| json!(f))
}

/// One setting of the config: the encoder's and the decoder's binding must agree.
struct Reader<'a> {
    bindings: &'a Bindings,
}

impl Reader<'_> {
    fn value(
        &self,
        scope: &str,
        configurable: &str,
        param: &str,
        fallback: Option<&str>,
    ) -> std::result::Result<Option<Value>, String> {
        let Some((text, line)) = self.bindings.lookup(scope, configurable, param, fallback)? else {
            return Ok(None);
        };
        parse_value(&text).map(Some).ok_or_else(|| {
            format!("line {line}: {configurable}.{param} = {text} is not a value cbqa reads")
        })
    }

    /// The setting, equal in the encoder and the decoder scope.
    fn both(
        &self,
        configurable: &str,
        param: &str,
        fallback: Option<&str>,
    ) -> std::result::Result<Option<Value>, String> {
        let enc = self.value("encoder", configurable, param, fallback)?;
        let dec = self.value("decoder", configurable, param, fallback)?;
        match (enc, dec) {
            (Some(e), Some(d)) if e != d => Err(format!(
                "encoder/{configurable}.{param} = {e} but decoder/{configurable}.{param} = {d}; \
                 a Hugging Face T5 config has one value for both"
            )),
            (e, d) => Ok(e.or(d)),
        }
    }

    fn required_int(
        &self,
        configurable: &str,
        param: &str,
        mac: &str,
    ) -> std::result::Result<Value, String> {
        match self.both(configurable, param, Some(mac))? {
            Some(v) if v.is_u64() => Ok(v),
            Some(v) => Err(format!(
                "{configurable}.{param} is {v}, expected a positive integer"
            )),
            None => Err(format!(
                "no binding for {configurable}.{param} and no macro `{mac}`"
            )),
        }
    }

    fn layers(&self, scope: &str) -> std::result::Result<Value, String> {
        match self.value(scope, "make_layer_stack", "num_layers", Some("num_layers"))? {
            Some(v) if v.is_u64() => Ok(v),
            Some(v) => Err(format!(
                "{scope}/make_layer_stack.num_layers is {v}, expected an integer"
            )),
            None => Err(format!(
                "no binding for {scope}/make_layer_stack.num_layers and no macro `num_layers`"
            )),
        }
    }
}

/// HF's `feed_forward_proj` for Mesh-TF's `DenseReluDense.activation`.
fn feed_forward(activation: Option<Value>) -> std::result::Result<&'static str, String> {
    let Some(v) = activation else {
        return Ok("relu");
    };
    match &v {
        Value::String(s) if s == "relu" => Ok("relu"),
        Value::Array(a) if a.len() == 2 && a[1] == "linear" && a[0] == "gelu" => Ok("gated-gelu"),
        Value::Array(a) if a.len() == 2 && a[1] == "linear" && a[0] == "relu" => Ok("gated-relu"),
        _ => Err(format!(
            "DenseReluDense.activation = {v}; expected 'relu', ['gelu', 'linear'] or ['relu', 'linear']"
        )),
    }
}

/// The config.json keys the gin bindings imply.
fn config_json(b: &Bindings, facts: CheckpointFacts) -> std::result::Result<Value, String> {
    let r = Reader { bindings: b };
    let tied = match r.value(
        "decoder",
        "Unitransformer",
        "shared_embedding_and_softmax_weights",
        None,
    )? {
        Some(Value::Bool(t)) => t,
        Some(v) => {
            return Err(format!(
                "shared_embedding_and_softmax_weights is {v}, expected True or False"
            ))
        }
        None => !facts.separate_logits,
    };
    let buckets = r
        .both("SelfAttention", "relative_attention_num_buckets", None)?
        .unwrap_or(json!(32));
    let dropout = r
        .both("SelfAttention", "dropout_rate", Some("dropout_rate"))?
        .unwrap_or(json!(0.1));
    let epsilon = r
        .value("", "sublayer_rms_norm", "epsilon", None)?
        .unwrap_or(json!(1e-6));
    Ok(json!({
        "model_type": "t5",
        "architectures": ["T5ForConditionalGeneration"],
        "is_encoder_decoder": true,
        "vocab_size": facts.vocab_size,
        "d_model": r.required_int("Unitransformer", "d_model", "d_model")?,
        "d_ff": r.required_int("DenseReluDense", "hidden_size", "d_ff")?,
        "d_kv": r.required_int("SelfAttention", "key_value_size", "d_kv")?,
        "num_heads": r.required_int("SelfAttention", "num_heads", "num_heads")?,
        "num_layers": r.layers("encoder")?,
        "num_decoder_layers": r.layers("decoder")?,
        "relative_attention_num_buckets": buckets,
        "relative_attention_max_distance": 128,
        "dropout_rate": dropout,
        "layer_norm_epsilon": epsilon,
        "feed_forward_proj": feed_forward(r.both("DenseReluDense", "activation", None)?)?,
        "tie_word_embeddings": tied,
        "pad_token_id": 0,
        "eos_token_id": 1,
        "decoder_start_token_id": 0,
    }))
}

impl T5Config {
    /// The config a Mesh-TF run's `operative_config.gin` describes (see the module docs), with
    /// what gin does not hold taken from the checkpoint (`facts`). Errors name the file and line.
    pub fn from_gin_file(path: &Path, facts: CheckpointFacts) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io("read", path, e))?;
        Self::from_gin_str(&text, path, facts)
    }

    /// [`T5Config::from_gin_file`] on text; `path` is only used in error messages.
    pub fn from_gin_str(text: &str, path: &Path, facts: CheckpointFacts) -> Result<Self> {
        let err = |msg: String| Error::Config {
            path: path.to_path_buf(),
            msg,
        };
        let bindings = Bindings::parse(text).map_err(err)?;
        let json = config_json(&bindings, facts).map_err(err)?;
        Self::from_json_str(&json.to_string(), path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FACTS: CheckpointFacts = CheckpointFacts {
        vocab_size: 32128,
        separate_logits: false,
    };

    /// Bindings as a real Mesh-TF T5 run writes them (macros, scoped bindings, continuations).
    const T5_SMALL: &str = r#"
import mesh_tensorflow.transformer.transformer_layers

# Macros:
# ==============================================================================
d_ff = 2048
d_kv = 64
d_model = 512
dropout_rate = 0.1
num_heads = 8
num_layers = 6

# Parameters for decoder/DenseReluDense:
decoder/DenseReluDense.activation = 'relu'
decoder/DenseReluDense.hidden_size = %d_ff
encoder/DenseReluDense.activation = 'relu'  # a comment
encoder/DenseReluDense.hidden_size = %d_ff
decoder/make_layer_stack.layers = \
    [@mesh_tensorflow.transformer.transformer_layers.SelfAttention,
     @mesh_tensorflow.transformer.transformer_layers.DenseReluDense]
decoder/make_layer_stack.num_layers = %num_layers
encoder/make_layer_stack.num_layers = %num_layers
SelfAttention.key_value_size = %d_kv
SelfAttention.num_heads = %num_heads
SelfAttention.relative_attention_num_buckets = 32
decoder/Unitransformer.d_model = %d_model
encoder/Unitransformer.d_model = %d_model
decoder/Unitransformer.shared_embedding_and_softmax_weights = True
sublayer_rms_norm.epsilon = 1e-06
run.sequence_length = {'inputs': 512, 'targets': 128}
"#;

    #[test]
    fn t5_small_bindings_give_the_t5_small_preset() {
        let cfg = T5Config::from_gin_str(T5_SMALL, Path::new("op.gin"), FACTS).unwrap();
        let preset = T5Config::preset("t5-small").unwrap();
        assert_eq!(
            (
                cfg.vocab_size,
                cfg.d_model,
                cfg.d_ff,
                cfg.d_kv,
                cfg.num_heads,
                cfg.num_layers
            ),
            (
                preset.vocab_size,
                preset.d_model,
                preset.d_ff,
                preset.d_kv,
                preset.num_heads,
                preset.num_layers
            )
        );
        assert_eq!(cfg.decoder_layers(), 6);
        assert_eq!(cfg.feed_forward_proj, "relu");
        assert!(cfg.tie_word_embeddings);
        assert_eq!(cfg.relative_attention_num_buckets, 32);
        assert_eq!(cfg.relative_attention_max_distance, 128);
        assert_eq!(cfg.layer_norm_epsilon, 1e-6);
    }

    #[test]
    fn gated_activation_scoped_depth_and_untied_logits() {
        let text = T5_SMALL
            .replace("'relu'", "['gelu', 'linear']")
            .replace(
                "decoder/make_layer_stack.num_layers = %num_layers",
                "decoder/make_layer_stack.num_layers = 2",
            )
            .replace(
                "shared_embedding_and_softmax_weights = True",
                "shared_embedding_and_softmax_weights = False",
            );
        let cfg = T5Config::from_gin_str(&text, Path::new("op.gin"), FACTS).unwrap();
        assert_eq!(cfg.feed_forward_proj, "gated-gelu");
        assert_eq!((cfg.num_layers, cfg.decoder_layers()), (6, 2));
        assert!(!cfg.tie_word_embeddings);
        let relu = T5_SMALL.replace("'relu'", "[\"relu\", \"linear\"]");
        let cfg = T5Config::from_gin_str(&relu, Path::new("op.gin"), FACTS).unwrap();
        assert_eq!(cfg.feed_forward_proj, "gated-relu");
    }

    #[test]
    fn bad_bindings_are_errors_naming_file_and_line() {
        let cases = [
            (
                T5_SMALL.replace("d_model = 512", "d_model = 'wide'"),
                "d_model",
            ),
            (
                T5_SMALL.replace("'relu'  # a comment", "'swish'"),
                "DenseReluDense",
            ),
            (T5_SMALL.replace("num_heads = 8", ""), "%num_heads"),
            (
                T5_SMALL.replace(
                    "decoder/DenseReluDense.hidden_size = %d_ff",
                    "decoder/DenseReluDense.hidden_size = 7",
                ),
                "one value",
            ),
            (format!("{T5_SMALL}\nbroken ["), "unclosed"),
            (format!("{T5_SMALL}\nno equals sign"), "line"),
        ];
        for (text, needle) in cases {
            let err = T5Config::from_gin_str(&text, Path::new("op.gin"), FACTS)
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with("op.gin: ") && err.contains(needle),
                "{needle}: {err}"
            );
        }
    }

    #[test]
    fn missing_tie_binding_follows_the_checkpoint() {
        let text = T5_SMALL.replace(
            "decoder/Unitransformer.shared_embedding_and_softmax_weights = True",
            "",
        );
        let facts = CheckpointFacts {
            separate_logits: true,
            ..FACTS
        };
        let cfg = T5Config::from_gin_str(&text, Path::new("op.gin"), facts).unwrap();
        assert!(!cfg.tie_word_embeddings);
    }
}
