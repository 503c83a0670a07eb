//! The optimizer interface the trainer uses, and what it saves in a checkpoint.

use crate::error::Result;
use std::collections::HashMap;
use tch::Tensor;

/// An optimizer over named parameters. Gradients are read from each parameter's `.grad()`;
/// parameters without a gradient are left alone. The state is explicit so checkpoints can save
/// and restore it exactly.
pub trait Optimizer {
    /// One update of every parameter that has a gradient.
    fn step(&mut self, params: &[(String, Tensor)]) -> Result<()>;
    /// Number of steps taken.
    fn steps(&self) -> u64;
    /// The learning rate of the next step (for logging).
    fn lr(&self) -> f64;
    /// Every state tensor, named `<param name>/<slot>`.
    fn state_tensors(&self) -> Vec<(String, Tensor)>;
    /// Restore the state written by [`Optimizer::state_tensors`] after `steps` steps.
    fn load_state(&mut self, steps: u64, tensors: &HashMap<String, Tensor>) -> Result<()>;
}

/// `‖t‖₂ / √numel`, as transformers' `Adafactor._rms`.
pub(crate) fn rms(t: &Tensor) -> Tensor {
    t.norm() / (t.numel() as f64).sqrt()
}

/// Look up `<name>/<slot>` in a saved optimizer state, with a clear error when it is missing or
/// has the wrong shape.
/// The parameter names of a saved optimizer state (`{param}/{slot}` keys), sorted, once each.
pub(crate) fn saved_param_names(tensors: &std::collections::HashMap<String, Tensor>) -> Vec<&str> {
    let mut names: Vec<&str> = tensors
        .keys()
        .filter_map(|k| k.rsplit_once('/').map(|(n, _)| n))
        .collect();
    names.sort();
    names.dedup();
    names
}

pub(crate) fn saved_slot(
    tensors: &HashMap<String, Tensor>,
    name: &str,
    slot: &str,
    shape: &[i64],
) -> Result<Tensor> {
    let key = format!("{name}/{slot}");
    let t = tensors.get(&key).ok_or_else(|| {
        crate::Error::Invalid(format!(
            "optimizer state has no tensor `{key}` (written by another optimizer or model?)"
        ))
    })?;
    if t.size() != shape {
        return Err(crate::Error::Invalid(format!(
            "optimizer state tensor `{key}` has shape {:?}, expected {shape:?}",
            t.size()
        )));
    }
    Ok(t.shallow_clone())
}
