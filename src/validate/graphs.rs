//! One case through one backend: every graph of the export run through the backend's own
//! sessions ([`Backend::run_graph`]) and each output compared with the reference.
//!
//! Each graph is checked on its own: the decoder gets the reference encoder states, and the
//! decoder-with-past gets the reference keys and values of all but the last target position, so
//! a failure names the graph and output that is wrong. The masked decoder-with-past gets a
//! left-padded cache in which each row holds fewer real positions (as a row that joined a
//! longer-running batch), and must give each row the reference outputs of its own shorter prefix.

use super::cases::{
    argmax_agreement, left_padded, left_padding, logits_at_last_real, max_abs, max_abs_diff,
    padding_mask, past_before_last, Case, Expected,
};
use super::ValidationReport;
use crate::config::T5Config;
use crate::error::Result;
use crate::onnx::layout::{
    past, present, Kv, Part, ATTENTION_MASK, CACHE_ORDER, DECODER, DECODER_ATTENTION_MASK,
    DECODER_MERGED, DECODER_WITH_PAST, DECODER_WITH_PAST_MASKED, ENCODER, ENCODER_ATTENTION_MASK,
    ENCODER_HIDDEN_STATES, INPUT_IDS, LAST_HIDDEN_STATE, LOGITS, USE_CACHE_BRANCH,
};
use crate::progress::Progress;
use crate::runtime::{Backend, GraphInput, GraphOutputs};
use ndarray::{s, Array2, ArrayD};

/// Named inputs of one graph run.
type Inputs = Vec<(String, GraphInput)>;

fn ids(a: &Array2<i64>) -> GraphInput {
    GraphInput::I64(a.clone().into_dyn())
}

/// Argmax agreement summed over the logits checked: (same, decisive, near-ties).
pub(super) type Agreement = (usize, usize, usize);

/// Which graphs a backend validates besides the encoder, decoder and decoder-with-past.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct OptionalGraphs {
    /// Both branches of `decoder_model_merged.onnx`.
    pub merged: bool,
    /// `decoder_with_past_masked_model.onnx`.
    pub masked: bool,
}

impl OptionalGraphs {
    /// The number of graph runs per case.
    pub fn runs(self) -> usize {
        crate::onnx::layout::GRAPHS.len() + 2 * usize::from(self.merged) + usize::from(self.masked)
    }
}

/// The checks of one case in one backend; the differences go to `report`.
pub(super) struct CaseCheck<'a> {
    pub backend: &'a Backend,
    pub cfg: &'a T5Config,
    pub case: &'a Case,
    pub exp: &'a Expected,
    pub decisive_margin: f32,
    pub report: &'a mut ValidationReport,
    pub progress: &'a mut Progress,
}

impl CaseCheck<'_> {
    /// Every graph the backend validates: the three unmerged ones, the masked decoder with past
    /// and both branches of the merged decoder as `optional` says.
    pub fn run_all(mut self, optional: OptionalGraphs) -> Result<Agreement> {
        let mut agree = (0, 0, 0);
        self.encoder()?;
        self.decoder(&mut agree)?;
        self.decoder_with_past(&mut agree)?;
        if optional.masked {
            self.decoder_with_past_masked(&mut agree)?;
        }
        if optional.merged {
            // Fed the way optimum feeds it: the first step with empty pasts and
            // use_cache_branch = false, a later step with real pasts and use_cache_branch = true.
            self.merged(false)?;
            self.merged(true)?;
        }
        Ok(agree)
    }

    fn run(&mut self, graph: &'static str, inputs: Inputs) -> Result<GraphOutputs> {
        let out = self.backend.run_graph(graph, inputs)?;
        let rt = self.backend.name();
        self.progress.inc(1, &format!("{rt} {graph}"));
        Ok(out)
    }

    /// Record the difference of output `name` from `want` (infinite when it is missing).
    fn compare(&mut self, graph: &'static str, out: &GraphOutputs, name: &str, want: &ArrayD<f32>) {
        let diff = out
            .get(name)
            .map_or(f32::INFINITY, |got| max_abs_diff(got, want));
        let rt = self.backend.name();
        self.report.record(rt, graph, name, diff, max_abs(want));
    }

    /// Every present.{i}.{decoder,encoder}.{key,value} of a graph that returns the whole cache.
    fn compare_presents(&mut self, graph: &'static str, out: &GraphOutputs) {
        for i in 0..self.cfg.decoder_layers() {
            for (part, kv) in CACHE_ORDER {
                let want = self.exp.dec.cache(i, part, kv).clone().into_dyn();
                self.compare(graph, out, &present(i, part, kv), &want);
            }
        }
    }

    /// Add the argmax agreement of the logits in `out` with `want`.
    fn agree(&self, agree: &mut Agreement, out: &GraphOutputs, want: &ArrayD<f32>) {
        if let Some(got) = out.get(LOGITS) {
            let margin = self.decisive_margin * max_abs(want).max(1.0);
            let (s, d, n) = argmax_agreement(got, want, margin);
            *agree = (agree.0 + s, agree.1 + d, agree.2 + n);
        }
    }

    /// The number of target positions of the case.
    fn steps(&self) -> usize {
        self.case.dec.ncols()
    }

    /// The reference logits of the last target position.
    fn last_logits(&self) -> ArrayD<f32> {
        let t = self.steps();
        let logits = &self.exp.dec.logits;
        logits.slice(s![.., t - 1.., ..]).to_owned().into_dyn()
    }

    /// The last target token of every row, `[batch, 1]`.
    fn last_token(&self) -> GraphInput {
        let t = self.steps();
        GraphInput::I64(self.case.dec.slice(s![.., t - 1..]).to_owned().into_dyn())
    }

    /// The reference cache before the last target position, as past_key_values inputs.
    fn pasts(&self, inputs: &mut Inputs) {
        for i in 0..self.cfg.decoder_layers() {
            for (part, kv) in CACHE_ORDER {
                let value = past_before_last(self.exp, i, part, kv, self.steps());
                inputs.push((past(i, part, kv), GraphInput::F32(value)));
            }
        }
    }

    fn encoder(&mut self) -> Result<()> {
        let inputs = vec![
            (INPUT_IDS.into(), ids(&self.case.ids)),
            (ATTENTION_MASK.into(), ids(&self.case.mask)),
        ];
        let out = self.run(ENCODER, inputs)?;
        let want = self.exp.encoder.clone();
        self.compare(ENCODER, &out, LAST_HIDDEN_STATE, &want);
        Ok(())
    }

    fn decoder(&mut self, agree: &mut Agreement) -> Result<()> {
        let inputs = vec![
            (ENCODER_ATTENTION_MASK.into(), ids(&self.case.mask)),
            (INPUT_IDS.into(), ids(&self.case.dec)),
            (
                ENCODER_HIDDEN_STATES.into(),
                GraphInput::F32(self.exp.encoder.clone()),
            ),
        ];
        let out = self.run(DECODER, inputs)?;
        let logits = self.exp.dec.logits.clone().into_dyn();
        self.compare(DECODER, &out, LOGITS, &logits);
        self.agree(agree, &out, &logits);
        self.compare_presents(DECODER, &out);
        Ok(())
    }

    /// One step with past: the reference keys/values of positions 0..t-1, then token t-1.
    fn decoder_with_past(&mut self, agree: &mut Agreement) -> Result<()> {
        let mut inputs = vec![
            (ENCODER_ATTENTION_MASK.into(), ids(&self.case.mask)),
            (INPUT_IDS.into(), self.last_token()),
        ];
        self.pasts(&mut inputs);
        let out = self.run(DECODER_WITH_PAST, inputs)?;
        let last = self.last_logits();
        self.compare(DECODER_WITH_PAST, &out, LOGITS, &last);
        self.agree(agree, &out, &last);
        for i in 0..self.cfg.decoder_layers() {
            for kv in [Kv::Key, Kv::Value] {
                let want = self.exp.dec.cache(i, Part::Decoder, kv).clone().into_dyn();
                let name = present(i, Part::Decoder, kv);
                self.compare(DECODER_WITH_PAST, &out, &name, &want);
            }
        }
        Ok(())
    }

    /// One masked step with a left-padded past: row `i` holds `pad_i` filler columns (masked
    /// out) and the reference keys/values of its first `t - 1 - pad_i` positions, and is fed its
    /// token at position `t - 1 - pad_i`; its logits must be the reference's at that position,
    /// its present cache the padded past plus the reference's new keys/values.
    fn decoder_with_past_masked(&mut self, agree: &mut Agreement) -> Result<()> {
        let t = self.steps();
        let pads = left_padding(self.case.dec.nrows(), t);
        let tokens = ndarray::Array2::from_shape_fn((pads.len(), 1), |(i, _)| {
            self.case.dec[[i, t - 1 - pads[i]]]
        });
        let mut inputs = vec![
            (ENCODER_ATTENTION_MASK.into(), ids(&self.case.mask)),
            (INPUT_IDS.into(), ids(&tokens)),
            (
                DECODER_ATTENTION_MASK.into(),
                ids(&padding_mask(&pads, t - 1)),
            ),
        ];
        for i in 0..self.cfg.decoder_layers() {
            for (part, kv) in CACHE_ORDER {
                let value = match part {
                    Part::Decoder => left_padded(self.exp.dec.cache(i, part, kv), &pads, t - 1),
                    Part::Encoder => past_before_last(self.exp, i, part, kv, t),
                };
                inputs.push((past(i, part, kv), GraphInput::F32(value)));
            }
        }
        let out = self.run(DECODER_WITH_PAST_MASKED, inputs)?;
        let logits = logits_at_last_real(&self.exp.dec.logits, &pads);
        self.compare(DECODER_WITH_PAST_MASKED, &out, LOGITS, &logits);
        self.agree(agree, &out, &logits);
        for i in 0..self.cfg.decoder_layers() {
            for kv in [Kv::Key, Kv::Value] {
                let want = left_padded(self.exp.dec.cache(i, Part::Decoder, kv), &pads, t);
                let name = present(i, Part::Decoder, kv);
                self.compare(DECODER_WITH_PAST_MASKED, &out, &name, &want);
            }
        }
        Ok(())
    }

    /// One branch of the merged decoder: the first step (`use_cache` false, empty pasts) or
    /// a step with past.
    fn merged(&mut self, use_cache: bool) -> Result<()> {
        let mut inputs = vec![
            (ENCODER_ATTENTION_MASK.into(), ids(&self.case.mask)),
            (
                ENCODER_HIDDEN_STATES.into(),
                GraphInput::F32(self.exp.encoder.clone()),
            ),
            (
                USE_CACHE_BRANCH.into(),
                GraphInput::Bool(ndarray::arr1(&[use_cache]).into_dyn()),
            ),
        ];
        if use_cache {
            inputs.push((INPUT_IDS.into(), self.last_token()));
            self.pasts(&mut inputs);
        } else {
            inputs.push((INPUT_IDS.into(), ids(&self.case.dec)));
            let (b, _) = self.case.mask.dim();
            let (h, d) = (self.cfg.num_heads, self.cfg.d_kv);
            let empty = ndarray::Array4::<f32>::zeros((b, h, 0, d)).into_dyn();
            for i in 0..self.cfg.decoder_layers() {
                for (part, kv) in CACHE_ORDER {
                    inputs.push((past(i, part, kv), GraphInput::F32(empty.clone())));
                }
            }
        }
        let out = self.run(DECODER_MERGED, inputs)?;
        let logits = match use_cache {
            true => self.last_logits(),
            false => self.exp.dec.logits.clone().into_dyn(),
        };
        self.compare(DECODER_MERGED, &out, LOGITS, &logits);
        self.compare_presents(DECODER_MERGED, &out);
        Ok(())
    }
}
