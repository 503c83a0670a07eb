//! AdaFactor and AdamW against transformers' `Adafactor` and torch's `AdamW`, with trajectories
//! made by scripts/make_optim_fixtures.py (tests/fixtures/optim/reference.safetensors).

use super::model_parity::{fixture, max_abs_diff};
use cbqa::model::T5;
use cbqa::train::{Adafactor, AdafactorConfig, AdamW, AdamWConfig, Optimizer};
use cbqa::ModelDir;
use std::collections::HashMap;
use tch::{Device, Kind, Tensor};

fn reference() -> HashMap<String, Tensor> {
    super::model_parity::reference("optim")
}

/// Runs `opt` on the synthetic problem and returns the largest difference to the reference.
fn synthetic(opt: &mut dyn Optimizer, prefix: &str, r: &HashMap<String, Tensor>) -> f64 {
    let names = ["a", "b", "c"];
    let params: Vec<(String, Tensor)> = names
        .iter()
        .map(|n| {
            let p = r[&format!("syn.{n}.init")].copy().set_requires_grad(true);
            (n.to_string(), p)
        })
        .collect();
    let mut worst: f64 = 0.0;
    for step in 0..3 {
        for (n, p) in &params {
            let mut p = p.shallow_clone();
            p.zero_grad();
            // d/dp Σ p·g = g exactly: sets the gradient to the reference's.
            (&p * &r[&format!("syn.{n}.grad.{step}")])
                .sum(Kind::Float)
                .backward();
        }
        opt.step(&params).unwrap();
        for (n, p) in &params {
            let d = max_abs_diff(p, &r[&format!("{prefix}.{n}.{step}")]);
            worst = worst.max(d);
        }
    }
    worst
}

#[test]
fn adafactor_matches_transformers_on_every_branch() {
    let r = reference();
    let mut paper = Adafactor::new(AdafactorConfig::paper(1e-3)).unwrap();
    let d = synthetic(&mut paper, "adafactor_paper", &r);
    eprintln!("adafactor (paper settings): max abs param diff {d:.3e}");
    assert!(d <= 1e-6, "{d}");
    let full = AdafactorConfig {
        lr: None,
        beta1: Some(0.9),
        weight_decay: 0.01,
        relative_step: true,
        scale_parameter: true,
        warmup_init: true,
        ..AdafactorConfig::paper(1e-3)
    };
    let mut opt = Adafactor::new(full).unwrap();
    let d = synthetic(&mut opt, "adafactor_full", &r);
    eprintln!("adafactor (all branches): max abs param diff {d:.3e}");
    assert!(d <= 1e-6, "{d}");
    assert!(Adafactor::new(AdafactorConfig {
        relative_step: true,
        ..AdafactorConfig::paper(1e-3)
    })
    .is_err());
}

#[test]
fn adamw_matches_torch() {
    let r = reference();
    let mut opt = AdamW::new(AdamWConfig::with_lr(1e-3));
    let d = synthetic(&mut opt, "adamw", &r);
    eprintln!("adamw: max abs param diff {d:.3e}");
    assert!(d <= 1e-6, "{d}");
}

#[test]
fn adafactor_trains_the_fixture_model_like_transformers() {
    let r = reference();
    let dir = ModelDir::open(&fixture("t5_v1_1")).unwrap();
    let t5 = T5::from_model_dir(&dir, Device::Cpu, Kind::Float).unwrap();
    let params = t5.named_parameters();
    let mut opt = Adafactor::new(AdafactorConfig::paper(1e-3)).unwrap();
    let (ids, mask, labels) = (&r["t5_input_ids"], &r["t5_attention_mask"], &r["t5_labels"]);
    let ref_losses = Vec::<f64>::try_from(&r["t5_loss"].to_kind(Kind::Double)).unwrap();
    for (step, ref_loss) in ref_losses.iter().enumerate() {
        for (_, p) in &params {
            p.shallow_clone().zero_grad();
        }
        // Dropout off, as in the reference (model.eval()).
        let out = t5.model().loss(ids, mask, labels, false).unwrap();
        let loss = out.sum / out.tokens as f64;
        let l = loss.double_value(&[]);
        assert!(
            (l - ref_loss).abs() <= 1e-4 * ref_loss.abs(),
            "step {step}: loss {l} vs {ref_loss}"
        );
        loss.backward();
        opt.step(&params).unwrap();
    }
    let mut worst: f64 = 0.0;
    for (name, p) in &params {
        let d = max_abs_diff(p, &r[&format!("t5.{name}")]);
        worst = worst.max(d);
    }
    eprintln!("adafactor, 3 steps on t5_v1_1: max abs param diff {worst:.3e}");
    assert!(worst <= 1e-5, "{worst}");
}

#[test]
fn optimizer_state_round_trips() {
    let r = reference();
    for use_adamw in [false, true] {
        let make = || -> Box<dyn Optimizer> {
            if use_adamw {
                Box::new(AdamW::new(AdamWConfig::with_lr(1e-3)))
            } else {
                Box::new(Adafactor::new(AdafactorConfig::paper(1e-3)).unwrap())
            }
        };
        // Two steps, save, restore into a fresh optimizer, third step: same as three steps.
        let prefix = if use_adamw {
            "adamw"
        } else {
            "adafactor_paper"
        };
        let mut a = make();
        let _ = synthetic(a.as_mut(), prefix, &r);
        let state: HashMap<String, Tensor> = a
            .state_tensors()
            .into_iter()
            .map(|(k, v)| (k, v.copy()))
            .collect();
        let mut b = make();
        b.load_state(a.steps(), &state).unwrap();
        assert_eq!(b.steps(), 3);
        let mut names: Vec<String> = b.state_tensors().into_iter().map(|(k, _)| k).collect();
        names.sort();
        let mut expected: Vec<String> = state.keys().cloned().collect();
        expected.sort();
        assert_eq!(names, expected);
    }
}
