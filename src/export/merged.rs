//! `decoder_model_merged.onnx`: optimum's merged decoder, both decoders behind one `If` on the
//! `use_cache_branch` input (see optimum's `merge_decoders`,
//! <https://github.com/huggingface/optimum/blob/main/optimum/onnx/graph_transformations.py>).
//!
//! The two branches are the graphs of `decoder_model.onnx` (else) and
//! `decoder_with_past_model.onnx` (then) with prefixed names; their initializers are hoisted to the
//! main graph, where both branches see them, and point into the same `model.onnx_data`. The
//! with-past branch passes the encoder keys and values through so both branches have the same
//! outputs.
//!
//! The head size of the `past_key_values.*` inputs is a named axis here, not `d_kv`: on the first
//! step optimum's `ORTDecoderForSeq2Seq` feeds empty dummy pasts shaped with
//! `hidden_size // num_attention_heads`, which is not `d_kv` for every T5 (t5-11b, the test
//! fixtures), and ONNX Runtime would reject a fixed `d_kv` there. The no-cache branch never reads
//! them.

use super::graphs::{
    cache_len, decoder_graph, finish_graph, present_len, DecoderStep, BATCH, DEC_LEN, ENC_LEN, F32,
    I64,
};
use super::weights::Params;
use crate::config::T5Config;
use crate::error::Result;
use crate::onnx::builder::{value_info, Attr, Dim, Graph};
use crate::onnx::layout::{
    self, CACHE_ORDER, ENCODER_ATTENTION_MASK, ENCODER_HIDDEN_STATES, INPUT_IDS, LOGITS,
    USE_CACHE_BRANCH,
};
use crate::onnx::proto::{data_type, GraphProto, ModelProto};

const HEAD_DIM: Dim = Dim::Sym("past_head_size");

pub(crate) fn decoder_merged(cfg: &T5Config, p: &mut Params<'_>) -> Result<ModelProto> {
    let mut no_past = decoder_graph(cfg, p, DecoderStep::First, Some("/no_past"))?;
    let mut with_past = decoder_graph(cfg, p, DecoderStep::WithPast, Some("/with_past"))?;
    let mut g = Graph::new("t5_decoder_merged");
    let h = Dim::Fixed(cfg.num_heads as i64);
    let kv_dim = Dim::Fixed(cfg.d_kv as i64);
    let d = Dim::Fixed(cfg.d_model as i64);
    g.input(ENCODER_ATTENTION_MASK, I64, &[BATCH, ENC_LEN]);
    g.input(INPUT_IDS, I64, &[BATCH, DEC_LEN]);
    g.input(ENCODER_HIDDEN_STATES, F32, &[BATCH, ENC_LEN, d]);
    let n = cfg.decoder_layers();
    for i in 0..n {
        for (part, kv) in CACHE_ORDER {
            let dims = [BATCH, h.clone(), cache_len(part), HEAD_DIM];
            g.input(&layout::past(i, part, kv), F32, &dims);
        }
    }
    let cond = g.input(USE_CACHE_BRANCH, data_type::BOOL, &[Dim::Fixed(1)]);
    g.add_initializers(no_past.take_initializers());
    g.add_initializers(with_past.take_initializers());
    let mut outputs = vec![(
        LOGITS.to_string(),
        vec![BATCH, DEC_LEN, Dim::Fixed(cfg.vocab_size as i64)],
    )];
    for i in 0..n {
        for (part, kv) in CACHE_ORDER {
            let dims = vec![BATCH, h.clone(), present_len(part), kv_dim.clone()];
            outputs.push((layout::present(i, part, kv), dims));
        }
    }
    // Branch outputs must come in the If's output order.
    let order = |mut branch: GraphProto, prefix: &str| {
        branch.input.clear();
        let mut sorted = Vec::new();
        for (name, _) in &outputs {
            let want = format!("{prefix}{name}");
            if let Some(pos) = branch
                .output
                .iter()
                .position(|o| o.name.as_deref() == Some(&want))
            {
                sorted.push(branch.output.remove(pos));
            }
        }
        branch.output = sorted;
        branch
    };
    let then_branch = order(with_past.into_proto(), "/with_past");
    let else_branch = order(no_past.into_proto(), "/no_past");
    let results: Vec<_> = outputs.iter().map(|(n, _)| g.named(n)).collect();
    let results: Vec<_> = results.iter().collect();
    g.node(
        "If",
        &[&cond],
        &results,
        vec![
            Attr::Graph("then_branch", Box::new(then_branch)),
            Attr::Graph("else_branch", Box::new(else_branch)),
        ],
    );
    let mut model = finish_graph(
        g,
        cfg,
        "T5 decoder, with and without past (cbqa export, optimum's merged layout)",
    );
    if let Some(graph) = model.graph.as_mut() {
        graph.output = outputs
            .iter()
            .map(|(name, dims)| value_info(name, F32, dims))
            .collect();
    }
    Ok(model)
}
