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
pub(crate) fn rms(t: &Tensor) -> Result<Tensor> {
    Ok(t.f_norm()?.f_div_scalar((t.numel() as f64).sqrt())?)
}

/// The file the optimizer state is saved in, named by errors about its tensors.
pub(crate) const STATE_FILE: &str = "optimizer.safetensors";

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

/// Look up `<name>/<slot>` in a saved optimizer state, with a clear error when it is missing or
/// has the wrong shape.
pub(crate) fn saved_slot(
    tensors: &HashMap<String, Tensor>,
    name: &str,
    slot: &str,
    shape: &[i64],
) -> Result<Tensor> {
    let key = format!("{name}/{slot}");
    let Some(t) = tensors.get(&key) else {
        return Err(state_error(
            key,
            "missing from the optimizer state (written by another optimizer or model?)",
        ));
    };
    if t.size() != shape {
        let msg = format!("shape {:?}, expected {shape:?}", t.size());
        return Err(state_error(key, msg));
    }
    Ok(t.shallow_clone())
}

/// An error about tensor `key` of the saved optimizer state.
pub(crate) fn state_error(key: impl Into<String>, msg: impl Into<String>) -> crate::Error {
    crate::Error::Tensor {
        path: STATE_FILE.into(),
        name: key.into(),
        msg: msg.into(),
    }
}
