//! The small building blocks of T5: a bias-free linear layer, T5's RMS layer norm and the
//! feed-forward sub-layer. Each mirrors the transformers module of the same name in
//! `transformers/models/t5/modeling_t5.py` (4.57), down to where dropout and dtype casts happen.

use crate::config::{FeedForward, T5Config};
use crate::error::Result;
use tch::nn::{Init, Path};
use tch::{Kind, Tensor};

/// What every module is built from: the config and the compute dtype of the matmuls.
///
/// `compute: Some(BFloat16)` is mixed precision as autocast does it: parameters (and optimizer
/// state) stay fp32, every linear layer casts its input and weight to bf16, softmax and layer norm
/// statistics stay fp32, the residual stream stays fp32. It is done explicitly rather than with
/// libtorch's autocast because tch cannot choose autocast's dtype (CUDA autocast is fp16, which
/// overflows in T5), and so the same code runs and is tested on the CPU.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ctx<'a> {
    pub(crate) cfg: &'a T5Config,
    pub(crate) compute: Option<Kind>,
    /// Draw the initial weights (a new model); false when a checkpoint's weights are copied in
    /// right after, so building the model takes nothing from libtorch's global random generator
    /// (which a concurrent training's dropout draws from).
    pub(crate) draw: bool,
}

impl std::ops::Deref for Ctx<'_> {
    type Target = T5Config;
    fn deref(&self) -> &T5Config {
        self.cfg
    }
}

/// `nn.Linear(in, out, bias=False)`: weight `[out, in]`, initialised like `cbqa init`
/// (transformers' `_init_weights`) so a fresh model is already a sensible T5.
#[derive(Debug)]
pub(crate) struct Linear {
    pub(crate) weight: Tensor,
    compute: Option<Kind>,
}

impl Linear {
    pub(crate) fn new(p: Path, in_dim: usize, out_dim: usize, cfg: &Ctx<'_>) -> Result<Self> {
        let weight = var(&p, &[out_dim, in_dim], cfg)?;
        Ok(Linear {
            weight,
            compute: cfg.compute,
        })
    }

    pub(crate) fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        linear(xs, &self.weight, self.compute)
    }
}

/// `xs @ weight.T`, in `compute` precision when given (see [`Ctx`]).
pub(crate) fn linear(xs: &Tensor, weight: &Tensor, compute: Option<Kind>) -> Result<Tensor> {
    Ok(match compute {
        Some(k) if k != weight.kind() => xs
            .f_to_kind(k)?
            .f_linear::<Tensor>(&weight.f_to_kind(k)?, None)?,
        _ => xs.f_linear::<Tensor>(weight, None)?,
    })
}

/// A parameter named `<p>.weight`, drawn with the standard deviation transformers uses for it
/// (zeros when `cfg.draw` is off: the weights are loaded next).
pub(crate) fn var(p: &Path, shape: &[usize], cfg: &Ctx<'_>) -> Result<Tensor> {
    let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
    let init = match crate::config::init_std(&p.path("weight"), cfg) {
        _ if !cfg.draw => Init::Const(0.0),
        Some(stdev) => Init::Randn { mean: 0.0, stdev },
        None => Init::Const(cfg.initializer_factor),
    };
    Ok(p.f_var("weight", &dims, init)?)
}

/// `T5LayerNorm`: RMS norm without mean subtraction or bias. The variance is accumulated in fp32
/// whatever the activations' dtype; the result is cast back to the weight's dtype when that is
/// half precision, then scaled.
#[derive(Debug)]
pub(crate) struct T5LayerNorm {
    weight: Tensor,
    eps: f64,
}

impl T5LayerNorm {
    pub(crate) fn new(p: Path, cfg: &Ctx<'_>) -> Result<Self> {
        Ok(T5LayerNorm {
            weight: var(&p, &[cfg.d_model], cfg)?,
            eps: cfg.layer_norm_epsilon,
        })
    }

    pub(crate) fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let variance = xs
            .f_to_kind(Kind::Float)?
            .f_pow_tensor_scalar(2)?
            .f_mean_dim(-1, true, Kind::Float)?;
        let mut hidden = xs.f_mul(&variance.f_add_scalar(self.eps)?.f_rsqrt()?)?;
        let wk = self.weight.kind();
        if matches!(wk, Kind::Half | Kind::BFloat16) {
            hidden = hidden.f_to_kind(wk)?;
        }
        Ok(self.weight.f_mul(&hidden)?)
    }
}

/// `T5DenseActDense` (relu) or `T5DenseGatedActDense` (gated-gelu / gated-relu).
#[derive(Debug)]
pub(crate) struct DenseReluDense {
    ff: FeedForward,
    /// `wi` (ungated) or `wi_0` (gated).
    wi_0: Linear,
    /// `wi_1`, gated variants only.
    wi_1: Option<Linear>,
    wo: Linear,
    dropout: f64,
}

impl DenseReluDense {
    pub(crate) fn new(p: Path, cfg: &Ctx<'_>) -> Result<Self> {
        let ff = cfg.ff();
        let (d, f) = (cfg.d_model, cfg.d_ff);
        let (wi_0, wi_1) = if ff.is_gated() {
            (
                Linear::new(&p / "wi_0", d, f, cfg)?,
                Some(Linear::new(&p / "wi_1", d, f, cfg)?),
            )
        } else {
            (Linear::new(&p / "wi", d, f, cfg)?, None)
        };
        Ok(DenseReluDense {
            ff,
            wi_0,
            wi_1,
            wo: Linear::new(&p / "wo", f, d, cfg)?,
            dropout: cfg.dropout_rate,
        })
    }

    fn act(&self, xs: &Tensor) -> Result<Tensor> {
        match self.ff {
            FeedForward::Relu | FeedForward::GatedRelu => Ok(xs.f_relu()?),
            FeedForward::GatedGelu => gelu_new(xs),
        }
    }

    pub(crate) fn forward(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        let activated = self.act(&self.wi_0.forward(xs)?)?;
        // Not in place: relu's backward needs its output.
        let gated = match &self.wi_1 {
            Some(wi_1) => activated.f_mul(&wi_1.forward(xs)?)?,
            None => activated,
        };
        let mut hidden = gated.f_dropout(self.dropout, train)?;
        // transformers keeps `wo` in fp32 for some half-precision checkpoints and casts to it.
        let wk = self.wo.weight.kind();
        if hidden.kind() != wk {
            hidden = hidden.f_to_kind(wk)?;
        }
        self.wo.forward(&hidden)
    }
}

/// transformers' `NewGELUActivation` (`gelu_new`), the tanh approximation, written with the same
/// elementwise ops as the Python so it rounds the same (`gelu(approximate="tanh")` differs in the
/// last bits).
pub(crate) fn gelu_new(xs: &Tensor) -> Result<Tensor> {
    let cubic = xs.f_pow_tensor_scalar(3.0)?.f_mul_scalar(0.044715)?;
    let inner = xs
        .f_add(&cubic)?
        .f_mul_scalar((2.0 / std::f64::consts::PI).sqrt())?;
    Ok(xs
        .f_mul_scalar(0.5)?
        .f_mul(&inner.f_tanh()?.f_add_scalar(1.0)?)?)
}

/// `T5LayerFF`: pre-norm feed-forward with a residual connection.
#[derive(Debug)]
pub(crate) struct T5LayerFF {
    dense_relu_dense: DenseReluDense,
    layer_norm: T5LayerNorm,
    dropout: f64,
}

impl T5LayerFF {
    pub(crate) fn new(p: Path, cfg: &Ctx<'_>) -> Result<Self> {
        Ok(T5LayerFF {
            dense_relu_dense: DenseReluDense::new(&p / "DenseReluDense", cfg)?,
            layer_norm: T5LayerNorm::new(&p / "layer_norm", cfg)?,
            dropout: cfg.dropout_rate,
        })
    }

    pub(crate) fn forward(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        let forwarded = self
            .dense_relu_dense
            .forward(&self.layer_norm.forward(xs)?, train)?;
        Ok(xs.f_add(&forwarded.f_dropout(self.dropout, train)?)?)
    }
}

/// T5Block's guard against fp16 overflow: clamp to the largest finite value (minus 1000 when an
/// inf already appeared), as transformers does. A no-op for other dtypes.
pub(crate) fn clamp_fp16(xs: Tensor) -> Result<Tensor> {
    if xs.kind() != Kind::Half {
        return Ok(xs);
    }
    let max = f64::from(half::f16::MAX);
    let has_inf = xs.f_isinf()?.f_any()?.f_int64_value(&[])? != 0;
    let clamp = if has_inf { max - 1000.0 } else { max };
    Ok(xs.f_clamp(-clamp, clamp)?)
}
