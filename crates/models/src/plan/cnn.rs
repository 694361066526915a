//! Plans of the convolutional blocks: the MobileNet trunk (inverted residual,
//! depthwise-separable and conv + BN + act blocks, with or without squeeze-excitation) and the
//! (SE-)ResNet bottleneck.

use super::builder::{Feat, PlanBuilder};
use crate::blocks::bottleneck::Bottleneck;
use crate::blocks::squeeze_excite::SqueezeExcite;
use crate::blocks::trunk::{MbBlock, Trunk};
use crate::error::Result;
use crate::layers::ConvBnAct;
use tessera_core::kernels::Activation;

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

fn mb_block(b: &mut PlanBuilder, x: Feat, block: &MbBlock) -> Result<Feat> {
    match block {
        MbBlock::Ir(ir) => {
            let mut h = b.conv_bn_act(&x, &ir.pw)?;
            h = b.conv_bn_act(&h, &ir.dw)?;
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
