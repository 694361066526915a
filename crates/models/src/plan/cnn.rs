//! Plans of the convolutional blocks: the MobileNet trunk (inverted residual,
//! depthwise-separable and conv + BN + act blocks, with or without squeeze-excitation) and the
//! (SE-)ResNet bottleneck.

use super::builder::{is_pointwise, Feat, PlanBuilder};
use super::fused::{ExpandDepthwise, ExpandGroup};
use super::steps::Step;
use crate::blocks::bottleneck::Bottleneck;
use crate::blocks::squeeze_excite::SqueezeExcite;
use crate::blocks::trunk::{MbBlock, Trunk};
use crate::error::{ModelError, Result};
use crate::layers::ConvBnAct;
use tessera_core::kernels::gemm::{MatRef, PackedMatrix};
use tessera_core::kernels::host::Host;
use tessera_core::kernels::{Activation, KernelError};

/// Feature maps of at most this many pixels (28 x 28) may be stored channels-last in the
/// MobileNet plans ([`PlanBuilder::channels_last_up_to`]; the rule is
/// `PlanBuilder::channels_last_at`). Measured on the Zen 4 host (one
/// thread, MobileNetV2): 7.61 ms all NCHW, 7.30 ms from 14 x 14, 7.21 ms from 28 x 28, 7.73
/// ms from 56 x 56 (there the width-vectorised NCHW depthwise kernel and the GEMMs' NCHW
/// form win); see `docs/kernels/depthwise.md`.
pub(crate) const CHANNELS_LAST_HW: usize = 28 * 28;

/// The EfficientNet-family squeeze-excite, in place on `h`.
fn se_in_place(b: &mut PlanBuilder, h: &Feat, se: &SqueezeExcite) -> Result<Feat> {
    b.squeeze_excite(h, &se.conv_reduce, se.act, &se.conv_expand, se.gate, None)
}

/// `pwl(h) (+ x)`: the projection, with the skip fused into its GEMM when the block has one.
fn project(b: &mut PlanBuilder, h: &Feat, pwl: &ConvBnAct, x: Feat, skip: bool) -> Result<Feat> {
    if skip {
        b.conv_bn_residual(h, pwl, x, pwl.kernel_act())
    } else {
        b.conv_bn_act(h, pwl)
    }
}

/// `dw(pw(x))`, the expansion and depthwise convolutions of an inverted residual block: one
/// fused step (`fused.rs`) when the expanded tensor is larger than L2, else two steps (always
/// two in a reference build, whose float64 reference follows every step). Measured on a 2 MiB
/// L2 (Sapphire Rapids class, 2026-12-05): MobileNetV2's 4.8 MB expansion gains, and so does
/// MobileNetV3-Large's 3.2 MB one (`tessera bench mobilenetv3_large_100`: 2 threads, seven
/// alternating runs, median 4.06 -> 3.97 ms; 1 thread 5.69 -> 5.42; batch 8 27.4 -> 25.2),
/// although the step after the next then takes 0.21 instead of 0.10 ms for reasons not
/// established. Not measured on a 1 MiB L2 (Zen 4), where the rule also fuses
/// MobileNetV2's 1.8 MB 144-channel expansions at 56 x 56.
fn expand_depthwise(b: &mut PlanBuilder, x: &Feat, pw: &ConvBnAct, dw: &ConvBnAct) -> Result<Feat> {
    let sp = PlanBuilder::conv_shape(x, &pw.conv)?;
    let e_shape = Feat { c: sp.c_out, ..*x };
    let sd = PlanBuilder::conv_shape(&e_shape, &dw.conv)?;
    let (hw, ce, ci) = (x.h * x.w, sp.c_out, sp.c_in);
    let l2 = Host::get().caches.l2.size;
    let fuse = !b.has_reference()
        && !x.nhwc
        && !b.channels_last_at(hw, ce)
        && is_pointwise(&sp)
        && sd.is_depthwise()
        && ce.saturating_mul(hw).saturating_mul(4) > l2;
    if !fuse {
        // An expansion whose strided 3x3 depthwise convolution lands in the channels-last
        // range writes channels-last, so that the depthwise step runs there too: on the Zen 4
        // host 144 x 56^2 3x3 stride 2 takes 49 us channels-last against 85 NCHW, for 3%
        // more in the expansion's GEMM (MobileNetV2, one thread); a 5x5 stride 2 gains
        // little (672 x 14^2: 38 against 43 us) and MobileNetV3's 72-channel one lost more in
        // its expansion than it gained.
        let cl = sd.is_depthwise()
            && (sd.kh, sd.kw) == (3, 3)
            && b.in_channels_last_range(sd.out_h() * sd.out_w());
        let h = b.conv_bn_act_as(x, pw, cl)?;
        return b.conv_bn_act(&h, dw);
    }
    let kerr = |e: KernelError| ModelError::config(format!("plan: {e}"));
    // Channels per group: a multiple of the depthwise kernel's channel block (its vector
    // lanes, 16 at most: it runs blocks of L channels one way and the remaining channels plane
    // by plane, in another order of summation, so a group must cut the channels where the
    // unfused step's blocks end, or the fused result differs in the last bits), as many as keep
    // the group's expanded planes within a quarter of L2 (at least one block). The expansion's
    // rows need not be whole GEMM tiles: a short last panel gives the same bits per row.
    let unit = 16;
    let group = (unit * ((l2 / 4) / (unit * hw * 4)).max(1)).min(ce);
    let (scale, shift) = pw.scale_shift()?;
    let w = pw.conv.weight.data();
    let groups = (0..ce)
        .step_by(group)
        .map(|g0| {
            let g = group.min(ce - g0);
            let wg = MatRef::row_major(&w[g0 * ci..(g0 + g) * ci], g, ci);
            Ok(ExpandGroup {
                w: PackedMatrix::pack_a(wg, None).map_err(kerr)?,
                scale: Some(scale[g0..g0 + g].to_vec()),
                bias: shift[g0..g0 + g].to_vec(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let (dw_w, dw_b) = dw.folded_weights();
    let f = ExpandDepthwise {
        groups,
        group,
        expand_act: pw.kernel_act(),
        dw: sd,
        dw_w,
        dw_b,
        dw_act: dw.kernel_act(),
    };
    let y = b.buffer(&[x.n, ce, sd.out_h(), sd.out_w()])?;
    b.push_fused(Step::ExpandDepthwise {
        f: Box::new(f),
        x: x.buf,
        y,
    })?;
    Ok(Feat {
        buf: y,
        n: x.n,
        c: ce,
        h: sd.out_h(),
        w: sd.out_w(),
        nhwc: false,
    })
}

fn mb_block(b: &mut PlanBuilder, x: Feat, block: &MbBlock) -> Result<Feat> {
    match block {
        MbBlock::Ir(ir) => {
            let mut h = expand_depthwise(b, &x, &ir.pw, &ir.dw)?;
            if let Some(se) = &ir.se {
                h = se_in_place(b, &h, se)?;
            }
            project(b, &h, &ir.pwl, x, ir.has_skip)
        }
        MbBlock::Ds(ds) => {
            let mut h = b.conv_bn_act(&x, &ds.dw)?;
            if let Some(se) = &ds.se {
                h = se_in_place(b, &h, se)?;
            }
            project(b, &h, &ds.pw, x, ds.has_skip)
        }
        MbBlock::Cn(c) => b.conv_bn_act(&x, c),
    }
}

/// The stem and every block of a MobileNet trunk.
pub(crate) fn plan_trunk(b: &mut PlanBuilder, x: Feat, t: &Trunk) -> Result<Feat> {
    let mut h = b.conv_bn_act(&x, &t.stem)?;
    for block in t.blocks.iter().flatten() {
        h = mb_block(b, h, block)?;
    }
    Ok(h)
}

/// A (SE-)ResNet bottleneck: the residual join (and the ReLU) fused into `conv3`'s GEMM, or,
/// with squeeze-excitation, into the SE step (`act(h * s + shortcut)` in one pass).
pub(crate) fn plan_bottleneck(b: &mut PlanBuilder, x: Feat, blk: &Bottleneck) -> Result<Feat> {
    let shortcut = match &blk.downsample {
        Some(d) => b.conv_bn_act(&x, d)?,
        None => x,
    };
    let h = b.conv_bn_act(&x, &blk.c1)?;
    let h = b.conv_bn_act(&h, &blk.c2)?;
    let act = blk.act;
    match &blk.se {
        None => b.conv_bn_residual(&h, &blk.c3, shortcut, act),
        Some(se) => {
            let h = b.conv_bn_act(&h, &blk.c3)?;
            b.squeeze_excite(
                &h,
                &se.fc1,
                Activation::Relu,
                &se.fc2,
                Activation::Sigmoid,
                Some((shortcut, act)),
            )
        }
    }
}
