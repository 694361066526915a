//! Dense convolution weights packed once, for inference.
//!
//! A dense (or grouped) convolution is, per image and group, the GEMM
//! `Y[c_out/g, oh*ow] = W[c_out/g, c_in/g*kh*kw] * cols[c_in/g*kh*kw, oh*ow]`, with the weights
//! as the left operand. Packing that operand into the microkernel's MR-row panels costs a pass
//! over every weight on every call; in ResNet's last stage (7x7 outputs) that pass is as long as
//! a sizeable part of the multiply itself. [`PackedConvWeight`] packs each group's matrix once
//! (as XNNPACK and oneDNN pack weights at model load; tract's "packed" operands) and
//! [`conv2d_forward_packed`] runs the same dense forward on it. Bit-identical to
//! [`super::conv2d_forward`] on the raw weights: the panels hold the same numbers in the order
//! the GEMM would have packed them.
//!
//! A packed weight may carry a multiplier per output channel
//! ([`PackedConvWeight::with_channel_scale`]), applied to each sum in the GEMM epilogue before
//! the bias: an eval-mode batch norm kept out of the weights, so that the weights are not
//! rounded a second time (`w * s` in f32) and the output carries one rounding of the scale
//! instead of one per term.
//!
//! A weight with at most 4 input channels (a stem) is also packed for the direct kernel of
//! `stem.rs` (`[c_out / 4][c_in * kh * kw][4]`), which the forward takes instead of the GEMM.
//!
//! A single-group weight may instead be packed for the implicit-GEMM kernel of `implicit.rs`
//! (`[c_out / 32][kh * kw][c_in][32]`, [`PackedConvWeight::pack_implicit`]), which reads the
//! input in place and skips the padding taps; it runs the shapes that
//! [`PackedConvWeight::implicit_applies`] accepts.
//!
//! A single-group 3x3 weight may instead be transformed for the Winograd F(2x2, 3x3) form of
//! `winograd/` ([`PackedConvWeight::pack_winograd`]: 16 GEMMs on transformed tiles, 2.25x
//! fewer multiplications), for the stride-1 "same" shapes [`PackedConvWeight::winograd_applies`]
//! accepts.
//!
//! Depthwise convolutions do not go through a GEMM and are not packed.

use super::{
    check_bias, check_len, dense, implicit, path, rename, stem, winograd, ChannelEpilogue,
    Conv2dShape, Path,
};
use crate::activation::Activation;
use crate::error::KernelError;
use crate::gemm::{MatRef, PackedMatrix};
use crate::isa::Isa;

/// The weight `[c_out, c_in / groups, kh, kw]` of a dense convolution, packed per group as the
/// GEMM's left operand for one instruction set.
#[derive(Debug, Clone)]
pub struct PackedConvWeight {
    shape: [usize; 4],
    groups: usize,
    isa: Isa,
    packs: Vec<PackedMatrix>,
    /// `[c_out]` multipliers applied to each output channel before the bias, if any.
    scale: Option<Vec<f32>>,
    /// The weights packed for the direct kernel of few input channels (`stem.rs`), when the
    /// weight's shape qualifies.
    direct: Option<Vec<f32>>,
    /// `W^T` packed as the GEMM's right operand ([`PackedConvWeight::pack_transposed`]; then
    /// `packs` is empty).
    transposed: Option<PackedMatrix>,
    /// The panels of the implicit-GEMM kernel ([`PackedConvWeight::pack_implicit`]; then
    /// `packs` is empty).
    implicit: Option<crate::memory::AlignedBuf>,
    /// The 16 transformed filters of the Winograd form ([`PackedConvWeight::pack_winograd`];
    /// then `packs` is empty).
    winograd: Option<Vec<PackedMatrix>>,
}

/// Which operand layout [`PackedConvWeight::build`] packs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Form {
    Gemm,
    Transposed,
    Implicit,
    Winograd,
    /// The Winograd form with the tiles as the GEMMs' rows (`winograd::tiles_as_rows`).
    WinogradTilesAsRows,
}

impl PackedConvWeight {
    /// Packs `w` (shape `[c_out, c_in_per_group, kh, kw]`, `groups` groups) for `isa` (default:
    /// [`Isa::current`]). Errors: a zero or non-dividing group count, a slice of the wrong
    /// length, an ISA this CPU lacks.
    pub fn pack(
        w: &[f32],
        shape: [usize; 4],
        groups: usize,
        isa: Option<Isa>,
    ) -> Result<Self, KernelError> {
        Self::build(w, shape, groups, isa, Form::Gemm)
    }

    /// Checks `w` against `shape` and `groups`, then packs it in `form`: per group as the left
    /// operand, (one group) `W^T` as the right one, or the implicit kernel's panels; plus the
    /// stem kernel's direct form when the shape qualifies.
    fn build(
        w: &[f32],
        shape: [usize; 4],
        groups: usize,
        isa: Option<Isa>,
        form: Form,
    ) -> Result<Self, KernelError> {
        const OP: &str = "conv2d pack weight";
        let [c_out, cig, kh, kw] = shape;
        if groups == 0 || c_out % groups != 0 {
            return Err(KernelError::invalid(
                OP,
                format!("weight {shape:?}: {groups} groups do not divide {c_out} output channels"),
            ));
        }
        if form != Form::Gemm && groups != 1 {
            return Err(KernelError::invalid(
                OP,
                format!("weight {shape:?}: the transposed, implicit and Winograd forms take one group, got {groups}"),
            ));
        }
        if w.len() != shape.iter().product::<usize>() {
            return Err(KernelError::invalid(
                OP,
                format!(
                    "weight {shape:?} needs {} values, got {}",
                    shape.iter().product::<usize>(),
                    w.len()
                ),
            ));
        }
        let isa = Isa::resolve(isa)?;
        let (cog, kdim) = (c_out / groups, cig * kh * kw);
        if form == Form::Implicit && implicit::panel_width(isa).is_none() {
            return Err(KernelError::invalid(
                OP,
                format!("weight {shape:?}: the implicit-GEMM kernel runs on avx512, not {isa}"),
            ));
        }
        let wino_form = matches!(form, Form::Winograd | Form::WinogradTilesAsRows);
        if wino_form && (kh, kw) != (3, 3) {
            return Err(KernelError::invalid(
                OP,
                format!("weight {shape:?}: the Winograd form takes 3x3 filters"),
            ));
        }
        let (mut packs, mut transposed, mut implicit, mut wino) = (Vec::new(), None, None, None);
        match form {
            Form::Winograd | Form::WinogradTilesAsRows => {
                let rows = form == Form::WinogradTilesAsRows;
                wino = Some(winograd::pack_weights(w, c_out, cig, isa, rows)?)
            }
            Form::Transposed => {
                let wm = MatRef::row_major(w, c_out, kdim);
                transposed = Some(PackedMatrix::pack_b(wm.t(), Some(isa))?);
            }
            Form::Implicit => implicit = implicit::pack_weights(w, shape, isa),
            Form::Gemm => {
                packs = (0..groups)
                    .map(|g| {
                        let wg = &w[g * cog * kdim..(g + 1) * cog * kdim];
                        PackedMatrix::pack_a(MatRef::row_major(wg, cog, kdim), Some(isa))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
            }
        }
        // The stem kernel's form, unless the Winograd form replaces every path.
        let direct = (!wino_form && Self::runs_direct(shape, groups)).then(|| {
            let mut d = Vec::new();
            stem::pack_weights(w, c_out, kdim, &mut d);
            d
        });
        Ok(PackedConvWeight {
            shape,
            groups,
            isa,
            packs,
            scale: None,
            direct,
            transposed,
            implicit,
            winograd: wino,
        })
    }

    /// Packs `w` (one group) for the transposed form of the product: per image,
    /// `Y^T [oh*ow, c_out] = cols^T [oh*ow, c_in*kh*kw] W^T`, with `W^T` packed once as the
    /// right operand and `Y` written through the microkernel's transposed store (see
    /// `gemm::microkernel_t`). For small output planes the pixels then run along the tile's
    /// MR rows and the channels along its NR columns, which wastes less of the tile when the
    /// plane is narrower than NR (a 7 x 7 plane: 49 pixels against 64 padded columns). Each
    /// element sees the same operations in the same order as in [`PackedConvWeight::pack`]'s
    /// form, so the two give the same bits. Errors: as `pack`, and more than one group.
    pub fn pack_transposed(
        w: &[f32],
        shape: [usize; 4],
        groups: usize,
        isa: Option<Isa>,
    ) -> Result<Self, KernelError> {
        Self::build(w, shape, groups, isa, Form::Transposed)
    }

    /// Packs `w` (one group) for the implicit-GEMM kernel (`implicit.rs`): the convolution
    /// without an im2col matrix, skipping the padding taps. The packed weight then runs only
    /// the shapes [`PackedConvWeight::implicit_applies`] accepts on `isa` (others are an error
    /// in [`conv2d_forward_packed`]). Results differ from the GEMM forms in the last bits
    /// (another summation order). Errors: as `pack`, more than one group, an ISA without the
    /// kernel (it runs on avx512).
    pub fn pack_implicit(
        w: &[f32],
        shape: [usize; 4],
        groups: usize,
        isa: Option<Isa>,
    ) -> Result<Self, KernelError> {
        Self::build(w, shape, groups, isa, Form::Implicit)
    }

    /// Whether the implicit-GEMM kernel runs `s` on `isa` (default: [`Isa::current`]): AVX-512,
    /// one group, at most 3 x 3 taps, output widths that are multiples of 14 (or 7) with
    /// output channels in whole tiles (32, or 64 on 7-pixel rows), padding of at most one
    /// pixel per side.
    pub fn implicit_applies(s: &Conv2dShape, isa: Option<Isa>) -> bool {
        let isa = match isa {
            Some(i) => i,
            None => match Isa::current() {
                Ok(i) => i,
                Err(_) => return false,
            },
        };
        implicit::tile_for(isa, s).is_some()
    }

    /// Packs `w` (one group, 3x3) for the Winograd F(2x2, 3x3) form (`winograd/`): the 16
    /// transformed filters `G g G^T`, computed in f64 and rounded once, each packed as its
    /// GEMM's right operand. The packed weight then runs only the shapes
    /// [`PackedConvWeight::winograd_applies`] accepts (others are an error in
    /// [`conv2d_forward_packed`]). Results differ from the direct forms in the last bits
    /// (another algorithm). Errors: as `pack`, more than one group, a filter that is not 3x3.
    pub fn pack_winograd(
        w: &[f32],
        shape: [usize; 4],
        groups: usize,
        isa: Option<Isa>,
    ) -> Result<Self, KernelError> {
        Self::build(w, shape, groups, isa, Form::Winograd)
    }

    /// As [`PackedConvWeight::pack_winograd`], with the GEMMs' operands arranged for the
    /// convolution `s` (its batch and plane size): the transformed filters as the right
    /// operand when the tiles fit the kernel's rows better than its columns (a 14 x 14 plane's
    /// 49 tiles per image; `winograd/`), else as the left. Both arrangements give the same
    /// bits; any shape the form applies to runs with either. Errors: as `pack_winograd`, and
    /// `s` whose weight shape differs from `shape`.
    pub fn pack_winograd_for(
        w: &[f32],
        shape: [usize; 4],
        s: &Conv2dShape,
        isa: Option<Isa>,
    ) -> Result<Self, KernelError> {
        if [s.c_out, s.c_in, s.kh, s.kw] != shape {
            return Err(KernelError::invalid(
                "conv2d pack weight",
                format!("weight {shape:?} does not belong to the convolution {s}"),
            ));
        }
        let resolved = Isa::resolve(isa)?;
        let rows = winograd::applies(s) && winograd::tiles_as_rows(s, resolved);
        Self::pack_winograd_arranged(w, shape, Some(resolved), rows)
    }

    /// The Winograd form with the tiles as the GEMMs' rows or not, whatever the shape (for
    /// [`PackedConvWeight::pack_winograd_for`] and the tests of both arrangements).
    pub(crate) fn pack_winograd_arranged(
        w: &[f32],
        shape: [usize; 4],
        isa: Option<Isa>,
        tiles_as_rows: bool,
    ) -> Result<Self, KernelError> {
        let form = if tiles_as_rows {
            Form::WinogradTilesAsRows
        } else {
            Form::Winograd
        };
        Self::build(w, shape, 1, isa, form)
    }

    /// Whether the Winograd form computes `s`: one group, 3x3, stride 1, padding 1, no
    /// dilation, more than one input channel (any ISA).
    pub fn winograd_applies(s: &Conv2dShape) -> bool {
        winograd::applies(s)
    }

    /// Whether it holds the Winograd form ([`PackedConvWeight::pack_winograd`]).
    pub fn is_winograd(&self) -> bool {
        self.winograd.is_some()
    }

    /// Whether it holds the Winograd form with the tiles as the GEMMs' rows
    /// ([`PackedConvWeight::pack_winograd_for`]).
    pub fn is_winograd_tiles_as_rows(&self) -> bool {
        self.winograd
            .as_deref()
            .is_some_and(winograd::packed_tiles_as_rows)
    }

    /// Whether it holds the implicit-GEMM form ([`PackedConvWeight::pack_implicit`]).
    pub fn is_implicit(&self) -> bool {
        self.implicit.is_some()
    }

    /// Whether it holds the transposed form ([`PackedConvWeight::pack_transposed`]).
    pub fn is_transposed(&self) -> bool {
        self.transposed.is_some()
    }

    /// Whether the direct kernel of few input channels (`stem.rs`), not the GEMM, runs a
    /// weight of this shape and group count (then the GEMM form it is packed in is unused).
    pub fn runs_direct(shape: [usize; 4], groups: usize) -> bool {
        stem::applies_to_weight(shape, groups)
    }

    /// The same weight with a multiplier per output channel: [`conv2d_forward_packed`] then
    /// computes `act(scale[c] * conv(x, w)[c] + bias[c])`. Errors: `scale` does not have
    /// `c_out` values.
    pub fn with_channel_scale(mut self, scale: Vec<f32>) -> Result<Self, KernelError> {
        if scale.len() != self.shape[0] {
            return Err(KernelError::invalid(
                "conv2d pack weight",
                format!(
                    "weight {:?}: a channel scale needs {} values, got {}",
                    self.shape,
                    self.shape[0],
                    scale.len()
                ),
            ));
        }
        self.scale = Some(scale);
        Ok(self)
    }

    /// The multiplier per output channel, if any.
    pub fn channel_scale(&self) -> Option<&[f32]> {
        self.scale.as_deref()
    }

    /// Whether a weight of this shape and group count runs through the GEMM (and can be packed
    /// for [`conv2d_forward_packed`]): every convolution but a depthwise one (`groups == c_in`,
    /// which includes a single-channel input with one group).
    pub fn applies(shape: [usize; 4], groups: usize) -> bool {
        let c_in = shape[1] * groups;
        !(groups == c_in && groups > 0 && shape[0].is_multiple_of(groups))
    }

    /// `[c_out, c_in / groups, kh, kw]`.
    pub fn shape(&self) -> [usize; 4] {
        self.shape
    }

    /// The channel groups it was packed for.
    pub fn groups(&self) -> usize {
        self.groups
    }

    /// The instruction set whose panel layout it holds.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// Bytes of packed data (edge panels are zero-padded to the microkernel's MR rows).
    pub fn size_bytes(&self) -> usize {
        self.packs
            .iter()
            .map(PackedMatrix::size_bytes)
            .sum::<usize>()
            + self.scale.as_ref().map_or(0, |s| 4 * s.len())
            + self.direct.as_ref().map_or(0, |d| 4 * d.len())
            + self.transposed.as_ref().map_or(0, PackedMatrix::size_bytes)
            + self.implicit.as_ref().map_or(0, |d| 4 * d.len())
            + self
                .winograd
                .as_ref()
                .map_or(0, |u| u.iter().map(PackedMatrix::size_bytes).sum())
    }
}

/// `y = act(conv(x, w) + bias)` (or `act(scale * conv(x, w) + bias)` with the weight's
/// [channel scale](PackedConvWeight::with_channel_scale)) with pre-packed weights: [`super::conv2d_forward`] without the
/// per-call weight packing, on the ISA the weights were packed for. Errors: an invalid shape,
/// weights packed for another shape or group count, a depthwise shape (use
/// [`super::conv2d_forward`]), slices of the wrong length.
pub fn conv2d_forward_packed(
    s: &Conv2dShape,
    x: &[f32],
    w: &PackedConvWeight,
    bias: Option<&[f32]>,
    act: Activation,
    y: &mut [f32],
) -> Result<(), KernelError> {
    const OP: &str = "conv2d_forward_packed";
    s.validate().map_err(|e| rename(e, OP))?;
    let expect = [s.c_out, s.c_in_per_group(), s.kh, s.kw];
    if w.shape != expect || w.groups != s.groups {
        return Err(KernelError::invalid(
            OP,
            format!(
                "{s}: the weights were packed for shape {:?} with {} groups",
                w.shape, w.groups
            ),
        ));
    }
    if matches!(path(s), Path::Depthwise) {
        return Err(KernelError::invalid(
            OP,
            format!("{s}: depthwise convolutions are not packed; use conv2d_forward"),
        ));
    }
    check_len(OP, s, "x", x.len(), s.input_len())?;
    check_len(OP, s, "y", y.len(), s.output_len())?;
    check_bias(OP, s, bias)?;
    w.isa.check()?;
    let epi = ChannelEpilogue {
        scale: w.scale.as_deref(),
        bias,
        act,
    };
    if let Some(u) = &w.winograd {
        if !winograd::applies(s) {
            return Err(KernelError::invalid(
                OP,
                format!("{s}: the Winograd form runs 3x3 stride-1 convolutions with padding 1"),
            ));
        }
        return winograd::forward(w.isa, s, x, u, epi, y);
    }
    match (&w.direct, &w.transposed, &w.implicit) {
        (Some(d), _, _) if stem::applies(s) => stem::forward(w.isa, s, x, d, epi, y),
        (_, Some(t), _) => dense::forward_transposed(s, x, t, epi, y),
        (_, _, Some(p)) => implicit::forward(w.isa, s, x, p, epi, y),
        _ => dense::forward(w.isa, s, x, dense::Weights::Packed(&w.packs), epi, y),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conv::conv2d_forward_with;

    fn shape(c_in: usize, c_out: usize, k: usize, stride: usize, groups: usize) -> Conv2dShape {
        Conv2dShape {
            n: 2,
            c_in,
            h: 9,
            w: 7,
            c_out,
            kh: k,
            kw: k,
            stride: (stride, stride),
            padding: (k / 2, k / 2),
            dilation: (1, 1),
            groups,
        }
    }

    fn data(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) % 1000) as f32
                    / 500.0
                    - 1.0
            })
            .collect()
    }

    #[test]
    fn packed_forward_is_bit_identical_to_the_raw_forward_on_every_isa() {
        for isa in Isa::available() {
            for &(ci, co, k, st, g) in &[
                (8, 13, 1, 1, 1),
                (6, 10, 3, 1, 2),
                (5, 7, 3, 2, 1),
                (4, 9, 1, 2, 1),
            ] {
                let s = shape(ci, co, k, st, g);
                let x = data(s.input_len(), 1);
                let w = data(s.weight_len(), 2);
                let b = data(co, 3);
                let mut y0 = vec![0.0; s.output_len()];
                let mut y1 = vec![1.0; s.output_len()];
                conv2d_forward_with(isa, &s, &x, &w, Some(&b), Activation::Relu6, &mut y0).unwrap();
                let p = PackedConvWeight::pack(&w, [co, ci / g, k, k], g, Some(isa)).unwrap();
                conv2d_forward_packed(&s, &x, &p, Some(&b), Activation::Relu6, &mut y1).unwrap();
                assert!(
                    y0.iter().zip(&y1).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{isa} {s}"
                );
            }
        }
    }

    #[test]
    fn channel_scale_multiplies_each_sum_before_the_bias_on_every_isa() {
        for isa in Isa::available() {
            for &(ci, co, k, st, g) in &[(8, 13, 1, 1, 1), (6, 10, 3, 1, 2), (5, 7, 3, 2, 1)] {
                for n in [1, 3] {
                    let s = Conv2dShape {
                        n,
                        ..shape(ci, co, k, st, g)
                    };
                    let x = data(s.input_len(), 1);
                    let w = data(s.weight_len(), 2);
                    let b = data(co, 3);
                    let scale: Vec<f32> = data(co, 4).iter().map(|v| 1.0 + 0.5 * v).collect();
                    // The unscaled sums, then `relu6(sum * scale + bias)` rounded as the
                    // epilogue rounds: a product, then a sum.
                    let mut sums = vec![0.0; s.output_len()];
                    conv2d_forward_with(isa, &s, &x, &w, None, Activation::Identity, &mut sums)
                        .unwrap();
                    let ohw = s.out_h() * s.out_w();
                    let want: Vec<f32> = sums
                        .iter()
                        .enumerate()
                        .map(|(i, &v)| {
                            let c = i / ohw % co;
                            (v * scale[c] + b[c]).clamp(0.0, 6.0)
                        })
                        .collect();
                    let p = PackedConvWeight::pack(&w, [co, ci / g, k, k], g, Some(isa))
                        .unwrap()
                        .with_channel_scale(scale.clone())
                        .unwrap();
                    assert_eq!(p.channel_scale(), Some(&scale[..]));
                    let mut got = vec![f32::NAN; s.output_len()];
                    conv2d_forward_packed(&s, &x, &p, Some(&b), Activation::Relu6, &mut got)
                        .unwrap();
                    assert!(
                        want.iter()
                            .zip(&got)
                            .all(|(a, b)| a.to_bits() == b.to_bits()),
                        "{isa} {s}"
                    );
                }
            }
        }
        let p = PackedConvWeight::pack(&[0.0; 8], [2, 4, 1, 1], 1, None).unwrap();
        assert!(p.with_channel_scale(vec![1.0; 3]).is_err());
    }

    #[test]
    fn mismatched_or_depthwise_shapes_are_errors() {
        let s = shape(8, 13, 3, 1, 1);
        let w = data(s.weight_len(), 2);
        let p = PackedConvWeight::pack(&w, [13, 8, 3, 3], 1, None).unwrap();
        let other = shape(8, 13, 1, 1, 1);
        let (x, mut y) = (vec![0.0; other.input_len()], vec![0.0; other.output_len()]);
        let e = conv2d_forward_packed(&other, &x, &p, None, Activation::Identity, &mut y);
        assert!(e.unwrap_err().to_string().contains("packed for shape"));
        let dw = shape(8, 8, 3, 1, 8);
        let pw = PackedConvWeight::pack(&data(dw.weight_len(), 1), [8, 1, 3, 3], 8, None).unwrap();
        let (x, mut y) = (vec![0.0; dw.input_len()], vec![0.0; dw.output_len()]);
        let e = conv2d_forward_packed(&dw, &x, &pw, None, Activation::Identity, &mut y);
        assert!(e.unwrap_err().to_string().contains("depthwise"));
        assert!(PackedConvWeight::pack(&w, [13, 8, 3, 3], 2, None).is_err());
        assert!(PackedConvWeight::applies([13, 8, 3, 3], 1));
        assert!(!PackedConvWeight::applies([8, 1, 3, 3], 8));
        assert!(!PackedConvWeight::applies([16, 1, 3, 3], 1));
        assert!(PackedConvWeight::pack(&w[1..], [13, 8, 3, 3], 1, None).is_err());
    }
}
