//! Element-wise arithmetic with NumPy broadcasting, and the unary math functions.
//!
//! Binary rules (gradients are summed back over broadcast dims by [`Tensor::sum_to`]):
//! `d(a+b) = (g, g)`, `d(a-b) = (g, -g)`, `d(a*b) = (g*b, g*a)`, `d(a/b) = (g/b, -g*a/b^2)`,
//! `d(a^b) = (g*b*a^(b-1), g*a^b*ln a)`, maximum/minimum route `g` to the larger/smaller input.
//! Unary rules are `g * f'(s)` where `s` is whichever of input or output the rule needs
//! (`Saved`): exp and sqrt save their output, log and abs their input, neg and the scalar
//! affine ops nothing.

use tessera_kernels::exp as kexp;
use tessera_kernels::Isa;

use crate::autograd::needs_grad;
use crate::error::{Result, TensorError};
use crate::ops::{elementwise_info, map, shapes_info, zip};
use crate::profile::{self, f32_bytes, Cost};
use crate::tensor::Tensor;

/// What a unary op keeps for its backward.
#[derive(Clone, Copy)]
pub(crate) enum Saved {
    /// Nothing: the derivative is a constant (`df` gets 0).
    Nothing,
    /// The input `x`.
    Input,
    /// The output `y`.
    Output,
}

/// A unary op `y = f(x)` with `dx = g * df(s)`, `s` chosen by `saved`.
pub(crate) fn unary(
    name: &'static str,
    x: &Tensor,
    f: impl Fn(f32) -> f32 + Sync + Send,
    saved: Saved,
    df: impl Fn(f32) -> f32 + Sync + Send + Copy + 'static,
) -> Tensor {
    // Profiled under `name`; the nested `map` reports the cost (one FLOP per element).
    let frame = profile::begin();
    let y = map(x, f);
    if let Some(fr) = frame {
        fr.end_op(&y, || shapes_info(name, &[x], &y));
    }
    record_unary(name, x, y, saved, df)
}

/// Records `y` (already computed from `x`) as a unary op with `dx = g * df(s)`.
pub(crate) fn record_unary(
    name: &'static str,
    x: &Tensor,
    y: Tensor,
    saved: Saved,
    df: impl Fn(f32) -> f32 + Sync + Send + Copy + 'static,
) -> Tensor {
    if !needs_grad(&[x]) {
        return y;
    }
    let s = match saved {
        Saved::Nothing => None,
        Saved::Input => Some(x.detach()),
        Saved::Output => Some(y.detach()),
    };
    y.record(name, &[x], move |g| {
        let dx = match &s {
            None => map(g, move |g| g * df(0.0)),
            Some(s) => zip(name, g, s, move |g, s| g * df(s))?,
        };
        Ok(vec![Some(dx)])
    })
}

/// `Some(plane)` when `b` holds one value per trailing plane of `a`: `b`'s shape is `a`'s with
/// the trailing dims (at least one, of product `plane > 1`) set to 1, as the gate `[n, c, 1, 1]`
/// of an `[n, c, h, w]` activation.
fn plane_gate(a: &[usize], b: &[usize]) -> Option<usize> {
    if a.len() != b.len() || a.is_empty() {
        return None;
    }
    let lead = b.iter().rposition(|&d| d != 1).map_or(0, |i| i + 1);
    let plane: usize = a[lead..].iter().product();
    (a[..lead] == b[..lead] && plane > 1 && a.iter().product::<usize>() > 0).then_some(plane)
}

/// The gradients of `x * s` with `s` one value per `plane` elements of `x`: `dx = g * s`
/// (per plane) when `s` is given, `ds[p] = sum over plane p of g * x` when `x` is given. One
/// pass over `g` (and `x`), parallel over planes; each plane's sum runs in a fixed order, so
/// the result does not depend on the thread count.
pub(crate) fn gate_backward(
    g: &Tensor,
    x: Option<&Tensor>,
    s: Option<&Tensor>,
    plane: usize,
) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    use rayon::prelude::*;
    let gd = g.data();
    let planes = gd.len() / plane;
    let xc = x.map(|x| x.contiguous());
    let xd = xc.as_ref().map(|x| x.data());
    let sd = s.map(|s| s.contiguous().data().into_owned());
    let mut dx = sd.as_ref().map(|_| crate::pool::for_overwrite(gd.len()));
    let mut ds = xd.as_ref().map(|_| vec![0.0f32; planes]);
    let body = |p: usize, out: Option<&mut [f32]>, d: Option<&mut f32>| {
        let gp = &gd[p * plane..(p + 1) * plane];
        if let (Some(out), Some(sv)) = (out, sd.as_ref()) {
            let k = sv[p];
            for (o, &v) in out.iter_mut().zip(gp) {
                *o = v * k;
            }
        }
        if let (Some(d), Some(xv)) = (d, xd.as_ref()) {
            *d = dot8(gp, &xv[p * plane..(p + 1) * plane]);
        }
    };
    let parallel = gd.len() >= super::PAR_MIN;
    match (dx.as_deref_mut(), ds.as_deref_mut()) {
        (Some(dxv), Some(dsv)) if parallel => dxv
            .par_chunks_mut(plane)
            .zip(dsv.par_iter_mut())
            .enumerate()
            .for_each(|(p, (o, d))| body(p, Some(o), Some(d))),
        (Some(dxv), None) if parallel => dxv
            .par_chunks_mut(plane)
            .enumerate()
            .for_each(|(p, o)| body(p, Some(o), None)),
        (None, Some(dsv)) if parallel => dsv
            .par_iter_mut()
            .enumerate()
            .for_each(|(p, d)| body(p, None, Some(d))),
        (dxv, dsv) => {
            let mut dxc = dxv.map(|v| v.chunks_mut(plane));
            let mut dsc = dsv.map(|v| v.iter_mut());
            for p in 0..planes {
                body(
                    p,
                    dxc.as_mut().and_then(Iterator::next),
                    dsc.as_mut().and_then(Iterator::next),
                );
            }
        }
    }
    (dx, ds)
}

/// `sum a[i] * b[i]` with eight partial sums in a fixed order (auto-vectorised).
fn dot8(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

impl Tensor {
    /// `self + other`, broadcasting.
    pub fn add(&self, other: &Tensor) -> Result<Tensor> {
        let y = zip("add", self, other, |a, b| a + b)?;
        if !needs_grad(&[self, other]) {
            return Ok(y);
        }
        let (sa, sb) = (self.shape().to_vec(), other.shape().to_vec());
        Ok(y.record("add", &[self, other], move |g| {
            Ok(vec![Some(g.sum_to(&sa)?), Some(g.sum_to(&sb)?)])
        }))
    }

    /// `relu(self + other)`, broadcasting, as one op (the residual join of a ResNet block):
    /// one pass instead of two forward, and the backward masks `g` by the saved output
    /// (`y > 0` exactly where `self + other > 0`) and hands it to both inputs. Same values and
    /// gradients as `self.add(other)?.relu()` (ReLU as the SIMD kernels have it:
    /// `0 > v ? 0 : v`, NaN propagating).
    pub fn add_relu(&self, other: &Tensor) -> Result<Tensor> {
        #[allow(clippy::neg_cmp_op_on_partial_ord)]
        let y = zip("add_relu", self, other, |a, b| {
            let v = a + b;
            if 0.0 > v {
                0.0
            } else {
                v
            }
        })?;
        if !needs_grad(&[self, other]) {
            return Ok(y);
        }
        let (sa, sb) = (self.shape().to_vec(), other.shape().to_vec());
        let out = y.detach();
        Ok(y.record("add_relu", &[self, other], move |g| {
            let gm = zip("add_relu", g, &out, |g, y| if y > 0.0 { g } else { 0.0 })?;
            Ok(vec![Some(gm.sum_to(&sa)?), Some(gm.sum_to(&sb)?)])
        }))
    }

    /// `self - other`, broadcasting.
    pub fn sub(&self, other: &Tensor) -> Result<Tensor> {
        let y = zip("sub", self, other, |a, b| a - b)?;
        if !needs_grad(&[self, other]) {
            return Ok(y);
        }
        let (sa, sb) = (self.shape().to_vec(), other.shape().to_vec());
        Ok(y.record("sub", &[self, other], move |g| {
            Ok(vec![Some(g.sum_to(&sa)?), Some(g.neg().sum_to(&sb)?)])
        }))
    }

    /// `self * other`, broadcasting.
    pub fn mul(&self, other: &Tensor) -> Result<Tensor> {
        let y = zip("mul", self, other, |a, b| a * b)?;
        if !needs_grad(&[self, other]) {
            return Ok(y);
        }
        // da needs b and db needs a: save each only if the other gradient is wanted.
        let (sa, sb) = (self.shape().to_vec(), other.shape().to_vec());
        let a = other.requires_grad().then(|| self.detach());
        let b = self.requires_grad().then(|| other.detach());
        if let Some(hw) = plane_gate(&sa, &sb) {
            // `x * s` with one `s` per plane (the squeeze-excitation gate): one pass for both
            // gradients, no full-size temporary for `g * x`.
            return Ok(y.record("mul", &[self, other], move |g| {
                let (ga, gb) = gate_backward(&g.contiguous(), a.as_ref(), b.as_ref(), hw);
                // One multiply per element for dx, a multiply-add for ds; reads g (and x),
                // writes dx (and ds).
                let n = g.numel();
                let (has_a, has_b) = (ga.is_some(), gb.is_some());
                profile::add_cost(|| Cost {
                    flops: (u64::from(has_a) + 2 * u64::from(has_b)) * n as u64,
                    macs: 0,
                    bytes_read: f32_bytes(n * (1 + usize::from(has_b))),
                    bytes_written: f32_bytes(
                        usize::from(has_a) * n + usize::from(has_b) * (n / hw),
                    ),
                });
                Ok(vec![
                    ga.map(|v| Tensor::from_contig(v, &sa)),
                    gb.map(|v| Tensor::from_contig(v, &sb)),
                ])
            }));
        }
        Ok(y.record("mul", &[self, other], move |g| {
            let ga = b.as_ref().map(|b| g.mul(b)?.sum_to(&sa)).transpose()?;
            let gb = a.as_ref().map(|a| g.mul(a)?.sum_to(&sb)).transpose()?;
            Ok(vec![ga, gb])
        }))
    }

    /// `self / other`, broadcasting.
    pub fn div(&self, other: &Tensor) -> Result<Tensor> {
        let y = zip("div", self, other, |a, b| a / b)?;
        if !needs_grad(&[self, other]) {
            return Ok(y);
        }
        let (a, b) = (self.detach(), other.detach());
        let (na, nb) = (self.requires_grad(), other.requires_grad());
        Ok(y.record("div", &[self, other], move |g| {
            let ga = if na {
                Some(g.div(&b)?.sum_to(a.shape())?)
            } else {
                None
            };
            let gb = if nb {
                // d(a/b)/db = -a / b^2
                let t = zip("div", g, &a, |g, a| -g * a)?;
                Some(zip("div", &t, &b, |t, b| t / (b * b))?.sum_to(b.shape())?)
            } else {
                None
            };
            Ok(vec![ga, gb])
        }))
    }

    /// `self ^ other` element-wise, broadcasting (the gradient w.r.t. the exponent needs
    /// `self > 0`).
    pub fn pow(&self, other: &Tensor) -> Result<Tensor> {
        let y = zip("pow", self, other, f32::powf)?;
        if !needs_grad(&[self, other]) {
            return Ok(y);
        }
        let (a, b, out) = (self.detach(), other.detach(), y.detach());
        let (na, nb) = (self.requires_grad(), other.requires_grad());
        Ok(y.record("pow", &[self, other], move |g| {
            let ga = if na {
                let d = zip("pow", &a, &b, |a, b| b * a.powf(b - 1.0))?;
                Some(g.mul(&d)?.sum_to(a.shape())?)
            } else {
                None
            };
            let gb = if nb {
                let d = zip("pow", &out, &a, |y, a| y * a.ln())?;
                Some(g.mul(&d)?.sum_to(b.shape())?)
            } else {
                None
            };
            Ok(vec![ga, gb])
        }))
    }

    /// Element-wise maximum, broadcasting; the gradient goes to the larger input (to `other`
    /// on ties).
    pub fn maximum(&self, other: &Tensor) -> Result<Tensor> {
        self.select_by("maximum", other, |a, b| a > b)
    }

    /// Element-wise minimum, broadcasting; the gradient goes to the smaller input (to `other`
    /// on ties).
    pub fn minimum(&self, other: &Tensor) -> Result<Tensor> {
        self.select_by("minimum", other, |a, b| a < b)
    }

    fn select_by(
        &self,
        name: &'static str,
        other: &Tensor,
        take_a: fn(f32, f32) -> bool,
    ) -> Result<Tensor> {
        let y = zip(
            name,
            self,
            other,
            move |a, b| if take_a(a, b) { a } else { b },
        )?;
        if !needs_grad(&[self, other]) {
            return Ok(y);
        }
        let (a, b) = (self.detach(), other.detach());
        Ok(y.record(name, &[self, other], move |g| {
            let mask = zip(
                name,
                &a,
                &b,
                move |a, b| if take_a(a, b) { 1.0 } else { 0.0 },
            )?;
            let ga = g.mul(&mask)?.sum_to(a.shape())?;
            let gb = zip(name, g, &mask, |g, m| g * (1.0 - m))?.sum_to(b.shape())?;
            Ok(vec![Some(ga), Some(gb)])
        }))
    }

    /// `-self`.
    pub fn neg(&self) -> Tensor {
        unary("neg", self, |x| -x, Saved::Nothing, |_| -1.0)
    }

    /// `self + c`.
    pub fn add_scalar(&self, c: f32) -> Tensor {
        unary("add_scalar", self, move |x| x + c, Saved::Nothing, |_| 1.0)
    }

    /// `self - c`.
    pub fn sub_scalar(&self, c: f32) -> Tensor {
        unary("sub_scalar", self, move |x| x - c, Saved::Nothing, |_| 1.0)
    }

    /// `self * c`.
    pub fn mul_scalar(&self, c: f32) -> Tensor {
        unary(
            "mul_scalar",
            self,
            move |x| x * c,
            Saved::Nothing,
            move |_| c,
        )
    }

    /// `self / c`.
    pub fn div_scalar(&self, c: f32) -> Tensor {
        unary(
            "div_scalar",
            self,
            move |x| x / c,
            Saved::Nothing,
            move |_| 1.0 / c,
        )
    }

    /// `self ^ p` with a scalar exponent.
    pub fn powf(&self, p: f32) -> Tensor {
        unary(
            "powf",
            self,
            move |x| x.powf(p),
            Saved::Input,
            move |x| p * x.powf(p - 1.0),
        )
    }

    /// `e ^ self`, on the vectorised `tessera_kernels::exp` (at most 1.2 ulp).
    pub fn exp(&self) -> Tensor {
        let frame = profile::begin();
        let xd = self.data();
        let mut y = crate::pool::for_overwrite(xd.len());
        let isa = Isa::current().unwrap_or_else(|_| Isa::best());
        let y = match kexp::exp_with(isa, &xd, &mut y) {
            Ok(()) => Tensor::from_contig(y, self.shape()),
            // Unreachable (the lengths match, `best` is supported); the scalar form is exact.
            Err(_) => map(self, f32::exp),
        };
        if let Some(fr) = frame {
            fr.end_op(&y, || elementwise_info("exp", &[self], &y, 1));
        }
        record_unary("exp", self, y, Saved::Output, |y| y)
    }

    /// Natural logarithm.
    pub fn log(&self) -> Tensor {
        unary("log", self, f32::ln, Saved::Input, |x| 1.0 / x)
    }

    /// Square root.
    pub fn sqrt(&self) -> Tensor {
        unary("sqrt", self, f32::sqrt, Saved::Output, |y| 0.5 / y)
    }

    /// `1 / sqrt(self)`.
    pub fn rsqrt(&self) -> Tensor {
        unary(
            "rsqrt",
            self,
            |x| 1.0 / x.sqrt(),
            Saved::Output,
            |y| -0.5 * y * y * y,
        )
    }

    /// Absolute value (gradient `sign(x)`, 0 at 0).
    pub fn abs(&self) -> Tensor {
        unary("abs", self, f32::abs, Saved::Input, |x| {
            if x > 0.0 {
                1.0
            } else if x < 0.0 {
                -1.0
            } else {
                0.0
            }
        })
    }

    /// Clamps into `[min, max]` (gradient 1 strictly inside, 0 outside). Errors if `min > max`
    /// or either bound is NaN.
    pub fn clamp(&self, min: f32, max: f32) -> Result<Tensor> {
        if min.is_nan() || max.is_nan() || min > max {
            return Err(TensorError::arg(
                "clamp",
                format!("bounds [{min}, {max}] are not an interval"),
            ));
        }
        Ok(unary(
            "clamp",
            self,
            move |x| x.max(min).min(max),
            Saved::Input,
            move |x| if x > min && x < max { 1.0 } else { 0.0 },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_add_and_grad() {
        let a = Tensor::from_vec(vec![1., 2., 3., 4., 5., 6.], &[2, 3])
            .unwrap()
            .requires_grad_(true);
        let b = Tensor::from_vec(vec![10., 20., 30.], &[3])
            .unwrap()
            .requires_grad_(true);
        let y = a.mul(&b).unwrap().sum_all();
        y.backward().unwrap();
        assert_eq!(
            a.grad().unwrap().to_vec(),
            vec![10., 20., 30., 10., 20., 30.]
        );
        assert_eq!(b.grad().unwrap().to_vec(), vec![5., 7., 9.]);
    }

    #[test]
    fn shape_error_names_op() {
        let a = Tensor::zeros(&[2, 3]);
        let b = Tensor::zeros(&[4, 3]);
        let e = a.add(&b).unwrap_err().to_string();
        assert!(
            e.starts_with("add:") && e.contains("[2, 3]") && e.contains("[4, 3]"),
            "{e}"
        );
    }
}
