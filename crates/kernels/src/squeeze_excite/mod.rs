//! Squeeze-and-excitation (Hu et al., "Squeeze-and-Excitation Networks", CVPR 2018) at
//! inference, computed for accuracy where it is cheap:
//!
//! - [`gate`]: `s = gate(W2 act(W1 mean_hw(x) + b1) + b2)` in f64 from the f32 input and
//!   weights, rounded to f32 once (the squeeze, both small layers and the gate);
//! - [`join`]: the residual join of SE-ResNet, `r = act(fma(x, s, r))`, rounded once.
//!
//! The two are the places where a squeeze-and-excitation block loses the most bits in f32:
//! the gate's logits are long sums that cancel, and the join cancels too (docs/accuracy.md).

pub mod gate;
pub mod join;

pub use gate::{
    excite_gate, excite_gate_nhwc, excite_gate_reference, excite_gate_with, ExciteWeights,
};
pub use join::{scale_join, scale_join_reference, scale_join_with};
