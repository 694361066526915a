//! Matrix products: 2-D and batched (any rank >= 2) with NumPy broadcasting of the batch dims,
//! on the strided GEMM of `tessera_kernels::gemm`.
//!
//! Every operand is handed to the kernel as a [`MatRef`] with its own row and column strides, so
//! a transposed or broadcast operand is never copied. Backward is two more products on views:
//! `dA = dC · Bᵀ`, `dB = Aᵀ · dC`, each summed back over broadcast batch dims. Saved: A and B.

use rayon::prelude::*;
use tessera_kernels::activation::Activation;
use tessera_kernels::gemm::{gemm, Bias, Epilogue, GemmConfig, MatMut, MatRef};

use crate::autograd::needs_grad;
use crate::error::{fmt_shape, Result, TensorError};
use crate::layout::{broadcast_shapes, walk2};
use crate::profile::{self, f32_bytes, Cost, OpInfo};
use crate::tensor::Tensor;

/// Below this many multiply-adds per matrix, batches run in parallel (one thread each) rather
/// than one after the other on the threaded GEMM.
const SMALL_GEMM: usize = 64 * 64 * 64;

struct Batched {
    batch: Vec<usize>,
    m: usize,
    k: usize,
    n: usize,
    /// (offset of A, offset of B) for every batch index, row-major.
    offsets: Vec<(usize, usize)>,
    a_rc: (usize, usize),
    b_rc: (usize, usize),
}

fn plan(a: &Tensor, b: &Tensor) -> Result<Batched> {
    let (sa, sb) = (a.shape(), b.shape());
    if sa.len() < 2 || sb.len() < 2 {
        return Err(TensorError::shape(
            "matmul",
            format!(
                "{} x {}: both operands need at least 2 dims",
                fmt_shape(sa),
                fmt_shape(sb)
            ),
        ));
    }
    let (ra, rb) = (sa.len(), sb.len());
    let (m, k, k2, n) = (sa[ra - 2], sa[ra - 1], sb[rb - 2], sb[rb - 1]);
    if k != k2 {
        return Err(TensorError::shape(
            "matmul",
            format!(
                "{} x {}: inner dimensions {k} and {k2} differ",
                fmt_shape(sa),
                fmt_shape(sb)
            ),
        ));
    }
    let batch = broadcast_shapes("matmul", &sa[..ra - 2], &sb[..rb - 2]).map_err(|_| {
        TensorError::shape(
            "matmul",
            format!(
                "{} x {}: batch dims {} and {} do not broadcast",
                fmt_shape(sa),
                fmt_shape(sb),
                fmt_shape(&sa[..ra - 2]),
                fmt_shape(&sb[..rb - 2])
            ),
        )
    })?;
    let mut full_a = batch.clone();
    full_a.extend([m, k]);
    let mut full_b = batch.clone();
    full_b.extend([k, n]);
    let la = a.layout().broadcast_to("matmul", &full_a)?;
    let lb = b.layout().broadcast_to("matmul", &full_b)?;
    let nb = batch.len();
    let mut offsets = Vec::with_capacity(batch.iter().product());
    walk2(
        &batch,
        &la.strides[..nb],
        la.offset,
        &lb.strides[..nb],
        lb.offset,
        |oa, ob| offsets.push((oa, ob)),
    );
    Ok(Batched {
        m,
        k,
        n,
        offsets,
        a_rc: (la.strides[nb], la.strides[nb + 1]),
        b_rc: (lb.strides[nb], lb.strides[nb + 1]),
        batch,
    })
}

/// `A · B` (no graph). `bias` (length n) is fused into the GEMM epilogue.
fn matmul_forward(a: &Tensor, b: &Tensor, bias: Option<&[f32]>, act: Activation) -> Result<Tensor> {
    let p = plan(a, b)?;
    let (m, k, n) = (p.m, p.k, p.n);
    let mut shape = p.batch.clone();
    shape.extend([m, n]);
    let mn = m * n;
    // With k > 0 the GEMM (beta = 0) writes every output element without reading it.
    let mut out = if k == 0 {
        crate::pool::zeroed(p.offsets.len() * mn)
    } else {
        crate::pool::for_overwrite(p.offsets.len() * mn)
    };
    if mn == 0 || p.offsets.is_empty() {
        return Ok(Tensor::from_contig(out, &shape));
    }
    let epilogue = match bias {
        Some(b) => Epilogue::new(Bias::PerCol(b), act),
        None => Epilogue::new(Bias::None, act),
    };
    if k == 0 {
        if let Some(b) = bias {
            for row in out.chunks_mut(n) {
                row.copy_from_slice(b);
            }
        }
        tessera_kernels::activation::forward_inplace(act, &mut out);
        return Ok(Tensor::from_contig(out, &shape));
    }
    crate::profile::add_macs(p.offsets.len() * m * n * k);
    let (ra, rb) = (a.raw(), b.raw());
    let run = |c: &mut [f32], (oa, ob): (usize, usize), cfg: &GemmConfig| {
        gemm(
            1.0,
            MatRef::new(&ra[oa..], m, k, p.a_rc.0, p.a_rc.1),
            MatRef::new(&rb[ob..], k, n, p.b_rc.0, p.b_rc.1),
            0.0,
            MatMut::row_major(c, m, n),
            epilogue,
            cfg,
        )
    };
    // Parallelise across the batch (one single-threaded GEMM per product) when products are
    // small or there are at least as many as threads (attention heads); otherwise give each
    // GEMM every thread. Both give the same bits: the GEMM is bit-identical for any thread count.
    let batch = p.offsets.len();
    if batch > 1 && (m * n * k < SMALL_GEMM || batch >= rayon::current_num_threads()) {
        let cfg = GemmConfig::single_thread();
        out.par_chunks_mut(mn)
            .zip(p.offsets.par_iter())
            .try_for_each(|(c, &o)| run(c, o, &cfg))?;
    } else {
        let cfg = GemmConfig::default();
        for (c, &o) in out.chunks_mut(mn).zip(&p.offsets) {
            run(c, o, &cfg)?;
        }
    }
    Ok(Tensor::from_contig(out, &shape))
}

/// Cost of a contraction with output `y` over an inner dimension `k`: `numel(y) * k` MACs
/// (the count `add_macs` gets), `2 * macs + per_out * numel(y)` FLOPs (`per_out`: the fused
/// epilogue), every input read once, `y` written once.
fn contraction_info(
    op: std::borrow::Cow<'static, str>,
    inputs: &[&Tensor],
    y: &Tensor,
    k: usize,
    per_out: u64,
) -> OpInfo {
    let macs = (y.numel() * k) as u64;
    OpInfo {
        op,
        inputs: inputs.iter().map(|t| t.shape().to_vec()).collect(),
        output: y.shape().to_vec(),
        cost: Cost {
            flops: 2 * macs + per_out * y.numel() as u64,
            macs,
            bytes_read: inputs.iter().map(|t| f32_bytes(t.numel())).sum(),
            bytes_written: f32_bytes(y.numel()),
        },
    }
}

impl Tensor {
    /// Matrix product `[..., m, k] x [..., k, n] -> [..., m, n]`, broadcasting batch dims.
    pub fn matmul(&self, other: &Tensor) -> Result<Tensor> {
        let frame = profile::begin();
        let y = matmul_forward(self, other, None, Activation::Identity)?;
        if let Some(fr) = frame {
            fr.end_op(&y, || {
                contraction_info(
                    "matmul".into(),
                    &[self, other],
                    &y,
                    self.shape()[self.rank() - 1],
                    0,
                )
            });
        }
        if !needs_grad(&[self, other]) {
            return Ok(y);
        }
        // dA needs B and dB needs A: save each only if the other gradient is wanted.
        let (sa, sb) = (self.shape().to_vec(), other.shape().to_vec());
        let a = other.requires_grad().then(|| self.detach());
        let b = self.requires_grad().then(|| other.detach());
        Ok(y.record("matmul", &[self, other], move |g| {
            let ga = match &b {
                Some(b) => {
                    let r = b.rank();
                    Some(g.matmul(&b.transpose(r - 2, r - 1)?)?.sum_to(&sa)?)
                }
                None => None,
            };
            let gb = match &a {
                Some(a) => {
                    let r = a.rank();
                    Some(a.transpose(r - 2, r - 1)?.matmul(g)?.sum_to(&sb)?)
                }
                None => None,
            };
            Ok(vec![ga, gb])
        }))
    }

    /// A fully-connected layer: `x · wᵀ + bias` with PyTorch's layout (`w` is `[out, in]`),
    /// the bias fused into the GEMM epilogue. `x` is `[..., in]`.
    pub fn linear(&self, w: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        self.linear_with(w, bias, Activation::Identity)
    }

    /// `act(x · wᵀ + bias)`. At inference (no input requires grad, or under `no_grad`) the bias
    /// and the activation run in the GEMM's epilogue, in registers, with no extra pass over the
    /// output; when a graph is recorded it is `linear` followed by the activation op, so the
    /// backward is exact.
    pub fn linear_act(&self, w: &Tensor, bias: Option<&Tensor>, act: Activation) -> Result<Tensor> {
        let mut inputs = vec![self, w];
        inputs.extend(bias);
        if act == Activation::Identity || needs_grad(&inputs) {
            return Ok(self.linear(w, bias)?.activate(act));
        }
        self.linear_with(w, bias, act)
    }

    fn linear_with(&self, w: &Tensor, bias: Option<&Tensor>, act: Activation) -> Result<Tensor> {
        let frame = profile::begin();
        let y = self.linear_impl(w, bias, act)?;
        if let Some(fr) = frame {
            let mut inputs = vec![self, w];
            inputs.extend(bias);
            // Bias add (one per output when present) and the fused activation.
            let per = u64::from(bias.is_some()) + profile::activation_flops(act);
            fr.end_op(&y, || {
                contraction_info(
                    profile::with_act("linear", act),
                    &inputs,
                    &y,
                    w.shape()[1],
                    per,
                )
            });
        }
        Ok(y)
    }

    fn linear_impl(&self, w: &Tensor, bias: Option<&Tensor>, act: Activation) -> Result<Tensor> {
        if w.rank() != 2 {
            return Err(TensorError::shape(
                "linear",
                format!("weight must be [out, in], got {}", fmt_shape(w.shape())),
            ));
        }
        let wt = w.t()?;
        let out_features = w.shape()[0];
        if let Some(b) = bias {
            if b.shape() != [out_features] {
                return Err(TensorError::shape(
                    "linear",
                    format!(
                        "bias {} does not match weight {}",
                        fmt_shape(b.shape()),
                        fmt_shape(w.shape())
                    ),
                ));
            }
        }
        if self.rank() == 0 {
            return Err(TensorError::shape("linear", "input is a scalar"));
        }
        // Flatten leading dims when that is a view, so the product is one GEMM.
        let x2 = if self.rank() > 2 {
            self.flatten(0, self.rank() - 2)?
        } else if self.rank() == 1 {
            self.unsqueeze(0)?
        } else {
            self.clone()
        };
        let bias_data = bias.map(|b| b.data());
        let y = {
            let _g = crate::autograd::no_grad();
            matmul_forward(&x2, &wt, bias_data.as_deref(), act)?
        };
        let y = if needs_grad(&[&x2, w]) || bias.is_some_and(|b| needs_grad(&[b])) {
            // dx needs w and dw needs x: save each only if the other gradient is wanted.
            let x = w.requires_grad().then(|| x2.detach());
            let wd = x2.requires_grad().then(|| w.detach());
            let mut inputs = vec![&x2, w];
            if let Some(b) = bias {
                inputs.push(b);
            }
            let has_bias = bias.is_some();
            y.record("linear", &inputs, move |g| {
                let gx = wd.as_ref().map(|w| g.matmul(w)).transpose()?;
                let gw = match &x {
                    Some(x) => Some(g.t()?.matmul(x)?),
                    None => None,
                };
                let mut v = vec![gx, gw];
                if has_bias {
                    v.push(Some(g.sum(&[0], false)?));
                }
                Ok(v)
            })
        } else {
            y
        };
        let mut out_shape = self.shape().to_vec();
        *out_shape.last_mut().expect("rank >= 1") = out_features;
        y.reshape(&out_shape)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_message() {
        let a = Tensor::zeros(&[2, 3]);
        let b = Tensor::zeros(&[4, 5]);
        let e = a.matmul(&b).unwrap_err().to_string();
        assert_eq!(
            e,
            "matmul: [2, 3] x [4, 5]: inner dimensions 3 and 4 differ"
        );
    }

    #[test]
    fn transposed_operand() {
        let a = Tensor::from_vec(vec![1., 2., 3., 4., 5., 6.], &[2, 3]).unwrap();
        let at = a.t().unwrap(); // [3, 2] view
        let p = at.matmul(&a).unwrap();
        let q = at.contiguous().matmul(&a).unwrap();
        assert_eq!(p.to_vec(), q.to_vec());
        assert_eq!(p.shape(), &[3, 3]);
        assert_eq!(p.to_vec()[0], 17.0);
    }
}
