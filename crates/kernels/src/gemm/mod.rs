//! Strided f32 GEMM: `C = alpha * A * B + beta * C`, then an optional fused epilogue
//! (a scale and a bias per row or per column, then an activation), applied in registers before the store.
//!
//! Structure follows Goto & van de Geijn, "Anatomy of High-Performance Matrix Multiplication"
//! (ACM TOMS 2008) and the BLIS framework (Van Zee & van de Geijn, 2015): A and B are packed into
//! contiguous micro-panels, three cache-blocking loops (NC, KC, MC) keep each operand in the
//! cache level that suits it, and two register-blocking loops call an MR x NR microkernel.
//! See `docs/kernels/gemm.md` for the picture and the measured numbers.
//!
//! - [`gemm`]: the safe entry point over slices; checks every shape, stride and length.
//! - [`gemm_unchecked`]: the raw-pointer entry point it wraps (BLAS-like argument list).
//! - [`reference::gemm_reference`]: a naive triple loop accumulating in f64, the test oracle.
//!
//! Operands take arbitrary row and column strides (in elements), so a transposed operand is a
//! view, never a copy. The result is bit-identical for every thread count: threads split M and N,
//! never K, and every element of C sees the same sequence of floating-point operations whichever
//! thread computes it.

pub mod blocking;
mod driver;
mod in_place;
pub(crate) mod kernel;
pub(crate) mod microkernel;
mod microkernel_t;
mod pack;
mod pack_avx2;
mod packed;
mod partition;
pub mod reference;
mod scalar;
mod segments;
pub mod table;
pub mod tune;
pub mod tune_cache;

use crate::activation::Activation;
use crate::error::KernelError;
use crate::isa::Isa;

pub use blocking::Blocking;
pub use packed::{PackedMatrix, Side};
pub use segments::{Axis, Segments};
pub use table::{blocking, MicroKernel, Tuning};

/// A read-only strided matrix view: element `(i, j)` is `data[i * row_stride + j * col_stride]`.
///
/// Strides may be zero (a broadcast row or column) and need not be ordered: a row-major matrix
/// viewed with swapped strides is its transpose, at no cost. One dimension may be cut into
/// [`Segments`] stored apart (the images of an NCHW batch side by side); see
/// [`MatRef::with_segments`].
#[derive(Debug, Clone, Copy)]
pub struct MatRef<'a> {
    /// The elements, addressed as `data[r * row_stride + c * col_stride]`.
    pub data: &'a [f32],
    /// Number of rows.
    pub rows: usize,
    /// Number of columns.
    pub cols: usize,
    /// Elements between consecutive rows.
    pub row_stride: usize,
    /// Elements between consecutive columns.
    pub col_stride: usize,
    /// The segmented dimension, if any: along it, index `i` is at
    /// `(i / len) * stride + (i % len) * (row or column stride)`.
    pub segments: Option<Segments>,
}

impl<'a> MatRef<'a> {
    /// A general strided view.
    pub fn new(
        data: &'a [f32],
        rows: usize,
        cols: usize,
        row_stride: usize,
        col_stride: usize,
    ) -> Self {
        MatRef {
            data,
            rows,
            cols,
            row_stride,
            col_stride,
            segments: None,
        }
    }

    /// A dense row-major `rows x cols` matrix.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self::new(data, rows, cols, cols, 1)
    }

    /// A dense column-major `rows x cols` matrix.
    pub fn col_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self::new(data, rows, cols, 1, rows)
    }

    /// The transpose, as a view (no copy).
    pub fn t(self) -> Self {
        MatRef {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            segments: self.segments.map(Segments::transposed),
        }
    }

    /// The same view with one dimension cut into `segments` (checked when the GEMM runs).
    pub fn with_segments(self, segments: Segments) -> Self {
        MatRef {
            segments: Some(segments),
            ..self
        }
    }

    fn layout(&self) -> segments::Layout {
        segments::Layout {
            rs: self.row_stride,
            cs: self.col_stride,
            seg: self.segments,
        }
    }
}

/// A mutable strided matrix view; its elements must be distinct (checked by [`gemm`]). Like
/// [`MatRef`], one dimension may be segmented.
#[derive(Debug)]
pub struct MatMut<'a> {
    /// The elements, written at `data[r * row_stride + c * col_stride]`.
    pub data: &'a mut [f32],
    /// Number of rows.
    pub rows: usize,
    /// Number of columns.
    pub cols: usize,
    /// Elements between consecutive rows.
    pub row_stride: usize,
    /// Elements between consecutive columns.
    pub col_stride: usize,
    /// The segmented dimension, if any (as [`MatRef::segments`]).
    pub segments: Option<Segments>,
}

impl<'a> MatMut<'a> {
    /// A general strided view.
    pub fn new(
        data: &'a mut [f32],
        rows: usize,
        cols: usize,
        row_stride: usize,
        col_stride: usize,
    ) -> Self {
        MatMut {
            data,
            rows,
            cols,
            row_stride,
            col_stride,
            segments: None,
        }
    }

    /// A dense row-major `rows x cols` matrix.
    pub fn row_major(data: &'a mut [f32], rows: usize, cols: usize) -> Self {
        Self::new(data, rows, cols, cols, 1)
    }

    /// A dense column-major `rows x cols` matrix.
    pub fn col_major(data: &'a mut [f32], rows: usize, cols: usize) -> Self {
        Self::new(data, rows, cols, 1, rows)
    }

    /// The same view with one dimension cut into `segments` (checked when the GEMM runs).
    pub fn with_segments(self, segments: Segments) -> Self {
        MatMut {
            segments: Some(segments),
            ..self
        }
    }

    fn layout(&self) -> segments::Layout {
        segments::Layout {
            rs: self.row_stride,
            cs: self.col_stride,
            seg: self.segments,
        }
    }
}

/// The bias of the fused epilogue.
#[derive(Debug, Clone, Copy, Default)]
pub enum Bias<'a> {
    /// No bias.
    #[default]
    None,
    /// One value per row of C (length `m`): a convolution's per-output-channel bias when C is
    /// `[c_out, pixels]`.
    PerRow(&'a [f32]),
    /// One value per column of C (length `n`): a Linear layer's bias when C is `[batch, out]`.
    PerCol(&'a [f32]),
}

/// A multiplier per row or per column of C, applied before the bias: an eval-mode batch
/// norm's `gamma / sqrt(var + eps)` per output channel, kept out of the weights (folding it
/// into them rounds every weight once more, and with it every term of every output).
#[derive(Debug, Clone, Copy, Default)]
pub enum Scale<'a> {
    /// No scale.
    #[default]
    None,
    /// One value per row of C (length `m`).
    PerRow(&'a [f32]),
    /// One value per column of C (length `n`).
    PerCol(&'a [f32]),
}

/// What happens to `alpha * A * B + beta * C` before it is stored, in registers:
/// `C = act(scale * (alpha * A * B + beta * C) + bias)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Epilogue<'a> {
    /// Bias added to each row or column, or none.
    pub bias: Bias<'a>,
    /// Activation applied after the bias.
    pub activation: Activation,
    /// Multiplier per row or column, applied before the bias, or none.
    pub scale: Scale<'a>,
}

impl<'a> Epilogue<'a> {
    /// No bias, identity activation: a plain GEMM.
    pub const NONE: Epilogue<'static> = Epilogue {
        bias: Bias::None,
        activation: Activation::Identity,
        scale: Scale::None,
    };

    /// A bias and an activation.
    pub fn new(bias: Bias<'a>, activation: Activation) -> Self {
        Epilogue {
            bias,
            activation,
            scale: Scale::None,
        }
    }

    /// The same epilogue with a scale applied before the bias.
    pub fn with_scale(self, scale: Scale<'a>) -> Self {
        Epilogue { scale, ..self }
    }
}

/// Execution options: which instruction set, which microkernel and blocks, how many threads.
#[derive(Debug, Clone, Copy, Default)]
pub struct GemmConfig {
    /// The microkernel path; `None` uses [`Isa::current`] (detected once, `TESSERA_ISA` aware).
    pub isa: Option<Isa>,
    /// Number of parallel tasks; `0` uses the current rayon pool's thread count. The result is
    /// bit-identical for every value.
    pub threads: usize,
    /// A specific microkernel and blocking (for tests and `tessera tune`); `None` uses the
    /// ISA's selection in [`table::selected`]. Its ISA must agree with `isa` when both are set.
    pub tuning: Option<Tuning>,
}

impl GemmConfig {
    /// Single-threaded, default ISA.
    pub fn single_thread() -> Self {
        GemmConfig {
            isa: None,
            threads: 1,
            tuning: None,
        }
    }

    /// With `threads` tasks (0 = the rayon pool's size), default ISA.
    pub fn with_threads(threads: usize) -> Self {
        GemmConfig {
            isa: None,
            threads,
            tuning: None,
        }
    }

    /// Forces an instruction set (an error at call time if the CPU lacks it).
    pub fn isa(mut self, isa: Isa) -> Self {
        self.isa = Some(isa);
        self
    }

    /// With a specific microkernel and blocking (its ISA must be supported at call time).
    pub fn tuning(mut self, tuning: Tuning) -> Self {
        self.tuning = Some(tuning);
        self
    }

    /// The ISA and the kernel + blocks this call runs with.
    fn resolve(&self) -> Result<(Isa, Tuning), KernelError> {
        match (self.tuning, self.isa) {
            (Some(t), Some(isa)) if t.kernel.isa != isa => Err(KernelError::invalid(
                "gemm",
                format!(
                    "kernel {} does not run on the requested {isa}",
                    t.kernel.name
                ),
            )),
            (Some(t), _) => Ok((t.kernel.isa.check()?, t)),
            (None, Some(isa)) => Ok((isa.check()?, table::selected(isa).tuning)),
            (None, None) => {
                let isa = Isa::current()?;
                Ok((isa, table::selected(isa).tuning))
            }
        }
    }
}

/// Highest element offset a strided `rows x cols` view touches plus one (0 if empty), or `None`
/// on overflow.
fn required_len(rows: usize, cols: usize, rs: usize, cs: usize) -> Option<usize> {
    if rows == 0 || cols == 0 {
        return Some(0);
    }
    (rows - 1)
        .checked_mul(rs)?
        .checked_add((cols - 1).checked_mul(cs)?)?
        .checked_add(1)
}

/// Whether a strided `rows x cols` view addresses every element at a distinct offset.
fn strides_are_distinct(rows: usize, cols: usize, rs: usize, cs: usize) -> bool {
    if rows == 0 || cols == 0 {
        return true;
    }
    // Sort the two (extent, stride) pairs by stride: the inner one must be non-zero when it has
    // more than one element, and the outer one must step past the whole inner extent.
    let (mut inner, mut outer) = ((cols, cs), (rows, rs));
    if inner.1 > outer.1 {
        std::mem::swap(&mut inner, &mut outer);
    }
    let inner_ok = inner.0 <= 1 || inner.1 >= 1;
    let outer_ok = outer.0 <= 1
        || outer.1
            >= inner
                .0
                .saturating_sub(1)
                .saturating_mul(inner.1)
                .saturating_add(1);
    inner_ok && outer_ok
}

pub(crate) fn check_view(
    op: &'static str,
    name: &str,
    len: usize,
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
) -> Result<(), KernelError> {
    let layout = segments::Layout { rs, cs, seg: None };
    check_layout(op, name, len, rows, cols, &layout)
}

/// [`check_view`] for a possibly segmented view: a non-empty segment length, and every
/// element inside the slice.
fn check_layout(
    op: &'static str,
    name: &str,
    len: usize,
    rows: usize,
    cols: usize,
    l: &segments::Layout,
) -> Result<(), KernelError> {
    let (rs, cs) = (l.rs, l.cs);
    match l.seg {
        Some(s) if s.len == 0 => {
            return Err(KernelError::invalid(
                op,
                format!("{name}: segments of length 0 ({s:?})"),
            ))
        }
        _ => {}
    };
    // Formatted only on the error paths: a valid call allocates nothing.
    let segs = || match l.seg {
        Some(s) => format!(", {:?} in segments of {} every {}", s.axis, s.len, s.stride),
        None => String::new(),
    };
    match segments::required_len(rows, cols, l) {
        Some(need) if need <= len => Ok(()),
        Some(need) => Err(KernelError::invalid(
            op,
            format!("{name} is [{rows}, {cols}] with strides ({rs}, {cs}){} and needs {need} elements, but its slice has {len}", segs()),
        )),
        None => Err(KernelError::invalid(op, format!("{name}: [{rows}, {cols}] with strides ({rs}, {cs}){} overflows usize", segs()))),
    }
}

/// One operand of [`gemm_ex`]: a strided view, or a matrix packed once with
/// [`PackedMatrix::pack_a`] / [`PackedMatrix::pack_b`] (a layer's weights).
#[derive(Debug, Clone, Copy)]
pub enum Operand<'a> {
    /// A strided view, packed on the fly.
    View(MatRef<'a>),
    /// An operand packed once beforehand.
    Packed(&'a PackedMatrix),
}

impl Operand<'_> {
    fn dims(&self) -> (usize, usize) {
        match self {
            Operand::View(m) => (m.rows, m.cols),
            Operand::Packed(p) => (p.rows(), p.cols()),
        }
    }
}

/// `C = alpha * A * B + beta * C`, then the epilogue, on strided slices.
///
/// Shapes: A is `m x k`, B is `k x n`, C is `m x n`. When `beta == 0`, C is never read (it may
/// hold NaN); when `alpha == 0` or `k == 0`, A and B are never read. The epilogue's bias is
/// added and the activation applied after the final accumulation.
///
/// Overlap between C and A or B cannot be expressed: C is a `&mut` borrow, so the compiler
/// rejects any call where it aliases an input:
///
/// ```compile_fail
/// use tessera_kernels::gemm::*;
/// let mut buf = vec![0.0f32; 4];
/// let a = MatRef::row_major(&buf, 2, 2);
/// let c = MatMut::row_major(&mut buf, 2, 2); // error: `buf` is already borrowed
/// gemm(1.0, a, a, 0.0, c, Epilogue::NONE, &GemmConfig::default()).unwrap();
/// ```
///
/// Errors: mismatched shapes (naming both), slices too short for their shape and strides, a C
/// whose strides make two elements share storage, a bias of the wrong length, an unsupported ISA.
pub fn gemm(
    alpha: f32,
    a: MatRef<'_>,
    b: MatRef<'_>,
    beta: f32,
    c: MatMut<'_>,
    epilogue: Epilogue<'_>,
    config: &GemmConfig,
) -> Result<(), KernelError> {
    gemm_ex(
        alpha,
        Operand::View(a),
        Operand::View(b),
        beta,
        c,
        epilogue,
        config,
    )
}

/// [`gemm`] where either operand may be pre-packed (a layer's weights, packed once at load).
/// A packed operand must have been packed for its side (A or B) and for the ISA the call runs
/// on; either mismatch is an error.
pub fn gemm_ex(
    alpha: f32,
    a: Operand<'_>,
    b: Operand<'_>,
    beta: f32,
    c: MatMut<'_>,
    epilogue: Epilogue<'_>,
    config: &GemmConfig,
) -> Result<(), KernelError> {
    const OP: &str = "gemm";
    let ((ar, ac), (br, bc)) = (a.dims(), b.dims());
    if ac != br || ar != c.rows || bc != c.cols {
        return Err(KernelError::invalid(
            OP,
            format!(
                "A [{ar}, {ac}] x B [{br}, {bc}] -> C [{}, {}]: shapes do not match",
                c.rows, c.cols
            ),
        ));
    }
    let (m, n, k) = (c.rows, c.cols, ac);
    let (isa, mut tuning) = config.resolve()?;
    // A pre-packed operand fixes the kernel and blocks (its panel layout depends on them).
    for op in [&a, &b] {
        if let Operand::Packed(p) = op {
            if config.tuning.is_none() && p.isa() == isa {
                tuning = p.tuning();
            }
        }
    }
    let check_operand = |name: &str, op: &Operand<'_>, side: Side| -> Result<(), KernelError> {
        match op {
            Operand::View(v) => check_layout(OP, name, v.data.len(), v.rows, v.cols, &v.layout()),
            Operand::Packed(p) if p.side() != side => Err(KernelError::invalid(
                OP,
                format!("{name} was packed as the {:?} operand", p.side()),
            )),
            Operand::Packed(p) if p.isa() != isa => Err(KernelError::invalid(
                OP,
                format!(
                    "{name} was packed for {} but this call runs on {isa}",
                    p.isa()
                ),
            )),
            Operand::Packed(p) if p.tuning() != tuning => Err(KernelError::invalid(
                OP,
                format!(
                    "{name} was packed for kernel {} with blocks {:?}, but this call runs {} \
                     with {:?}",
                    p.tuning().kernel.name,
                    p.tuning().blocking,
                    tuning.kernel.name,
                    tuning.blocking
                ),
            )),
            Operand::Packed(_) => Ok(()),
        }
    };
    check_operand("A", &a, Side::A)?;
    check_operand("B", &b, Side::B)?;
    check_layout(OP, "C", c.data.len(), m, n, &c.layout())?;
    if !segments::distinct(m, n, &c.layout()) {
        return Err(KernelError::invalid(
            OP,
            format!(
                "C [{m}, {n}] with strides ({}, {}) maps several elements to one location",
                c.row_stride, c.col_stride
            ),
        ));
    }
    match epilogue.bias {
        Bias::PerRow(bias) if bias.len() != m => {
            return Err(KernelError::invalid(
                OP,
                format!("per-row bias has {} values for C [{m}, {n}]", bias.len()),
            ))
        }
        Bias::PerCol(bias) if bias.len() != n => {
            return Err(KernelError::invalid(
                OP,
                format!("per-column bias has {} values for C [{m}, {n}]", bias.len()),
            ))
        }
        _ => {}
    }
    match epilogue.scale {
        Scale::PerRow(s) if s.len() != m => {
            return Err(KernelError::invalid(
                OP,
                format!("per-row scale has {} values for C [{m}, {n}]", s.len()),
            ))
        }
        Scale::PerCol(s) if s.len() != n => {
            return Err(KernelError::invalid(
                OP,
                format!("per-column scale has {} values for C [{m}, {n}]", s.len()),
            ))
        }
        _ => {}
    }
    let (a_ptr, rsa, csa, a_seg, a_packed) = match a {
        Operand::View(v) => (
            v.data.as_ptr(),
            v.row_stride,
            v.col_stride,
            v.segments,
            None,
        ),
        Operand::Packed(p) => (std::ptr::null(), 0, 0, None, Some(p)),
    };
    let (b_ptr, rsb, csb, b_seg, b_packed) = match b {
        Operand::View(v) => (
            v.data.as_ptr(),
            v.row_stride,
            v.col_stride,
            v.segments,
            None,
        ),
        Operand::Packed(p) => (std::ptr::null(), 0, 0, None, Some(p)),
    };
    // SAFETY: every view was checked above to lie inside its slice; packed operands match
    // their side, shape and ISA; C's elements are distinct; C is a unique borrow so it cannot
    // overlap A or B; the bias lengths match; `isa` is supported by this CPU.
    unsafe {
        driver::gemm_dispatch(
            &tuning,
            driver::Problem {
                m,
                n,
                k,
                alpha,
                a: a_ptr,
                rsa,
                csa,
                a_seg,
                a_packed,
                b: b_ptr,
                rsb,
                csb,
                b_seg,
                b_packed,
                beta,
                c: c.data.as_mut_ptr(),
                rsc: c.row_stride,
                csc: c.col_stride,
                c_seg: c.segments,
                epilogue,
            },
            config.threads,
        );
    }
    Ok(())
}

/// The raw-pointer GEMM that [`gemm`] wraps, with a BLAS-like argument list (strides in
/// elements). Uses `config.isa` if set (an error if unsupported) or [`Isa::current`].
///
/// # Safety
/// - For every `i < m, p < k`: `a + i*rsa + p*csa` is readable, and likewise for B (`k x n`);
///   for every `i < m, j < n`: `c + i*rsc + j*csc` is readable and writable, and these C
///   locations are pairwise distinct.
/// - C does not overlap A, B or the bias; a per-row bias has `m` values, a per-column bias `n`.
/// - No other thread accesses C during the call.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_unchecked(
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: *const f32,
    rsa: usize,
    csa: usize,
    b: *const f32,
    rsb: usize,
    csb: usize,
    beta: f32,
    c: *mut f32,
    rsc: usize,
    csc: usize,
    epilogue: Epilogue<'_>,
    config: &GemmConfig,
) -> Result<(), KernelError> {
    let (_, tuning) = config.resolve()?;
    let problem = driver::Problem {
        m,
        n,
        k,
        alpha,
        a,
        rsa,
        csa,
        a_seg: None,
        a_packed: None,
        b,
        rsb,
        csb,
        b_seg: None,
        b_packed: None,
        beta,
        c,
        rsc,
        csc,
        c_seg: None,
        epilogue,
    };
    // SAFETY: forwarded from this function's contract.
    unsafe { driver::gemm_dispatch(&tuning, problem, config.threads) };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_strides() {
        assert!(strides_are_distinct(3, 4, 4, 1));
        assert!(strides_are_distinct(3, 4, 1, 3));
        assert!(strides_are_distinct(3, 4, 5, 1));
        assert!(!strides_are_distinct(3, 4, 2, 1));
        assert!(!strides_are_distinct(3, 4, 0, 1));
        assert!(strides_are_distinct(1, 4, 0, 1));
        assert!(strides_are_distinct(3, 1, 1, 0));
        assert!(!strides_are_distinct(2, 2, 1, 1));
        assert!(strides_are_distinct(2, 0, 0, 2));
    }

    #[test]
    fn shape_mismatch_names_both_shapes() {
        let a = vec![0.0; 6];
        let b = vec![0.0; 8];
        let mut c = vec![0.0; 8];
        let err = gemm(
            1.0,
            MatRef::row_major(&a, 2, 3),
            MatRef::row_major(&b, 4, 2),
            0.0,
            MatMut::row_major(&mut c, 2, 2),
            Epilogue::NONE,
            &GemmConfig::default(),
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("gemm") && msg.contains("[2, 3]") && msg.contains("[4, 2]"),
            "{msg}"
        );
    }

    #[test]
    fn short_slice_is_an_error() {
        let a = vec![0.0; 5];
        let b = vec![0.0; 6];
        let mut c = vec![0.0; 4];
        let err = gemm(
            1.0,
            MatRef::row_major(&a, 2, 3),
            MatRef::row_major(&b, 3, 2),
            0.0,
            MatMut::row_major(&mut c, 2, 2),
            Epilogue::NONE,
            &GemmConfig::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("needs 6 elements"), "{err}");
    }

    #[test]
    fn aliasing_c_is_an_error() {
        let a = vec![0.0; 6];
        let b = vec![0.0; 6];
        let mut c = vec![0.0; 4];
        let err = gemm(
            1.0,
            MatRef::row_major(&a, 2, 3),
            MatRef::row_major(&b, 3, 2),
            0.0,
            MatMut::new(&mut c, 2, 2, 1, 1),
            Epilogue::NONE,
            &GemmConfig::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("several elements"), "{err}");
    }

    #[test]
    fn bias_length_is_checked() {
        let a = vec![0.0; 6];
        let b = vec![0.0; 6];
        let mut c = vec![0.0; 4];
        let bias = [1.0; 3];
        let err = gemm(
            1.0,
            MatRef::row_major(&a, 2, 3),
            MatRef::row_major(&b, 3, 2),
            0.0,
            MatMut::row_major(&mut c, 2, 2),
            Epilogue::new(Bias::PerRow(&bias), Activation::Relu),
            &GemmConfig::default(),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("per-row bias has 3 values"),
            "{err}"
        );
    }
}
