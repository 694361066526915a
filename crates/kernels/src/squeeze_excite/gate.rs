//! The squeeze-and-excitation gate in f64 from f32 weights (Hu et al., "Squeeze-and-Excitation
//! Networks", CVPR 2018; timm's `SEModule` and EfficientNet `SqueezeExcite`):
//!
//! `s[b, i] = fl32(gate(b2[i] + sum_j W2[i, j] act(b1[j] + sum_k W1[j, k] mean_hw(x[b, k]))))`
//!
//! with every sum, the activation and the gate evaluated in f64 and only the gate rounded to
//! f32, once. Why: each of the `n x c` gate values scales a whole channel, and in a deep
//! network the gate's logits are large sums that cancel (a relative error of a few f32 ulps of
//! the logits moves the gate by many ulps), so an f32 gate is the largest error a
//! squeeze-excitation block adds. In f64 the gate is within half an ulp of the exact function
//! of the f32 input and weights.
//!
//! Cost: the two layers are matrix-vector products (`c x rd` weights per image, a few
//! hundred thousand multiply-adds per block), bound by reading the f32 weights once. Each dot
//! product runs over 32 f64 lanes in a fixed order (lane `l` takes the terms `k = l mod 32`,
//! then a fixed pairwise tree), so that the vector accumulators form independent chains;
//! written once and instantiated per ISA inside a `#[target_feature]`
//! wrapper so that it vectorises there, with no fused multiply-add: every path returns the
//! same bits. Rows are split over the rayon pool when the layer is large
//! (each output is one dot product: the same bits for any thread count). A single image takes
//! the rows two at a time, each vector of its input loaded once for both rows and each row's
//! lanes unchanged (MobileNetV3-Large's 960 -> 240 -> 960 layers at two threads, Sapphire
//! Rapids class host, 2026-12-05: 28.8 -> 26.1 and 35.1 -> 33.2 us; they stream their
//! weights, 0.9 MiB a layer). Where no cache keeps those weights between inferences, the
//! dot products prefetch them [`PREFETCH_AHEAD`] floats ahead.
//!
//! The squeeze (the planes' means, in f64) runs in the same per-ISA wrapper, four planes at a
//! time: one plane's eight-lane sum ([`crate::pool::lane_sum`]) is a single chain of dependent
//! adds, one vector per add on AVX-512, so four planes' chains side by side keep the adder
//! busy, each plane's lanes and tree unchanged (the same bits). Both measured together in
//! `tessera profile seresnet101 --plan --threads 1` (Intel Xeon, family 6 model 207,
//! AVX-512, 2026-12-06, two alternating runs): the squeeze-excitation steps from 6.3-6.4% of
//! the inference to 5.0-5.3%.

use crate::activation::{reference, Activation};
use crate::error::KernelError;
use crate::isa::{Isa, Tables};
use crate::simd::{tables, Simd};
use std::cell::Cell;

/// The two 1x1 convolutions of the excitation, in PyTorch's layout, and their activations.
#[derive(Clone, Copy, Debug)]
pub struct ExciteWeights<'a> {
    /// `fc1` / `conv_reduce` weight, `[rd, c]` row-major.
    pub w1: &'a [f32],
    /// `[rd]`.
    pub b1: &'a [f32],
    /// Between the layers (ReLU in SE-ResNet and MobileNetV3).
    pub act: Activation,
    /// `fc2` / `conv_expand` weight, `[c, rd]` row-major.
    pub w2: &'a [f32],
    /// `[c]`.
    pub b2: &'a [f32],
    /// The gate (sigmoid in SE-ResNet, hard-sigmoid in MobileNetV3).
    pub gate: Activation,
}

impl ExciteWeights<'_> {
    /// Channels gated (`c`).
    pub fn channels(&self) -> usize {
        self.b2.len()
    }

    /// Reduced channels (`rd`).
    pub fn reduced(&self) -> usize {
        self.b1.len()
    }

    fn check(&self) -> Result<(), KernelError> {
        let (c, rd) = (self.channels(), self.reduced());
        if self.w1.len() != rd * c || self.w2.len() != c * rd {
            return Err(KernelError::invalid(
                "excite_gate",
                format!(
                    "{c} -> {rd} -> {c} wants weights of {} and {}, got {} and {}",
                    rd * c,
                    c * rd,
                    self.w1.len(),
                    self.w2.len()
                ),
            ));
        }
        Ok(())
    }
}

/// Lanes of one dot product: lane `l` sums the terms `k = l mod 32` (four vectors of
/// AVX-512, eight of AVX2: independent accumulator chains).
const LANES: usize = 32;

/// `sum_k w[k] x[k]` in f64 over [`LANES`] lanes, then the lanes added pairwise in a fixed
/// tree. The tail is zero-padded to a whole run of lanes (adding `0 * 0` leaves a sum as it
/// is), so every lane index is a constant and the accumulators stay in registers.
/// `PREFETCH` asks for the weights ahead (off for a row already read for an earlier image).
///
/// # Safety
/// The CPU supports `S`.
#[inline(always)]
unsafe fn dot<S: Simd, const PREFETCH: bool>(w: &[f32], x: &[f64]) -> f64 {
    let mut acc = [0.0f64; LANES];
    let (wc, xc) = (w.chunks_exact(LANES), x.chunks_exact(LANES));
    let (wr, xr) = (wc.remainder(), xc.remainder());
    for (i, (w32, x32)) in wc.zip(xc).enumerate() {
        if PREFETCH {
            // SAFETY: the caller runs on `S`.
            unsafe { prefetch_ahead::<S>(w, i * LANES) };
        }
        for l in 0..LANES {
            acc[l] += f64::from(w32[l]) * x32[l];
        }
    }
    if !wr.is_empty() {
        let (mut wt, mut xt) = ([0.0f32; LANES], [0.0f64; LANES]);
        wt[..wr.len()].copy_from_slice(wr);
        xt[..xr.len()].copy_from_slice(xr);
        for l in 0..LANES {
            acc[l] += f64::from(wt[l]) * xt[l];
        }
    }
    fold_lanes(&mut acc)
}

/// The lanes of one dot product added pairwise in a fixed tree (halves, then quarters, ...).
#[inline(always)]
fn fold_lanes(acc: &mut [f64; LANES]) -> f64 {
    let mut width = LANES;
    while width > 1 {
        width /= 2;
        for l in 0..width {
            acc[l] += acc[l + width];
        }
    }
    acc[0]
}

/// How far ahead of the dot product, in floats of the same row, the weights are prefetched
/// (6 KiB: about 0.5 us of one core's memory stream). At batch 1 the layers stream weights
/// that no cache keeps between inferences (0.9 MiB a layer in MobileNetV3-Large), and the
/// hardware prefetcher alone leaves the f64 arithmetic waiting on them: the 960 -> 240 -> 960
/// gate from memory, one thread, 310-340 us without, 140-170 us with (Intel Xeon, family 6
/// model 207, AVX-512, 2026-12-06, prefetching into L1; 1536 floats measured best of 256 to
/// 2048). On AMD Zen 4, prefetching into L2, 3072 and 6144 floats measured the same as 1536.
const PREFETCH_AHEAD: usize = 1536;

/// Prefetches the two cache lines [`PREFETCH_AHEAD`] floats past `w[i..i + 32]` into L2 (a
/// hint through `S`; a no-op on the portable and scalar paths). Into L2, not L1: the L1
/// prefetcher brings the lines on from L2, and a request into L1 holds one of the core's few
/// L1 miss buffers for a whole memory latency. The 960 -> 240 -> 960 gate with its weights
/// evicted from every cache, one thread (AMD EPYC Zen 4, AVX-512, 2026-12-06, a harness
/// outside the repository, 200 alternating calls): 238-283 us prefetching into L1, 178-229 us
/// into L2; with the weights in cache, no difference.
///
/// # Safety
/// The CPU supports `S`.
#[inline(always)]
unsafe fn prefetch_ahead<S: Simd>(w: &[f32], i: usize) {
    let p = w.as_ptr().wrapping_add(i + PREFETCH_AHEAD);
    // SAFETY: the caller runs on `S`; a prefetch never accesses memory, so `p` may lie past
    // the end of the weights.
    unsafe {
        S::prefetch_l2(p);
        S::prefetch_l2(p.wrapping_add(LANES / 2));
    }
}

/// [`dot`] of two rows against one `x`, each row's lanes and tree exactly as in [`dot`]
/// (the same bits), with each vector of `x` loaded once for both.
///
/// # Safety
/// The CPU supports `S`.
#[inline(always)]
unsafe fn dot2<S: Simd>(wa: &[f32], wb: &[f32], x: &[f64]) -> (f64, f64) {
    let mut acc = [[0.0f64; LANES]; 2];
    let n = x.len().min(wa.len()).min(wb.len());
    let whole = n / LANES * LANES;
    for i in (0..whole).step_by(LANES) {
        // Rows `a` and `b` are adjacent: ahead of both is ahead of the pair.
        // SAFETY: the caller runs on `S`.
        unsafe {
            prefetch_ahead::<S>(wa, i);
            prefetch_ahead::<S>(wb, i);
        }
        let (a32, b32, x32) = (&wa[i..i + LANES], &wb[i..i + LANES], &x[i..i + LANES]);
        for l in 0..LANES {
            acc[0][l] += f64::from(a32[l]) * x32[l];
            acc[1][l] += f64::from(b32[l]) * x32[l];
        }
    }
    if whole < n {
        let (mut at, mut bt, mut xt) = ([0.0f32; LANES], [0.0f32; LANES], [0.0f64; LANES]);
        at[..n - whole].copy_from_slice(&wa[whole..n]);
        bt[..n - whole].copy_from_slice(&wb[whole..n]);
        xt[..n - whole].copy_from_slice(&x[whole..n]);
        for l in 0..LANES {
            acc[0][l] += f64::from(at[l]) * xt[l];
            acc[1][l] += f64::from(bt[l]) * xt[l];
        }
    }
    let [a, b] = &mut acc;
    (fold_lanes(a), fold_lanes(b))
}

/// `out[r * n + b] = bias[r0 + r] + W[r0 + r] . x[b]` for the rows of `out`'s chunk (`w`:
/// `[rows, k]`, `x`: `[n, k]`): row-outer, so a row of weights is read once for all `n`
/// images; single images take the rows in pairs ([`dot2`]).
///
/// # Safety
/// The CPU supports `S`.
#[inline(always)]
unsafe fn rows_body<S: Simd>(
    w: &[f32],
    bias: &[f32],
    x: &[f64],
    k: usize,
    r0: usize,
    out: &mut [f64],
) {
    let n = x.len() / k.max(1);
    let row = |i: usize| &w[(r0 + i) * k..(r0 + i + 1) * k];
    if n == 1 {
        let pairs = out.len() / 2;
        for i in 0..pairs {
            // SAFETY: the caller runs on `S`.
            let (a, b) = unsafe { dot2::<S>(row(2 * i), row(2 * i + 1), x) };
            out[2 * i] = f64::from(bias[r0 + 2 * i]) + a;
            out[2 * i + 1] = f64::from(bias[r0 + 2 * i + 1]) + b;
        }
        if out.len() % 2 == 1 {
            let i = out.len() - 1;
            // SAFETY: the caller runs on `S`.
            out[i] = f64::from(bias[r0 + i]) + unsafe { dot::<S, true>(row(i), x) };
        }
        return;
    }
    for (i, o) in out.chunks_exact_mut(n.max(1)).enumerate() {
        let (wr, br) = (row(i), f64::from(bias[r0 + i]));
        for (b, ob) in o.iter_mut().enumerate() {
            let xb = &x[b * k..(b + 1) * k];
            // SAFETY: the caller runs on `S`. The row's first image brings it into cache.
            *ob = br
                + unsafe {
                    if b == 0 {
                        dot::<S, true>(wr, xb)
                    } else {
                        dot::<S, false>(wr, xb)
                    }
                };
        }
    }
}

/// `out[p] = mean(x[p * hw..(p + 1) * hw])` for the planes of `out`: each plane's sum is
/// [`crate::pool::lane_sum`]'s (the same bits), four planes at a time so that their sums are
/// independent chains of adds.
#[inline(always)]
fn means_body(x: &[f32], hw: usize, out: &mut [f64]) {
    let d = hw as f64;
    let plane = |p: usize| &x[p * hw..(p + 1) * hw];
    let p0 = out.len() / 4 * 4;
    let mut quads = out.chunks_exact_mut(4);
    for (q, m4) in (&mut quads).enumerate() {
        let sums = crate::pool::lane_sums(std::array::from_fn::<_, 4, _>(|j| plane(4 * q + j)));
        for (m, s) in m4.iter_mut().zip(sums) {
            *m = s / d;
        }
    }
    for (j, m) in quads.into_remainder().iter_mut().enumerate() {
        *m = crate::pool::lane_sum(plane(p0 + j)) / d;
    }
}

type RowsFn = unsafe fn(&[f32], &[f32], &[f64], usize, usize, &mut [f64]);
type MeansFn = unsafe fn(&[f32], usize, &mut [f64]);

struct GateKernels {
    rows: RowsFn,
    means: MeansFn,
}

macro_rules! gate_kernels {
    ($S:ty $(, $feat:literal)?) => {{
        $(#[target_feature(enable = $feat)])?
        unsafe fn rows(w: &[f32], bias: &[f32], x: &[f64], k: usize, r0: usize, out: &mut [f64]) {
            // SAFETY: the table is used only on a CPU that supports `$S`.
            unsafe { rows_body::<$S>(w, bias, x, k, r0, out) }
        }
        $(#[target_feature(enable = $feat)])?
        unsafe fn means(x: &[f32], hw: usize, out: &mut [f64]) {
            means_body(x, hw, out)
        }
        GateKernels { rows, means }
    }};
}

static TABLES: Tables<GateKernels> = tables!(GateKernels, gate_kernels);

/// Multiply-adds from which a layer's rows are split over the rayon pool.
const PAR_MACS: usize = 1 << 16;
/// Elements of `x` from which the squeeze (the plane means) is split over the pool.
const PAR_SQUEEZE: usize = 1 << 17;

/// One layer before its activation, `t[r * n + b] = bias[r] + W[r] . x[b]` (`x`: `[n, k]`):
/// row-major over the weight rows, so one task writes whole rows.
fn layer(k: &'static GateKernels, w: &[f32], bias: &[f32], x: &[f64], n: usize, t: &mut [f64]) {
    let (rows, kk) = (bias.len(), x.len() / n);
    let run = |r0: usize, out: &mut [f64]| {
        // SAFETY: `k` is the table of a checked ISA; `w` holds `rows * kk` floats (checked),
        // `out` whole rows of `t`.
        unsafe { (k.rows)(w, bias, x, kk, r0, out) }
    };
    if rows * kk * n >= PAR_MACS && rayon::current_num_threads() > 1 {
        let per = rows.div_ceil(4 * rayon::current_num_threads()).max(1);
        crate::parallel::for_each_chunk_mut(t, per * n, |i, o| run(i * per, o));
    } else {
        run(0, t);
    }
}

thread_local! {
    /// Taken out while a call uses it (a nested call on the same thread gets a new one), put
    /// back after, so a warm call allocates nothing.
    static SCRATCH: Cell<Option<Vec<f64>>> = const { Cell::new(None) };
}

/// The gate of every (image, channel) of `x` (`[n, c, hw]`) into `s` (`[n, c]`), on the path
/// [`Isa::current`] picks (every path gives the same bits).
pub fn excite_gate(
    n: usize,
    hw: usize,
    x: &[f32],
    w: &ExciteWeights<'_>,
    s: &mut [f32],
) -> Result<(), KernelError> {
    gate_on(TABLES.current()?, n, hw, x, w, s, false)
}

/// [`excite_gate`] on channels-last maps: `x` is `[n, hw, c]` (the inference plan's layout
/// for small planes); the squeeze sums each channel in f64 pixel by pixel, the rest is the
/// same computation.
pub fn excite_gate_nhwc(
    n: usize,
    hw: usize,
    x: &[f32],
    w: &ExciteWeights<'_>,
    s: &mut [f32],
) -> Result<(), KernelError> {
    gate_on(TABLES.current()?, n, hw, x, w, s, true)
}

/// [`excite_gate`] on a given path (an error if the CPU lacks it).
pub fn excite_gate_with(
    isa: Isa,
    n: usize,
    hw: usize,
    x: &[f32],
    w: &ExciteWeights<'_>,
    s: &mut [f32],
) -> Result<(), KernelError> {
    gate_on(TABLES.get(isa)?, n, hw, x, w, s, false)
}

fn gate_on(
    k: &'static GateKernels,
    n: usize,
    hw: usize,
    x: &[f32],
    w: &ExciteWeights<'_>,
    s: &mut [f32],
    nhwc: bool,
) -> Result<(), KernelError> {
    w.check()?;
    let c = w.channels();
    if x.len() != n * c * hw || s.len() != n * c || hw == 0 {
        return Err(KernelError::invalid(
            "excite_gate",
            format!(
                "[{n}, {c}, {hw}] wants x of {} and s of {} (hw > 0), got {} and {}",
                n * c * hw,
                n * c,
                x.len(),
                s.len()
            ),
        ));
    }
    if n == 0 || c == 0 {
        return Ok(());
    }
    let rd = w.reduced();
    let mut scratch = SCRATCH.with(|c| c.take()).unwrap_or_default();
    let len = n * (c + c.max(rd) + rd);
    if scratch.len() < len {
        scratch = vec![0.0; len];
    }
    let (pooled, rest) = scratch.split_at_mut(n * c);
    let (t, rest) = rest.split_at_mut(n * c.max(rd));
    let hidden = &mut rest[..n * rd];
    // Squeeze: the mean of each plane, summed in f64.
    let means = |p0: usize, ms: &mut [f64]| {
        // SAFETY: `k` is the table of a checked ISA; `x` holds the planes of `ms` (checked).
        unsafe { (k.means)(&x[p0 * hw..(p0 + ms.len()) * hw], hw, ms) }
    };
    if nhwc {
        crate::pool::channel_means_nhwc(n, hw, c, x, pooled);
    } else if x.len() >= PAR_SQUEEZE && rayon::current_num_threads() > 1 {
        // Runs of planes of about 8 Ki floats per task.
        let per = ((1 << 13) / hw.max(1)).max(1);
        crate::parallel::for_each_chunk_mut(pooled, per, |i, ms| means(i * per, ms));
    } else {
        means(0, pooled);
    }
    // Excitation: `t` is `[rows, n]`, the next layer reads `[n, rows]`.
    layer(k, w.w1, w.b1, pooled, n, &mut t[..rd * n]);
    for j in 0..rd {
        for b in 0..n {
            hidden[b * rd + j] = reference::forward(w.act, t[j * n + b]);
        }
    }
    layer(k, w.w2, w.b2, hidden, n, &mut t[..c * n]);
    for i in 0..c {
        for b in 0..n {
            s[b * c + i] = reference::forward(w.gate, t[i * n + b]) as f32;
        }
    }
    SCRATCH.with(|cell| cell.set(Some(scratch)));
    Ok(())
}

/// The reference: the same formula as plain f64 loops (each sum in index order), for tests.
pub fn excite_gate_reference(n: usize, hw: usize, x: &[f32], w: &ExciteWeights<'_>) -> Vec<f64> {
    let (c, rd) = (w.channels(), w.reduced());
    let mut out = Vec::with_capacity(n * c);
    for b in 0..n {
        let p: Vec<f64> = (0..c)
            .map(|k| {
                let plane = &x[(b * c + k) * hw..(b * c + k + 1) * hw];
                plane.iter().map(|&v| f64::from(v)).sum::<f64>() / hw as f64
            })
            .collect();
        let h: Vec<f64> = (0..rd)
            .map(|j| {
                let z: f64 = (0..c).map(|k| f64::from(w.w1[j * c + k]) * p[k]).sum();
                reference::forward(w.act, f64::from(w.b1[j]) + z)
            })
            .collect();
        for i in 0..c {
            let z: f64 = (0..rd).map(|j| f64::from(w.w2[i * rd + j]) * h[j]).sum();
            out.push(reference::forward(w.gate, f64::from(w.b2[i]) + z));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rand(len: usize, seed: u32, scale: f32) -> Vec<f32> {
        let mut st = seed.wrapping_mul(2_654_435_761) | 1;
        (0..len)
            .map(|_| {
                st ^= st << 13;
                st ^= st >> 17;
                st ^= st << 5;
                scale * ((st >> 8) as f32 / (1u32 << 24) as f32 - 0.5)
            })
            .collect()
    }

    struct Case {
        w1: Vec<f32>,
        b1: Vec<f32>,
        w2: Vec<f32>,
        b2: Vec<f32>,
    }

    impl Case {
        fn new(c: usize, rd: usize) -> Self {
            Case {
                w1: rand(rd * c, 1, 4.0),
                b1: rand(rd, 2, 0.2),
                w2: rand(c * rd, 3, 4.0),
                b2: rand(c, 4, 0.2),
            }
        }
        fn weights(&self, gate: Activation) -> ExciteWeights<'_> {
            ExciteWeights {
                w1: &self.w1,
                b1: &self.b1,
                act: Activation::Relu,
                w2: &self.w2,
                b2: &self.b2,
                gate,
            }
        }
    }

    #[test]
    fn every_path_gives_the_same_bits_within_half_an_ulp_of_the_reference() {
        // Sizes around the 8 lanes and above the parallel thresholds.
        for &(n, c, rd, hw) in &[
            (1, 1, 1, 1),
            (2, 9, 3, 7),
            (1, 16, 8, 49),
            (3, 33, 17, 5),
            (1, 1024, 64, 196),
            (2, 256, 16, 3136),
        ] {
            let case = Case::new(c, rd);
            let x = rand(n * c * hw, 5, 6.0);
            for gate in [Activation::Sigmoid, Activation::HardSigmoid] {
                let w = case.weights(gate);
                let want = excite_gate_reference(n, hw, &x, &w);
                let mut first: Option<Vec<f32>> = None;
                for isa in Isa::available() {
                    let mut s = vec![0.0f32; n * c];
                    excite_gate_with(isa, n, hw, &x, &w, &mut s).unwrap();
                    for (i, (&g, &e)) in s.iter().zip(&want).enumerate() {
                        // Rounded once from a value within ~1e-15 relative of the reference.
                        let half_ulp = (e.abs() * f64::from(f32::EPSILON) / 2.0).max(1e-45);
                        let tol = half_ulp * (1.0 + 1e-6) + e.abs() * 1e-14;
                        assert!(
                            (f64::from(g) - e).abs() <= tol,
                            "{isa} {gate:?} n{n} c{c} rd{rd} hw{hw} [{i}]: {g} vs {e}"
                        );
                    }
                    match &first {
                        None => first = Some(s),
                        Some(f) => assert_eq!(
                            f.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                            s.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                            "{isa} differs from the first path"
                        ),
                    }
                }
            }
        }
    }

    /// A single image takes the weight rows in pairs; each of its gates has the bits of the
    /// same image inside a batch (one row at a time), odd row counts included.
    #[test]
    fn paired_rows_give_the_bits_of_single_rows() {
        for &(c, rd, hw) in &[(9, 3, 7), (33, 17, 5), (960, 240, 49), (72, 24, 3)] {
            let case = Case::new(c, rd);
            let w = case.weights(Activation::HardSigmoid);
            let x = rand(c * hw, 7, 6.0);
            let x2: Vec<f32> = x.iter().chain(&x).copied().collect();
            for isa in Isa::available() {
                let (mut one, mut two) = (vec![0.0f32; c], vec![0.0f32; 2 * c]);
                excite_gate_with(isa, 1, hw, &x, &w, &mut one).unwrap();
                excite_gate_with(isa, 2, hw, &x2, &w, &mut two).unwrap();
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&one), bits(&two[..c]), "{isa} c{c} rd{rd}");
                assert_eq!(bits(&one), bits(&two[c..]), "{isa} c{c} rd{rd}");
            }
        }
    }

    #[test]
    fn same_bits_for_any_thread_count() {
        let (n, c, rd, hw) = (2, 2048, 128, 49);
        let case = Case::new(c, rd);
        let w = case.weights(Activation::Sigmoid);
        let x = rand(n * c * hw, 9, 6.0);
        let mut par = vec![0.0f32; n * c];
        excite_gate(n, hw, &x, &w, &mut par).unwrap();
        let mut one = vec![0.0f32; n * c];
        rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap()
            .install(|| excite_gate(n, hw, &x, &w, &mut one).unwrap());
        assert_eq!(par, one);
    }

    #[test]
    fn rejects_mismatched_shapes() {
        let case = Case::new(8, 4);
        let w = case.weights(Activation::Sigmoid);
        let mut s = vec![0.0f32; 8];
        assert!(excite_gate(1, 2, &[0.0; 15], &w, &mut s).is_err());
        assert!(excite_gate(1, 0, &[], &w, &mut s).is_err());
        let bad = ExciteWeights {
            w1: &case.w1[1..],
            ..w
        };
        assert!(excite_gate(1, 2, &[0.0; 16], &bad, &mut s).is_err());
    }
}
