//! optimum's seq2seq layout of an ONNX export, defined once: the file names of the graphs, the
//! shared data file and our metadata file, the graphs' input and output names, and the names of
//! the key/value cache (`past_key_values.{i}.{decoder,encoder}.{key,value}` in,
//! `present.{i}.{decoder,encoder}.{key,value}` out). They follow optimum's `T5OnnxConfig`
//! (<https://github.com/huggingface/optimum-onnx/blob/main/optimum/exporters/onnx/model_configs.py>),
//! so optimum and plain ONNX Runtime users load our exports, and our runtimes load optimum's.

/// The encoder graph: `input_ids`, `attention_mask` → `last_hidden_state`.
pub const ENCODER: &str = "encoder_model.onnx";
/// The first decoder step: computes the cross-attention keys/values and returns the whole cache.
pub const DECODER: &str = "decoder_model.onnx";
/// Every later decoder step: takes the whole cache, returns its self-attention half.
pub const DECODER_WITH_PAST: &str = "decoder_with_past_model.onnx";
/// cbqa's own addition (not optimum's): [`DECODER_WITH_PAST`] with one more input,
/// [`DECODER_ATTENTION_MASK`], which masks keys of the self-attention cache out. Decoding states
/// at different positions can then be joined (the shorter cache padded on the left and masked);
/// the runtimes use it in place of [`DECODER_WITH_PAST`] where an export has it. It shares
/// [`DATA_FILE`] with the other graphs; optimum never loads it (it picks its graphs by their
/// standard names).
pub const DECODER_WITH_PAST_MASKED: &str = "decoder_with_past_masked_model.onnx";
/// Both decoders behind an `If` on [`USE_CACHE_BRANCH`] (optional, `cbqa export --merged`).
pub const DECODER_MERGED: &str = "decoder_model_merged.onnx";
/// The graph files every export has (optimum's unmerged layout).
pub const GRAPHS: [&str; 3] = [ENCODER, DECODER, DECODER_WITH_PAST];

/// The name of the shared external-data file in the export directory.
pub const DATA_FILE: &str = "model.onnx_data";
/// What `cbqa export` records about an export (precision, quantization, source, ...).
pub const METADATA_FILE: &str = "cbqa_export.json";

/// Encoder input: token ids, int64 `[batch, encoder_len]`.
pub const INPUT_IDS: &str = "input_ids";
/// Encoder input: 1 for tokens, 0 for padding, int64 `[batch, encoder_len]`.
pub const ATTENTION_MASK: &str = "attention_mask";
/// Encoder output, float32 `[batch, encoder_len, d_model]`.
pub const LAST_HIDDEN_STATE: &str = "last_hidden_state";
/// Decoder input: the encoder's attention mask.
pub const ENCODER_ATTENTION_MASK: &str = "encoder_attention_mask";
/// Decoder input (first step only): the encoder output.
pub const ENCODER_HIDDEN_STATES: &str = "encoder_hidden_states";
/// Input of [`DECODER_WITH_PAST_MASKED`]: the self-attention key mask, int64
/// `[batch, past_decoder_sequence_length + 1]` (1 = a real key, 0 = padding), added to the scores
/// as `(1 - mask) * finfo(float32).min`, as transformers adds a padding mask.
pub const DECODER_ATTENTION_MASK: &str = "decoder_attention_mask";
/// Merged decoder input: bool `[1]`, true to run the with-past branch.
pub const USE_CACHE_BRANCH: &str = "use_cache_branch";
/// Decoder output, float32 `[batch, decoder_len, vocab]`.
pub const LOGITS: &str = "logits";

/// The attention a cached key/value belongs to: the decoder's self-attention (grows every
/// step) or the cross-attention over the encoder output (computed once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Decoder,
    Encoder,
}

/// Key or value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kv {
    Key,
    Value,
}

/// optimum's order of the four cache tensors of a layer; graph inputs and outputs list layer 0's
/// four, then layer 1's, and so on.
pub const CACHE_ORDER: [(Part, Kv); 4] = [
    (Part::Decoder, Kv::Key),
    (Part::Decoder, Kv::Value),
    (Part::Encoder, Kv::Key),
    (Part::Encoder, Kv::Value),
];

impl Part {
    fn name(self) -> &'static str {
        match self {
            Part::Decoder => "decoder",
            Part::Encoder => "encoder",
        }
    }
}

impl Kv {
    fn name(self) -> &'static str {
        match self {
            Kv::Key => "key",
            Kv::Value => "value",
        }
    }
}

/// The graph input of a cached key or value: `past_key_values.{layer}.{part}.{kv}`.
pub fn past(layer: usize, part: Part, kv: Kv) -> String {
    format!("past_key_values.{layer}.{}.{}", part.name(), kv.name())
}

/// The graph output of a key or value to cache: `present.{layer}.{part}.{kv}`.
pub fn present(layer: usize, part: Part, kv: Kv) -> String {
    format!("present.{layer}.{}.{}", part.name(), kv.name())
}

/// The four [`past`] names of a layer, in [`CACHE_ORDER`].
pub fn past_layer(layer: usize) -> [String; 4] {
    CACHE_ORDER.map(|(part, kv)| past(layer, part, kv))
}

/// The four [`present`] names of a layer, in [`CACHE_ORDER`].
pub fn present_layer(layer: usize) -> [String; 4] {
    CACHE_ORDER.map(|(part, kv)| present(layer, part, kv))
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// The cache names of every layer, and the inputs and outputs of the three unmerged graphs, of
/// a model with a given number of decoder layers; built once per loaded model.
#[derive(Debug, Clone)]
pub(crate) struct IoNames {
    /// Per layer, the [`past`] inputs in [`CACHE_ORDER`].
    pub past_inputs: Vec<[String; 4]>,
    /// Per layer, the [`present`] outputs in [`CACHE_ORDER`].
    pub present_outputs: Vec<[String; 4]>,
}

impl IoNames {
    pub fn new(layers: usize) -> Self {
        IoNames {
            past_inputs: (0..layers).map(past_layer).collect(),
            present_outputs: (0..layers).map(present_layer).collect(),
        }
    }

    /// (inputs, outputs) of [`ENCODER`].
    pub fn encoder(&self) -> (Vec<String>, Vec<String>) {
        (
            strings(&[INPUT_IDS, ATTENTION_MASK]),
            strings(&[LAST_HIDDEN_STATE]),
        )
    }

    /// (inputs, outputs) of [`DECODER`]: logits and the whole present cache.
    pub fn decoder(&self) -> (Vec<String>, Vec<String>) {
        let mut outs = strings(&[LOGITS]);
        outs.extend(self.present_outputs.iter().flatten().cloned());
        let ins = strings(&[INPUT_IDS, ENCODER_ATTENTION_MASK, ENCODER_HIDDEN_STATES]);
        (ins, outs)
    }

    /// (inputs, outputs) of [`DECODER_WITH_PAST`]: the whole past in, logits and the decoder
    /// half of the present cache out.
    pub fn decoder_with_past(&self) -> (Vec<String>, Vec<String>) {
        let mut ins = strings(&[INPUT_IDS, ENCODER_ATTENTION_MASK]);
        ins.extend(self.past_inputs.iter().flatten().cloned());
        let mut outs = strings(&[LOGITS]);
        outs.extend(self.self_attention_outputs().cloned());
        (ins, outs)
    }

    /// (inputs, outputs) of [`DECODER_WITH_PAST_MASKED`]: those of [`DECODER_WITH_PAST`] and
    /// [`DECODER_ATTENTION_MASK`].
    pub fn decoder_with_past_masked(&self) -> (Vec<String>, Vec<String>) {
        let (mut ins, outs) = self.decoder_with_past();
        ins.insert(2, DECODER_ATTENTION_MASK.to_string());
        (ins, outs)
    }

    /// The decoder half (self-attention key and value) of every layer's present outputs: what
    /// [`DECODER_WITH_PAST`] returns besides the logits.
    pub fn self_attention_outputs(&self) -> impl Iterator<Item = &String> {
        self.present_outputs.iter().flat_map(|p| p[..2].iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_names_follow_optimum() {
        assert_eq!(
            past(3, Part::Encoder, Kv::Value),
            "past_key_values.3.encoder.value"
        );
        assert_eq!(present(0, Part::Decoder, Kv::Key), "present.0.decoder.key");
        assert_eq!(
            present_layer(1),
            [
                "present.1.decoder.key",
                "present.1.decoder.value",
                "present.1.encoder.key",
                "present.1.encoder.value"
            ]
        );
        let (ins, outs) = IoNames::new(2).decoder_with_past();
        assert_eq!(ins.len(), 2 + 8);
        let (masked, masked_outs) = IoNames::new(2).decoder_with_past_masked();
        assert_eq!(masked.len(), 2 + 8 + 1);
        assert!(masked.iter().any(|n| n == DECODER_ATTENTION_MASK));
        assert_eq!(masked_outs, outs);
        assert_eq!(
            outs[1..],
            [
                "present.0.decoder.key",
                "present.0.decoder.value",
                "present.1.decoder.key",
                "present.1.decoder.value"
            ]
        );
    }
}
