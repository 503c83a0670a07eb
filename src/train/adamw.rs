//! AdamW (Loshchilov & Hutter 2019) on tch tensors, as `torch.optim.AdamW` computes it
//! (decoupled weight decay, bias-corrected moments).

use super::optim::{saved_param_names, saved_slot, Optimizer};
use crate::error::Result;
use std::collections::{BTreeMap, HashMap};
use tch::Tensor;

/// AdamW's settings, torch's names and defaults (weight decay 0.01).
#[derive(Debug, Clone, PartialEq)]
pub struct AdamWConfig {
    pub lr: f64,
    pub betas: (f64, f64),
    pub eps: f64,
    pub weight_decay: f64,
}

impl AdamWConfig {
    /// torch's defaults with learning rate `lr`.
    pub fn with_lr(lr: f64) -> Self {
        AdamWConfig {
            lr,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

#[derive(Debug)]
struct Moments {
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
}

/// The AdamW optimizer.
#[derive(Debug)]
pub struct AdamW {
    cfg: AdamWConfig,
    step: u64,
    state: BTreeMap<String, Moments>,
}

impl AdamW {
    pub fn new(cfg: AdamWConfig) -> Self {
        AdamW {
            cfg,
            step: 0,
            state: BTreeMap::new(),
        }
    }
}

impl Optimizer for AdamW {
    fn step(&mut self, params: &[(String, Tensor)]) -> Result<()> {
        let _guard = tch::no_grad_guard();
        self.step += 1;
        let (b1, b2) = self.cfg.betas;
        let lr = self.cfg.lr;
        let bc1 = 1.0 - b1.powi(self.step as i32);
        let bc2 = 1.0 - b2.powi(self.step as i32);
        for (name, p) in params {
            let grad = p.f_grad()?;
            if !grad.defined() {
                continue;
            }
            let grad = grad.f_to_kind(p.kind())?;
            if !self.state.contains_key(name) {
                let moments = Moments {
                    exp_avg: p.f_zeros_like()?,
                    exp_avg_sq: p.f_zeros_like()?,
                };
                self.state.insert(name.clone(), moments);
            }
            let Some(m) = self.state.get_mut(name) else {
                continue;
            };
            let mut p = p.shallow_clone();
            let _ = p.f_mul_scalar_(1.0 - lr * self.cfg.weight_decay)?;
            let _ = m.exp_avg.f_lerp_(&grad, 1.0 - b1)?;
            let _ = m.exp_avg_sq.f_mul_scalar_(b2)?;
            let _ = m
                .exp_avg_sq
                .f_addcmul_(&grad.f_mul_scalar(1.0 - b2)?, &grad)?;
            let denom = m
                .exp_avg_sq
                .f_sqrt()?
                .f_div_scalar(bc2.sqrt())?
                .f_add_scalar(self.cfg.eps)?;
            let _ = p.f_addcdiv_(&m.exp_avg.f_mul_scalar(-lr / bc1)?, &denom)?;
        }
        Ok(())
    }

    fn steps(&self) -> u64 {
        self.step
    }

    fn lr(&self) -> f64 {
        self.cfg.lr
    }

    fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (name, m) in &self.state {
            out.push((format!("{name}/exp_avg"), m.exp_avg.shallow_clone()));
            out.push((format!("{name}/exp_avg_sq"), m.exp_avg_sq.shallow_clone()));
        }
        out
    }

    fn load_state(&mut self, steps: u64, tensors: &HashMap<String, Tensor>) -> Result<()> {
        let names = saved_param_names(tensors);
        let mut state = BTreeMap::new();
        for name in names {
            let exp_avg = saved_slot(tensors, name, "exp_avg", &tensors_shape(tensors, name))?;
            let exp_avg_sq = saved_slot(tensors, name, "exp_avg_sq", &exp_avg.size())?;
            state.insert(
                name.to_string(),
                Moments {
                    exp_avg,
                    exp_avg_sq,
                },
            );
        }
        self.state = state;
        self.step = steps;
        Ok(())
    }
}

fn tensors_shape(tensors: &HashMap<String, Tensor>, name: &str) -> Vec<i64> {
    tensors
        .get(&format!("{name}/exp_avg"))
        .map(|t| t.size())
        .unwrap_or_default()
}
