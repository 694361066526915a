//! The expansion 1x1 convolution and the depthwise convolution of an inverted residual block
//! (Sandler et al., "MobileNetV2", CVPR 2018) run together, a group of channels at a time, so
//! that the expanded tensor never leaves the core's L2.
//!
//! MobileNetV2's second block expands 16 channels of 112 x 112 to 96: a 4.8 MB tensor, written
//! by the 1x1 convolution and read back by the depthwise one, twice the size of a 2 MiB L2,
//! so both steps run at memory speed. The depthwise convolution works channel by channel, so
//! the expansion can be cut along its output channels instead of along rows (no halo, unlike
//! oneDNN's row-band fusion of a 1x1 and a depthwise convolution): for each group of `G`
//! expanded channels, the GEMM computes those `G` rows of the expansion (`G x hw`, in the
//! calling worker's scratch, sized to stay in L2), then the depthwise kernel turns them into the
//! same `G` channels of the output, which are contiguous in NCHW. The block's input is read
//! once per group, from L2.
//!
//! The arithmetic is that of the two separate steps: `G` is a multiple of the GEMM kernel's MR,
//! so every row is computed by the same tile in the same order, and the depthwise kernel's
//! per-channel work does not depend on the channel count. Groups run in parallel over the
//! pool, each with a one-task GEMM: the same bits at any thread count.

use crate::error::{ModelError, Result};
use std::cell::RefCell;
use tessera_core::kernels::conv::{conv2d_forward, Conv2dShape};
use tessera_core::kernels::gemm::{
    gemm_ex, Bias, Epilogue, GemmConfig, MatMut, MatRef, Operand, PackedMatrix, Scale,
};
use tessera_core::kernels::parallel::for_each_chunk_mut;
use tessera_core::kernels::{Activation, KernelError};

/// The expansion of one channel group: its rows of the 1x1 weight, packed, and their
/// epilogue terms.
#[derive(Debug, Clone)]
pub struct ExpandGroup {
    /// `[g, c_in]` rows of the expansion weight, packed as the GEMM's left operand.
    pub w: PackedMatrix,
    /// Per-channel multiplier (the batch norm kept out of the weights), if any.
    pub scale: Option<Vec<f32>>,
    /// Per-channel shift.
    pub bias: Vec<f32>,
}

/// A fused expansion (1x1, `c_in -> c_exp`, activation `expand_act`) and depthwise
/// convolution (`dw`, activation `dw_act`, batch norm folded) over `n` images.
#[derive(Debug, Clone)]
pub struct ExpandDepthwise {
    /// Channel groups of the expansion, in order; group `i` covers channels
    /// `[i * group, min((i + 1) * group, c_exp))`.
    pub groups: Vec<ExpandGroup>,
    /// Expanded channels per group (a multiple of the GEMM kernel's MR).
    pub group: usize,
    /// The expansion's activation.
    pub expand_act: Activation,
    /// The depthwise convolution over all `c_exp` channels (`n` images).
    pub dw: Conv2dShape,
    /// `[c_exp, 1, kh, kw]` depthwise weight (batch norm folded).
    pub dw_w: Vec<f32>,
    /// `[c_exp]` depthwise bias.
    pub dw_b: Vec<f32>,
    /// The depthwise activation.
    pub dw_act: Activation,
}

thread_local! {
    /// The expanded channels of the group a worker is on, kept between runs (a warm plan
    /// allocates nothing).
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

impl ExpandDepthwise {
    /// Expanded channels.
    pub fn c_exp(&self) -> usize {
        self.dw.c_in
    }

    /// Input channels of the expansion.
    pub fn c_in(&self) -> usize {
        self.groups.first().map_or(0, |g| g.w.cols())
    }

    /// `y` (`[n, c_exp, oh, ow]`) from `x` (`[n, c_in, h, w]`).
    pub fn run(&self, x: &[f32], y: &mut [f32]) -> Result<()> {
        let s = &self.dw;
        let (hw, ohw) = (s.h * s.w, s.out_h() * s.out_w());
        let (ci, ce) = (self.c_in(), self.c_exp());
        // Per image, the groups' disjoint output slices (the last group may be shorter) in
        // parallel; the first error of a group is returned.
        let error = std::sync::Mutex::new(None);
        for (img, yi) in y.chunks_mut(ce * ohw).enumerate() {
            let xi = &x[img * ci * hw..(img + 1) * ci * hw];
            for_each_chunk_mut(yi, self.group * ohw, |gi, out| {
                if let Err(e) = self.group_forward(gi, &self.groups[gi], xi, out) {
                    error
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get_or_insert(e);
                }
            });
        }
        match error.into_inner().unwrap_or_else(|p| p.into_inner()) {
            Some(e) => Err(ModelError::config(format!("plan: {e}"))),
            None => Ok(()),
        }
    }

    /// Group `gi` of one image: its expanded channels into the worker's scratch, then their
    /// depthwise convolution into `out` (`[g, oh, ow]`).
    fn group_forward(
        &self,
        gi: usize,
        grp: &ExpandGroup,
        xi: &[f32],
        out: &mut [f32],
    ) -> std::result::Result<(), KernelError> {
        let s = &self.dw;
        let hw = s.h * s.w;
        let (ci, g, g0) = (self.c_in(), grp.w.rows(), gi * self.group);
        SCRATCH.with(|cell| {
            let mut buf = cell.borrow_mut();
            if buf.len() < g * hw {
                buf.resize(g * hw, 0.0);
            }
            let e_buf = &mut buf[..g * hw];
            let mut e = Epilogue::new(Bias::PerRow(&grp.bias), self.expand_act);
            if let Some(sc) = &grp.scale {
                e = e.with_scale(Scale::PerRow(sc));
            }
            gemm_ex(
                1.0,
                Operand::Packed(&grp.w),
                Operand::View(MatRef::row_major(xi, ci, hw)),
                0.0,
                MatMut::row_major(e_buf, g, hw),
                e,
                &GemmConfig::with_threads(1),
            )?;
            let sg = Conv2dShape {
                n: 1,
                c_in: g,
                c_out: g,
                groups: g,
                ..*s
            };
            let kk = s.kh * s.kw;
            conv2d_forward(
                &sg,
                e_buf,
                &self.dw_w[g0 * kk..(g0 + g) * kk],
                Some(&self.dw_b[g0..g0 + g]),
                self.dw_act,
                out,
            )
        })
    }
}
