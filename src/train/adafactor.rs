//! AdaFactor (Shazeer & Stern 2018) on tch tensors, as transformers' `Adafactor` computes it
//! (`transformers/optimization.py`), which is what the closed-book QA paper fine-tuned with:
//! constant learning rate 1e-3, factored second moments for matrices, update clipping at 1.0,
//! second-moment decay `1 - t^-0.8`, ε = (1e-30, 1e-3), no first moment, no parameter scaling.
//! The other branches (relative step, parameter scaling, warm-up, first moment, weight decay) are
//! implemented too and checked against transformers in the tests.

use super::optim::{rms, saved_param_names, saved_slot, state_error, Optimizer};
use crate::error::{Error, Result};
use std::collections::{BTreeMap, HashMap};
use tch::{Kind, Tensor};

/// AdaFactor's settings, with transformers' argument names.
#[derive(Debug, Clone, PartialEq)]
pub struct AdafactorConfig {
    /// External learning rate; `None` requires `relative_step`.
    pub lr: Option<f64>,
    /// Regularisation constants for the squared gradient and for the parameter scale.
    pub eps: (f64, f64),
    /// Threshold of the root-mean-square of the update.
    pub clip_threshold: f64,
    /// Exponent of the second-moment decay `1 - t^decay_rate`.
    pub decay_rate: f64,
    /// First-moment decay; `None` keeps no first moment.
    pub beta1: Option<f64>,
    pub weight_decay: f64,
    /// Scale the learning rate by the parameter's RMS.
    pub scale_parameter: bool,
    /// Use the time-dependent learning rate `min(1e-2, 1/√t)` instead of `lr`.
    pub relative_step: bool,
    /// With `relative_step`: warm up as `1e-6 · t`.
    pub warmup_init: bool,
}

impl AdafactorConfig {
    /// The settings of Roberts et al. (2020), with learning rate `lr` (1e-3 in the paper).
    pub fn paper(lr: f64) -> Self {
        AdafactorConfig {
            lr: Some(lr),
            eps: (1e-30, 1e-3),
            clip_threshold: 1.0,
            decay_rate: -0.8,
            beta1: None,
            weight_decay: 0.0,
            scale_parameter: false,
            relative_step: false,
            warmup_init: false,
        }
    }
}

#[derive(Debug)]
enum SecondMoment {
    /// Row and column means of the squared gradient (tensors of rank ≥ 2).
    Factored {
        row: Tensor,
        col: Tensor,
    },
    Full(Tensor),
}

#[derive(Debug)]
struct ParamState {
    second: SecondMoment,
    exp_avg: Option<Tensor>,
}

/// The AdaFactor optimizer.
#[derive(Debug)]
pub struct Adafactor {
    cfg: AdafactorConfig,
    step: u64,
    state: BTreeMap<String, ParamState>,
}

impl Adafactor {
    /// Checks the settings as transformers does.
    pub fn new(cfg: AdafactorConfig) -> Result<Self> {
        if cfg.lr.is_some() && cfg.relative_step {
            return Err(Error::setting(
                "relative_step",
                "AdaFactor: a manual learning rate (lr) cannot be combined with relative_step",
            ));
        }
        if cfg.lr.is_none() && !cfg.relative_step {
            return Err(Error::setting(
                "lr",
                "AdaFactor: without relative_step a learning rate is required",
            ));
        }
        if cfg.warmup_init && !cfg.relative_step {
            return Err(Error::setting(
                "warmup_init",
                "AdaFactor: warmup_init requires relative_step",
            ));
        }
        Ok(Adafactor {
            cfg,
            step: 0,
            state: BTreeMap::new(),
        })
    }

    /// `_get_lr`: the step size for parameter RMS `param_rms` at step `step` (1-based).
    fn step_size(&self, step: u64, param_rms: Option<f64>) -> f64 {
        let mut rel = self.cfg.lr.unwrap_or(0.0);
        if self.cfg.relative_step {
            let min_step = if self.cfg.warmup_init {
                1e-6 * step as f64
            } else {
                1e-2
            };
            rel = min_step.min(1.0 / (step as f64).sqrt());
        }
        match param_rms {
            Some(r) if self.cfg.scale_parameter => self.cfg.eps.1.max(r) * rel,
            _ => rel,
        }
    }

    fn new_state(&self, grad: &Tensor) -> Result<ParamState> {
        let shape = grad.size();
        let opts = (Kind::Float, grad.device());
        let second = if shape.len() >= 2 {
            let n = shape.len();
            let row = Tensor::f_zeros(&shape[..n - 1], opts)?;
            let mut col_shape = shape[..n - 2].to_vec();
            col_shape.push(shape[n - 1]);
            SecondMoment::Factored {
                row,
                col: Tensor::f_zeros(&col_shape, opts)?,
            }
        } else {
            SecondMoment::Full(Tensor::f_zeros(&shape, opts)?)
        };
        let exp_avg = match self.cfg.beta1 {
            Some(_) => Some(Tensor::f_zeros(&shape, opts)?),
            None => None,
        };
        Ok(ParamState { second, exp_avg })
    }
}

/// Decay the second moment by `beta2t`, add `sq` (the squared gradient plus ε₁), and return
/// the unclipped update: the gradient divided by the root of the (reconstructed) moment.
fn second_moment_update(
    second: &mut SecondMoment,
    sq: &Tensor,
    grad: &Tensor,
    beta2t: f64,
) -> Result<Tensor> {
    Ok(match second {
        SecondMoment::Factored { row, col } => {
            let _ = row.f_mul_scalar_(beta2t)?;
            let _ = row.f_add_(
                &sq.f_mean_dim(-1, false, Kind::Float)?
                    .f_mul_scalar(1.0 - beta2t)?,
            )?;
            let _ = col.f_mul_scalar_(beta2t)?;
            let _ = col.f_add_(
                &sq.f_mean_dim(-2, false, Kind::Float)?
                    .f_mul_scalar(1.0 - beta2t)?,
            )?;
            // _approx_sq_grad: the rank-1 reconstruction of the second moment.
            let r = row
                .f_div(&row.f_mean_dim(-1, true, Kind::Float)?)?
                .f_rsqrt()?
                .f_unsqueeze(-1)?;
            let c = col.f_unsqueeze(-2)?.f_rsqrt()?;
            r.f_mul(&c)?.f_mul(grad)?
        }
        SecondMoment::Full(v) => {
            let _ = v.f_mul_scalar_(beta2t)?;
            let _ = v.f_add_(&sq.f_mul_scalar(1.0 - beta2t)?)?;
            v.f_rsqrt()?.f_mul(grad)?
        }
    })
}

impl Optimizer for Adafactor {
    fn step(&mut self, params: &[(String, Tensor)]) -> Result<()> {
        let _guard = tch::no_grad_guard();
        self.step += 1;
        let step = self.step;
        let beta2t = 1.0 - (step as f64).powf(self.cfg.decay_rate);
        for (name, p) in params {
            let grad = p.f_grad()?;
            if !grad.defined() {
                continue;
            }
            let grad = grad.f_to_kind(Kind::Float)?;
            if !self.state.contains_key(name) {
                let st = self.new_state(&grad)?;
                self.state.insert(name.clone(), st);
            }
            let half = matches!(p.kind(), Kind::Half | Kind::BFloat16);
            let mut p32 = if half {
                p.f_to_kind(Kind::Float)?
            } else {
                p.shallow_clone()
            };
            let param_rms = match self.cfg.scale_parameter {
                true => Some(rms(&p32)?.f_double_value(&[])?),
                false => None,
            };
            let lr = self.step_size(step, param_rms);
            let Some(st) = self.state.get_mut(name) else {
                continue;
            };
            let sq = grad.f_square()?.f_add_scalar(self.cfg.eps.0)?;
            let mut update = second_moment_update(&mut st.second, &sq, &grad, beta2t)?;
            let denom = rms(&update)?
                .f_div_scalar(self.cfg.clip_threshold)?
                .f_clamp_min(1.0)?;
            update = update.f_div(&denom)?.f_mul_scalar(lr)?;
            if let (Some(beta1), Some(m)) = (self.cfg.beta1, st.exp_avg.as_mut()) {
                let _ = m.f_mul_scalar_(beta1)?;
                let _ = m.f_add_(&update.f_mul_scalar(1.0 - beta1)?)?;
                update = m.shallow_clone();
            }
            if self.cfg.weight_decay != 0.0 {
                let decay = p32.f_mul_scalar(-self.cfg.weight_decay * lr)?;
                let _ = p32.f_add_(&decay)?;
            }
            let _ = p32.f_sub_(&update)?;
            if half {
                let mut p = p.shallow_clone();
                p.f_copy_(&p32)?;
            }
        }
        Ok(())
    }

    fn steps(&self) -> u64 {
        self.step
    }

    fn lr(&self) -> f64 {
        self.step_size(self.step + 1, None)
    }

    fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (name, st) in &self.state {
            match &st.second {
                SecondMoment::Factored { row, col } => {
                    out.push((format!("{name}/exp_avg_sq_row"), row.shallow_clone()));
                    out.push((format!("{name}/exp_avg_sq_col"), col.shallow_clone()));
                }
                SecondMoment::Full(v) => {
                    out.push((format!("{name}/exp_avg_sq"), v.shallow_clone()))
                }
            }
            if let Some(m) = &st.exp_avg {
                out.push((format!("{name}/exp_avg"), m.shallow_clone()));
            }
        }
        out
    }

    fn load_state(&mut self, steps: u64, tensors: &HashMap<String, Tensor>) -> Result<()> {
        let names = saved_param_names(tensors);
        let mut state = BTreeMap::new();
        for name in names {
            let second =
                if tensors.contains_key(&format!("{name}/exp_avg_sq")) {
                    let v = &tensors[&format!("{name}/exp_avg_sq")];
                    SecondMoment::Full(v.shallow_clone())
                } else {
                    let row = tensors.get(&format!("{name}/exp_avg_sq_row"));
                    let col = tensors.get(&format!("{name}/exp_avg_sq_col"));
                    match (row, col) {
                        (Some(r), Some(c)) => SecondMoment::Factored {
                            row: r.shallow_clone(),
                            col: c.shallow_clone(),
                        },
                        _ => return Err(state_error(
                            format!("{name}/exp_avg_sq"),
                            "missing: AdaFactor's state has no second moment for this parameter \
                             (written by AdamW?)",
                        )),
                    }
                };
            let exp_avg = match self.cfg.beta1 {
                Some(_) => {
                    let shape = match &second {
                        SecondMoment::Full(v) => v.size(),
                        SecondMoment::Factored { row, col } => {
                            let mut s = row.size();
                            s.push(*col.size().last().unwrap_or(&0));
                            s
                        }
                    };
                    Some(saved_slot(tensors, name, "exp_avg", &shape)?)
                }
                None => None,
            };
            state.insert(name.to_string(), ParamState { second, exp_avg });
        }
        self.state = state;
        self.step = steps;
        Ok(())
    }
}
