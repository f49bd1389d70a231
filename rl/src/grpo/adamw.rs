//! AdamW written out in tch, so that its moments can be checkpointed and restored exactly (tch's
//! `nn::Optimizer` keeps them inside libtorch where they cannot be read back).

use std::collections::HashMap;

use tch::{Kind, Tensor, nn};

use super::GrpoError;

/// Hyper-parameters of [`AdamW`]; the defaults are `torch.optim.AdamW`'s except the learning rate
/// and weight decay, which are the swarm's (and the HF Trainer's) defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    pub learning_rate: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Decoupled weight decay, applied to every parameter. The HF Trainer exempts biases and norm
    /// scales; with its default of 0 the two agree.
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            learning_rate: 1e-6,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

#[derive(Debug)]
struct ParamState {
    name: String,
    /// A shallow clone of the var store's variable: updating it updates the model.
    var: Tensor,
    /// An f32 copy of a bf16/f16 variable that the update is applied to. A low-precision weight
    /// cannot absorb updates below its rounding step (about 4e-3 relative in bf16, far above
    /// lr × step at the swarm's learning rates), so they accumulate here and the variable takes the
    /// rounded result.
    master: Option<Tensor>,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    /// Per parameter, as torch counts: a parameter without a gradient in a step is not updated.
    step: i64,
}

/// AdamW over every trainable variable of a var store, numerically the update of
/// `torch.optim.AdamW` (decoupled decay, bias-corrected moments; no amsgrad). f32 parameters are
/// updated in place with moments of their kind; bf16/f16 parameters through f32 master weights
/// with f32 moments (mixed-precision training).
#[derive(Debug)]
pub struct AdamW {
    config: AdamWConfig,
    params: Vec<ParamState>,
}

/// Names of the tensors one parameter contributes to [`AdamW::state`].
const EXP_AVG: &str = "exp_avg";
const EXP_AVG_SQ: &str = "exp_avg_sq";
const STEP: &str = "step";
const MASTER: &str = "master";

impl AdamW {
    /// An optimiser over the trainable variables of `vs`, with zero moments.
    pub fn new(vs: &nn::VarStore, config: AdamWConfig) -> Result<Self, GrpoError> {
        let mut variables: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .filter(|(_, v)| v.requires_grad())
            .collect();
        // A fixed order keeps the global gradient norm's summation order stable between runs.
        variables.sort_by(|a, b| a.0.cmp(&b.0));
        let params = variables
            .into_iter()
            .map(|(name, var)| {
                let master = match var.kind() {
                    Kind::BFloat16 | Kind::Half => Some(var.f_detach()?.f_to_kind(Kind::Float)?),
                    _ => None,
                };
                let target = master.as_ref().unwrap_or(&var);
                Ok(ParamState {
                    exp_avg: target.f_zeros_like()?,
                    exp_avg_sq: target.f_zeros_like()?,
                    master,
                    name,
                    var,
                    step: 0,
                })
            })
            .collect::<Result<Vec<_>, GrpoError>>()?;
        Ok(Self { config, params })
    }

    pub fn config(&self) -> &AdamWConfig {
        &self.config
    }

    /// Changes the learning rate for the following steps (a schedule lives with the caller).
    pub fn set_learning_rate(&mut self, learning_rate: f64) {
        self.config.learning_rate = learning_rate;
    }

    /// Steps taken so far (the largest per-parameter count).
    pub fn step_count(&self) -> i64 {
        self.params.iter().map(|p| p.step).max().unwrap_or(0)
    }

    /// Zeroes the gradients accumulated on the parameters.
    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            p.var.zero_grad();
        }
    }

    /// The global L2 norm of all gradients, and scales them down to at most `max_norm` when it is
    /// positive, exactly as `torch.nn.utils.clip_grad_norm_` (which the HF Trainer calls) does.
    /// Returns the norm before clipping.
    pub fn clip_grad_norm(&mut self, max_norm: f64) -> Result<f64, GrpoError> {
        let grads: Vec<Tensor> = self
            .params
            .iter()
            .map(|p| p.var.grad())
            .filter(Tensor::defined)
            .collect();
        if grads.is_empty() {
            return Ok(0.0);
        }
        let norms = grads
            .iter()
            .map(|g| g.f_to_kind(Kind::Float)?.f_norm())
            .collect::<Result<Vec<_>, _>>()?;
        let total = Tensor::f_stack(&norms, 0)?.f_norm()?;
        let total = total.f_double_value(&[])?;
        if max_norm > 0.0 {
            let coef = (max_norm / (total + 1e-6)).min(1.0);
            // torch multiplies even by a factor of 1; doing the same keeps the rounding equal.
            for mut g in grads {
                let _ = tch::no_grad(|| g.f_mul_scalar_(coef))?;
            }
        }
        Ok(total)
    }

    /// One AdamW update of every parameter that has a gradient.
    pub fn step(&mut self) -> Result<(), GrpoError> {
        let AdamWConfig {
            learning_rate: lr,
            beta1,
            beta2,
            eps,
            weight_decay,
        } = self.config;
        tch::no_grad(|| {
            for p in &mut self.params {
                let grad = p.var.grad();
                if !grad.defined() {
                    continue;
                }
                let grad = match &p.master {
                    Some(_) => grad.f_to_kind(Kind::Float)?,
                    None => grad,
                };
                // The tensor the update is applied to: the variable itself, or its master copy.
                let mut target = p.master.as_ref().unwrap_or(&p.var).shallow_clone();
                p.step += 1;
                // torch's `_single_tensor_adamw` (foreach=False), in place, with its rounding:
                // tch's `addcmul_`/`addcdiv_` take no `value`, so the scalar is applied by the
                // same float multiplication in a scratch tensor, in the kernels' order
                // (`value * t1 * t2` and `value * (t1 / t2)`). One scratch tensor per parameter.
                // In-place updates return an alias of their target, which is not needed.
                if weight_decay != 0.0 {
                    let _ = target.f_mul_scalar_(1.0 - lr * weight_decay)?;
                }
                let _ = p.exp_avg.f_lerp_(&grad, 1.0 - beta1)?;
                let mut scratch = grad.f_mul_scalar(1.0 - beta2)?;
                let _ = p
                    .exp_avg_sq
                    .f_mul_scalar_(beta2)?
                    .f_addcmul_(&scratch, &grad)?;
                let exponent = i32::try_from(p.step).unwrap_or(i32::MAX);
                let bias_correction1 = 1.0 - beta1.powi(exponent);
                let bias_correction2 = 1.0 - beta2.powi(exponent);
                let step_size = lr / bias_correction1;
                // denom = sqrt(exp_avg_sq) / sqrt(bias_correction2) + eps, into the scratch.
                let _ = p.exp_avg_sq.f_sqrt_out(&scratch)?;
                let _ = scratch.f_div_scalar_(bias_correction2.sqrt())?;
                let _ = scratch.f_add_scalar_(eps)?;
                // param += -step_size * (exp_avg / denom)
                let _ = p.exp_avg.f_div_out(&scratch, &scratch)?;
                let _ = scratch.f_mul_scalar_(-step_size)?;
                let _ = target.f_add_(&scratch)?;
                if let Some(master) = &p.master {
                    p.var.f_copy_(master)?;
                }
            }
            Ok(())
        })
    }

    /// The optimiser state as named tensors: `<parameter>.exp_avg`, `<parameter>.exp_avg_sq` and
    /// `<parameter>.step` (int64, one element), as torch's state dict holds them per parameter, plus
    /// `<parameter>.master` for low-precision parameters (their weights in the model file are
    /// rounded; resuming needs the exact f32 copy).
    pub fn state(&self) -> Result<Vec<(String, Tensor)>, GrpoError> {
        let mut out = Vec::with_capacity(self.params.len() * 3);
        for p in &self.params {
            out.push((format!("{}.{EXP_AVG}", p.name), p.exp_avg.shallow_clone()));
            out.push((
                format!("{}.{EXP_AVG_SQ}", p.name),
                p.exp_avg_sq.shallow_clone(),
            ));
            out.push((
                format!("{}.{STEP}", p.name),
                Tensor::f_from_slice(&[p.step])?,
            ));
            if let Some(master) = &p.master {
                out.push((format!("{}.{MASTER}", p.name), master.shallow_clone()));
            }
        }
        Ok(out)
    }

    /// Restores a state written by [`AdamW::state`]; every parameter must be present with the
    /// right shapes, and nothing else, so that a checkpoint of another model is refused.
    pub fn load_state(&mut self, tensors: &[(String, Tensor)]) -> Result<(), GrpoError> {
        let mut by_name: HashMap<&str, &Tensor> =
            tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
        let mut take = |name: String| {
            by_name
                .remove(name.as_str())
                .ok_or(GrpoError::OptimizerState(format!("lacks `{name}`")))
        };
        let mut restored = Vec::with_capacity(self.params.len());
        for p in &self.params {
            let exp_avg = take(format!("{}.{EXP_AVG}", p.name))?;
            let exp_avg_sq = take(format!("{}.{EXP_AVG_SQ}", p.name))?;
            let step = take(format!("{}.{STEP}", p.name))?;
            let master = match p.master {
                Some(_) => Some(take(format!("{}.{MASTER}", p.name))?),
                None => None,
            };
            let checked = [(EXP_AVG, exp_avg), (EXP_AVG_SQ, exp_avg_sq)]
                .into_iter()
                .chain(master.map(|m| (MASTER, m)));
            for (what, t) in checked {
                if t.size() != p.var.size() {
                    return Err(GrpoError::OptimizerState(format!(
                        "`{}.{what}` has shape {:?}, the parameter {:?}",
                        p.name,
                        t.size(),
                        p.var.size()
                    )));
                }
            }
            let step = step.f_to_kind(Kind::Int64)?.f_int64_value(&[0])?;
            restored.push((exp_avg, exp_avg_sq, step, master));
        }
        if let Some(extra) = by_name.keys().next() {
            return Err(GrpoError::OptimizerState(format!(
                "has `{extra}`, which is no parameter's state"
            )));
        }
        tch::no_grad(|| {
            for (p, (exp_avg, exp_avg_sq, step, master)) in self.params.iter_mut().zip(restored) {
                p.exp_avg.f_copy_(exp_avg)?;
                p.exp_avg_sq.f_copy_(exp_avg_sq)?;
                p.step = step;
                if let (Some(target), Some(saved)) = (&mut p.master, master) {
                    target.f_copy_(saved)?;
                    p.var.f_copy_(target)?;
                }
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use tch::{Device, Kind, Tensor, nn};

    use super::*;

    const INITIAL: [f32; 4] = [1.0, -0.5, 0.25, 2.0];
    /// Exactly representable in bf16, so both precisions see the same gradient values.
    const GRAD: [f32; 4] = [0.5, -0.25, 1.0, 0.125];

    fn store(kind: Kind) -> nn::VarStore {
        let mut vs = nn::VarStore::new(Device::Cpu);
        let _ = vs.root().var_copy("w", &Tensor::from_slice(&INITIAL));
        if kind == Kind::BFloat16 {
            vs.bfloat16();
        }
        vs
    }

    fn train(vs: &nn::VarStore, adamw: &mut AdamW, steps: usize) {
        let w = vs.variables()["w"].shallow_clone();
        for _ in 0..steps {
            adamw.zero_grad();
            (w.to_kind(Kind::Float) * Tensor::from_slice(&GRAD))
                .sum(Kind::Float)
                .backward();
            adamw.step().unwrap();
        }
    }

    fn config() -> AdamWConfig {
        AdamWConfig {
            learning_rate: 1e-4,
            weight_decay: 0.01,
            ..AdamWConfig::default()
        }
    }

    #[test]
    fn bf16_parameters_follow_the_f32_trajectory_through_master_weights() {
        let full = store(Kind::Float);
        let mut full_adamw = AdamW::new(&full, config()).unwrap();
        train(&full, &mut full_adamw, 60);
        let half = store(Kind::BFloat16);
        let mut half_adamw = AdamW::new(&half, config()).unwrap();
        train(&half, &mut half_adamw, 60);

        let expected = full.variables()["w"].to_kind(Kind::BFloat16);
        let got = half.variables()["w"].shallow_clone();
        assert_eq!(got.kind(), Kind::BFloat16);
        assert!(got.equal(&expected), "{got} vs {expected}");
        // Each update (1e-4) is far below bf16's step at 1.0 (2^-8); without master weights the
        // weight would never have moved.
        let initial = Tensor::from_slice(&INITIAL).to_kind(Kind::BFloat16);
        assert!(!got.equal(&initial), "the updates were lost");
    }

    #[test]
    fn master_weights_are_part_of_the_state_and_resume_exactly() {
        let straight = store(Kind::BFloat16);
        let mut straight_adamw = AdamW::new(&straight, config()).unwrap();
        train(&straight, &mut straight_adamw, 40);

        let first = store(Kind::BFloat16);
        let mut first_adamw = AdamW::new(&first, config()).unwrap();
        train(&first, &mut first_adamw, 30);
        let state = first_adamw.state().unwrap();
        assert!(state.iter().any(|(name, _)| name == "w.master"));

        let resumed = store(Kind::BFloat16);
        let mut resumed_adamw = AdamW::new(&resumed, config()).unwrap();
        resumed_adamw.load_state(&state).unwrap();
        train(&resumed, &mut resumed_adamw, 10);
        assert!(
            resumed.variables()["w"].equal(&straight.variables()["w"]),
            "resumed training differs"
        );
    }
}
