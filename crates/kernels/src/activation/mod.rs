//! The activation family, shared by the element-wise kernels and the fused GEMM / convolution
//! epilogues.
//!
//! Each activation has a scalar definition here ([`Activation::apply_scalar`]), which is the test
//! oracle, and one vector form per ISA (`avx512`, `avx2`, `portable`) that the epilogues call on
//! registers before the store, so bias + activation never cost an extra pass over memory.
//!
//! References: ReLU6 (Howard et al., MobileNets, 2017; Sandler et al., MobileNetV2, 2018).

#[cfg(target_arch = "x86_64")]
pub mod avx2;
#[cfg(target_arch = "x86_64")]
pub mod avx512;
pub mod portable;

/// An activation that can be applied element-wise or fused into a kernel epilogue.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Activation {
    /// f(x) = x.
    #[default]
    Identity,
    /// f(x) = max(x, 0).
    Relu,
    /// f(x) = min(max(x, 0), 6).
    Relu6,
}

impl Activation {
    /// Every activation, for tests and benchmarks.
    pub const ALL: &'static [Activation] =
        &[Activation::Identity, Activation::Relu, Activation::Relu6];

    /// A short lower-case name (`relu6`), as used by the CLI and benchmark output.
    pub fn name(self) -> &'static str {
        match self {
            Activation::Identity => "identity",
            Activation::Relu => "relu",
            Activation::Relu6 => "relu6",
        }
    }

    /// The scalar definition: the reference every vector path is tested against.
    #[inline]
    pub fn apply_scalar(self, x: f32) -> f32 {
        match self {
            Activation::Identity => x,
            // NaN handling differs between `f32::max` and SIMD max; vector paths are tested on
            // finite inputs.
            Activation::Relu => x.max(0.0),
            Activation::Relu6 => x.clamp(0.0, 6.0),
        }
    }
}
