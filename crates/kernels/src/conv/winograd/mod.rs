//! 3x3 stride-1 convolutions by the Winograd minimal filtering algorithm F(2x2, 3x3) (Lavin
//! and Gray, "Fast Algorithms for Convolutional Neural Networks", CVPR 2016; the scheme of
//! NNPACK and of oneDNN's and XNNPACK's Winograd paths).
//!
//! Each 2x2 block of outputs ("tile") of a channel pair is `A^T [(G g G^T) . (B^T d B)] A`,
//! with `g` the 3x3 filter and `d` the 4x4 input patch: 16 multiplications instead of 36.
//! Summed over input channels, the 16 element-wise products become 16 independent GEMMs,
//!
//! ```text
//! M[xi] [c_out x tiles] = U[xi]^T [c_out x c_in] * V[xi] [c_in x tiles],   xi = 0..16,
//! ```
//!
//! with `U = G g G^T` transformed once at packing (in f64, rounded once; packed as each GEMM's
//! left operand) and `V = B^T d B` / `Y = A^T M A` computed per call by the vector
//! transforms of `transform.rs`. `V` and `M` are channel-major (each channel's tiles
//! contiguous, as the transforms write and read them), so `V` is a row-major right operand
//! that the GEMM reads in place or packs panel by panel next to the multiply, and `M` a
//! row-major product. The transposed form, `M[xi]^T [tiles x c_out] = V[xi]^T U[xi]` (`U`
//! packed as the right operand, `V` read as a column-major left operand, `M` written
//! through the transposed store into the same channel-major layout), packs `V` in MR-row
//! panels instead and pays the store's transposes; each element of `M` is the same FMA
//! chain over the input channels in either form, so the two give the same bits. It pays
//! where the tiles are few and fit the kernel's rows better than its columns
//! ([`tiles_as_rows`]): a 14 x 14 plane has 49 tiles per image, which a 32-wide kernel
//! computes as 64 columns and a 12-row one as 49 rows plus a short tile (the 16 GEMMs of a
//! 256-channel layer, one thread, Zen 5: 612 us as rows of `U` against 522 us as rows of
//! tiles). The multiply count falls by
//! 2.25x; what the GEMMs lose to their small `c_in` depth and the transforms add is measured
//! in `docs/kernels/conv.md`.
//!
//! The tiles of all images are processed in blocks of whole tile rows: at least 128 tiles
//! (each GEMM streams its packed filters once per block), more while the block's `V` and `M`
//! fit in half of the host's L2 (`crate::host`); three phases per block:
//! input transform (tasks over input channels), the 16 GEMMs (one task each, single-threaded
//! GEMMs), output transform with scale, bias and activation (tasks over output channels).
//! With at least three blocks per thread (large planes, batches) whole blocks run in
//! parallel instead, each on one thread with its phases inline: no barrier between the
//! phases and no `V` or `M` moving between cores; each thread then streams all the filters
//! per block, where the phase form streams half of them for twice the blocks (the same
//! traffic). No phase splits a sum, so results are bit-identical for any thread count. They
//! differ from the direct convolution in the last bits (another algorithm; the error against float64 is in
//! `docs/accuracy.md`).

mod transform;

use super::depthwise::slot;
use super::{ChannelEpilogue, Conv2dShape};
use crate::activation::vector::{kind, VecAct};
use crate::activation::Activation;
use crate::error::KernelError;
use crate::gemm::{gemm_ex, Epilogue, GemmConfig, MatMut, MatRef, Operand, PackedMatrix, Side};
use crate::isa::{Isa, Tables};
use crate::parallel::SharedMut;
use crate::simd::{tables, Simd};
use std::cell::Cell;
use std::sync::Mutex;

/// The geometry of one call: planes of `h x w` (input and output alike), `th x tw` tiles.
pub(crate) struct WinoGeom {
    pub(crate) h: usize,
    pub(crate) w: usize,
    /// Tiles per column and per row (`ceil(h / 2)`, `ceil(w / 2)`).
    pub(crate) th: usize,
    pub(crate) tw: usize,
    /// `tw` rounded up to the vector width.
    pub(crate) tw_pad: usize,
}

impl WinoGeom {
    fn new(s: &Conv2dShape, lanes: usize) -> Self {
        let (th, tw) = (s.h.div_ceil(2), s.w.div_ceil(2));
        WinoGeom {
            h: s.h,
            w: s.w,
            th,
            tw,
            tw_pad: tw.div_ceil(lanes) * lanes,
        }
    }
}

/// Whether F(2x2, 3x3) computes `s`: one group, a 3x3 filter, stride 1, padding 1, no
/// dilation ("same" output size), more than one input channel.
pub(crate) fn applies(s: &Conv2dShape) -> bool {
    // One input channel with one group is the depthwise case of `conv`, not packed.
    s.groups == 1
        && s.c_in > 1
        && (s.kh, s.kw) == (3, 3)
        && s.stride == (1, 1)
        && s.padding == (1, 1)
        && s.dilation == (1, 1)
}

/// `G = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]]`.
const G: [[f64; 3]; 4] = [
    [1.0, 0.0, 0.0],
    [0.5, 0.5, 0.5],
    [0.5, -0.5, 0.5],
    [0.0, 0.0, 1.0],
];

/// Whether the GEMMs of `s` run with the tiles as rows (the transposed form of the module
/// header): when the kernel in force for `isa` has a transposed store and, for the tiles of
/// the first block (see [`rows_per_block`]), padded rows x padded columns x (depth + the
/// transposed store's cost per tile in k steps) is at least 10% less that way than with the
/// output channels as rows (the rule of the plan's transposed pointwise convolutions).
pub(crate) fn tiles_as_rows(s: &Conv2dShape, isa: Isa) -> bool {
    let k = crate::gemm::table::selected(isa).tuning.kernel;
    let Some(extra) = k.transposed_store_cost() else {
        return false;
    };
    let lanes = TABLES.get(isa).map_or(1, |f| f.lanes);
    let g = WinoGeom::new(s, lanes);
    let t = rows_per_block(s, &g) * g.tw;
    let direct = k.padded_rows(s.c_out) * k.padded_cols(t) * s.c_in;
    let transposed = k.padded_rows(t) * k.padded_cols(s.c_out) * (s.c_in + extra);
    10 * transposed <= 9 * direct
}

/// Whether filters from [`pack_weights`] were packed for the tiles-as-rows form (as the
/// GEMMs' right operand).
pub(crate) fn packed_tiles_as_rows(u: &[PackedMatrix]) -> bool {
    u.first().is_some_and(|p| p.side() == Side::B)
}

/// The 16 transformed filters `U[xi] = (G g G^T)[xi]` of `w` (`[c_out, c_in, 3, 3]`), each
/// packed for `isa` as the left operand `[c_out x c_in]` (`U[xi]^T`) of its GEMM, or with
/// `tiles_as_rows` as the right operand `[c_in x c_out]` of the transposed form.
pub(crate) fn pack_weights(
    w: &[f32],
    c_out: usize,
    c_in: usize,
    isa: Isa,
    tiles_as_rows: bool,
) -> Result<Vec<PackedMatrix>, KernelError> {
    let mut u = vec![0.0f32; 16 * c_in * c_out];
    for o in 0..c_out {
        for c in 0..c_in {
            let g = &w[(o * c_in + c) * 9..(o * c_in + c + 1) * 9];
            // G g (4x3), then (G g) G^T (4x4), in f64: one rounding per element.
            let mut gg = [[0.0f64; 3]; 4];
            for (i, row) in gg.iter_mut().enumerate() {
                for (j, v) in row.iter_mut().enumerate() {
                    *v = (0..3).map(|k| G[i][k] * g[k * 3 + j] as f64).sum();
                }
            }
            for i in 0..4 {
                for k in 0..4 {
                    let v: f64 = (0..3).map(|j| gg[i][j] * G[k][j]).sum();
                    u[((4 * i + k) * c_in + c) * c_out + o] = v as f32;
                }
            }
        }
    }
    // ux is [c_in][c_out]: as the c_out x c_in matrix U^T, rows of stride 1 and columns of
    // stride c_out.
    u.chunks_exact(c_in * c_out)
        .map(|ux| {
            if tiles_as_rows {
                PackedMatrix::pack_b(MatRef::new(ux, c_in, c_out, c_out, 1), Some(isa))
            } else {
                PackedMatrix::pack_a(MatRef::new(ux, c_out, c_in, 1, c_out), Some(isa))
            }
        })
        .collect()
}

type InFn = unsafe fn(&WinoGeom, &[f32], usize, usize, usize, usize, &mut [f32], &mut [f32]);
type OutFn =
    unsafe fn(&WinoGeom, *const f32, usize, usize, usize, Option<f32>, f32, Activation, *mut f32);

/// One ISA's transforms: the output transform once per activation slot (as the depthwise
/// kernels, [`slot`]).
struct Fns {
    lanes: usize,
    input: InFn,
    output: [OutFn; 5],
}

macro_rules! wino_kernels {
    ($S:ty $(, $feat:literal)?) => {{
        #[allow(clippy::too_many_arguments)]
        $(#[target_feature(enable = $feat)])?
        unsafe fn input(
            g: &WinoGeom,
            x: &[f32],
            r0: usize,
            r1: usize,
            t: usize,
            b_off: usize,
            v: &mut [f32],
            scratch: &mut [f32],
        ) {
            // SAFETY: forwarded contract.
            unsafe { transform::input::<$S>(g, x, r0, r1, t, b_off, v, scratch) }
        }
        #[allow(clippy::too_many_arguments)]
        $(#[target_feature(enable = $feat)])?
        unsafe fn output<A: VecAct>(
            g: &WinoGeom,
            m: *const f32,
            xs: usize,
            r0: usize,
            r1: usize,
            scale: Option<f32>,
            bias: f32,
            act: Activation,
            y: *mut f32,
        ) {
            // SAFETY: forwarded contract.
            unsafe { transform::output::<$S, A>(g, m, xs, r0, r1, scale, bias, A::of(act), y) }
        }
        Fns {
            lanes: <$S as Simd>::L,
            input,
            output: [
                output::<kind::Identity>,
                output::<kind::Relu>,
                output::<kind::Relu6>,
                output::<kind::HardSwish>,
                output::<Activation>,
            ],
        }
    }};
}

static TABLES: Tables<Fns> = tables!(Fns, wino_kernels);

thread_local! {
    /// The block buffer (`V`, `M` and the input tasks' row scratch) of this thread, lent by
    /// [`crate::memory::lend_scratch`]. Per thread, so that `Plan::warm_up` sizes it on every
    /// thread; a free list shared by all threads would not be: the warm-up's turns, one thread
    /// at a time, would leave it one buffer, and later runs would allocate another whenever
    /// two blocks run at once.
    static BLOCK: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

fn with_block<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    crate::memory::lend_scratch(&BLOCK, len, f)
}

/// The fewest tiles per block (see [`rows_per_block`]): on Zen 4 (1 MiB L2), 64 tiles per
/// block ran the SE-ResNet-101 shapes 5-30% slower than 128, and 256 or whole images no
/// faster.
const MIN_TILES: usize = 128;

/// Blocks per thread from which whole blocks run in parallel (see [`forward`]).
const BLOCKS_PER_THREAD: usize = 3;

/// Tile rows per block (over the images' tile rows laid end to end): enough tiles that each
/// GEMM reuses its packed filters (`16 c_in c_out` floats in all, streamed once per block)
/// over at least `MIN_TILES` rows of its left operand, and more while the block's `V`
/// (`16 c_in` floats per tile) and `M` (`16 c_out`) fit in half of the host's L2.
fn rows_per_block(s: &Conv2dShape, g: &WinoGeom) -> usize {
    let l2 = crate::host::Host::get().caches.l2.size;
    let per_row = 16 * (s.c_in + s.c_out) * g.tw * std::mem::size_of::<f32>();
    let fit = l2 / 2 / per_row.max(1);
    fit.max(MIN_TILES.div_ceil(g.tw)).clamp(1, s.n * g.th)
}

/// The forward pass with weights from [`pack_weights`] (shape, lengths and ISA checked by the
/// caller; [`applies`] holds).
pub(crate) fn forward(
    isa: Isa,
    s: &Conv2dShape,
    x: &[f32],
    u: &[PackedMatrix],
    epi: ChannelEpilogue<'_>,
    y: &mut [f32],
) -> Result<(), KernelError> {
    let fns = TABLES.get(isa)?;
    if s.n == 0 {
        return Ok(());
    }
    let tiles_as_rows = packed_tiles_as_rows(u);
    let l = fns.lanes;
    let g = WinoGeom::new(s, l);
    let (ci, co, hw) = (s.c_in, s.c_out, s.h * s.w);
    let rpb = rows_per_block(s, &g);
    let t_max = rpb * g.tw;
    let cfg = GemmConfig::single_thread().isa(isa);
    let out_fn = fns.output[slot(epi.act)];
    let failed = Mutex::new(None);
    // Channels per transform task: whole channels, 16 tasks (or fewer) per phase whatever
    // the thread count, as the GEMM phase has one task per tile element.
    let in_chunk = ci.div_ceil(16).max(1);
    let out_chunk = co.div_ceil(16).max(1);
    let rows = s.n * g.th;
    // The (image, first tile row, last tile row, first tile) runs of block rows q0..q1.
    let segments = |q0: usize, q1: usize| {
        (q0 / g.th..q1.div_ceil(g.th)).map(move |img| {
            let (r0, r1) = (
                q0.max(img * g.th) - img * g.th,
                q1.min((img + 1) * g.th) - img * g.th,
            );
            (img, r0, r1, (img * g.th + r0 - q0) * g.tw)
        })
    };
    let yp = SharedMut(y.as_mut_ptr());
    let in_tasks = ci.div_ceil(in_chunk);
    let row_len = transform::input_scratch_len(&g);
    let len = 16 * ci * t_max + 16 * co * t_max + l + in_tasks * row_len;
    // One block of tile rows q0..q1, its three phases in order (each phase's tasks in
    // parallel, or inline inside a task of the block-parallel form below).
    let block = |q0: usize, q1: usize, buf: &mut [f32]| {
        let (vbuf, rest) = buf.split_at_mut(16 * ci * t_max);
        let (mbuf, rows_buf) = rest.split_at_mut(16 * co * t_max + l);
        let t = (q1 - q0) * g.tw;
        let v = &mut vbuf[..16 * ci * t];
        // Each input task k gets V of its channels and its own row scratch.
        let rows_ptr = SharedMut(rows_buf.as_mut_ptr());
        crate::parallel::for_each_chunk_mut(v, 16 * t * in_chunk, |k, part| {
            // SAFETY: task k alone uses floats k * row_len .. (k + 1) * row_len of the
            // row scratch (k < in_tasks), borrowed mutably for the whole call.
            let scr =
                unsafe { std::slice::from_raw_parts_mut(rows_ptr.get().add(k * row_len), row_len) };
            for (j, vc) in part.chunks_exact_mut(16 * t).enumerate() {
                let c = k * in_chunk + j;
                for (img, r0, r1, b_off) in segments(q0, q1) {
                    let plane = &x[(img * ci + c) * hw..(img * ci + c + 1) * hw];
                    // SAFETY: the table's ISA was checked; the plane holds h * w
                    // floats, vc 16 * t with b_off + (r1 - r0) * tw <= t, the
                    // scratch its length.
                    unsafe { (fns.input)(&g, plane, r0, r1, t, b_off, vc, scr) }
                }
            }
        });
        let v = &vbuf[..16 * ci * t];
        let m = &mut mbuf[..16 * co * t];
        let m_ptr = SharedMut(m.as_mut_ptr());
        crate::parallel::for_each_task(16, |xi_| {
            // SAFETY: task xi alone writes M[xi], floats xi * co * t.. of M (16 * co * t
            // floats, borrowed mutably for the whole call).
            let mx =
                unsafe { std::slice::from_raw_parts_mut(m_ptr.get().add(xi_ * co * t), co * t) };
            // V[xi] as [c_in x t] (channel rows of stride 16 t, tiles contiguous); M[xi] as
            // [c_out x t], row-major. Tiles as rows: V[xi]^T as [t x c_in], column-major,
            // and M[xi]^T as [t x c_out], column-major (the same memory).
            let r = if tiles_as_rows {
                let a = MatRef::new(&v[xi_ * t..], t, ci, 1, 16 * t);
                let c = MatMut::new(mx, t, co, 1, t);
                let (a, b) = (Operand::View(a), Operand::Packed(&u[xi_]));
                gemm_ex(1.0, a, b, 0.0, c, Epilogue::NONE, &cfg)
            } else {
                let b = MatRef::new(&v[xi_ * t..], ci, t, 16 * t, 1);
                let c = MatMut::new(mx, co, t, t, 1);
                let (a, b) = (Operand::Packed(&u[xi_]), Operand::View(b));
                gemm_ex(1.0, a, b, 0.0, c, Epilogue::NONE, &cfg)
            };
            if let Err(e) = r {
                *failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
            }
        });
        let m = &mbuf[..16 * co * t + l];
        crate::parallel::for_each_task(co.div_ceil(out_chunk), |k| {
            for o in k * out_chunk..((k + 1) * out_chunk).min(co) {
                let scale = epi.scale.map(|sc| sc[o]);
                let bias = epi.bias.map_or(0.0, |b| b[o]);
                for (img, r0, r1, b_off) in segments(q0, q1) {
                    // SAFETY: the table's ISA was checked; M holds 16 * c_out * t floats
                    // plus L of padding, so every tile load of channel o is in bounds;
                    // task k alone writes output channels k * out_chunk.. (of every
                    // image), each plane h * w floats inside `y`, which is borrowed
                    // mutably for the whole call.
                    unsafe {
                        out_fn(
                            &g,
                            m.as_ptr().add(o * t + b_off),
                            co * t,
                            r0,
                            r1,
                            scale,
                            bias,
                            epi.act,
                            yp.get().add((img * co + o) * hw),
                        )
                    }
                }
            }
        });
    };
    let blocks = rows.div_ceil(rpb);
    if blocks >= BLOCKS_PER_THREAD * rayon::current_num_threads() {
        // Whole blocks per task: a thread transforms, multiplies and writes back its own
        // tile rows, with no barrier between the phases and no V or M crossing cores.
        crate::parallel::for_each_task(blocks, |b| {
            let q0 = b * rpb;
            with_block(len, |buf| block(q0, (q0 + rpb).min(rows), buf));
        });
    } else {
        with_block(len, |buf| {
            for q0 in (0..rows).step_by(rpb) {
                block(q0, (q0 + rpb).min(rows), buf);
            }
        });
    }
    match failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests;
