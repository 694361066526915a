//! timm's channel rounding and weight initialisation for the EfficientNet / MobileNet family
//! (`timm.layers.make_divisible`, `timm.models._efficientnet_builder.round_channels` and
//! `_init_weight_goog`, after the TensorFlow reference of Tan & Le, "EfficientNet", ICML 2019).

use crate::init;
use crate::layers::{Conv2d, Linear};
use tessera_core::{Conv2dParams, Rng, Tensor};

/// timm's `make_divisible(v, divisor, min_value=None, round_limit=0.9)`: the nearest multiple of
/// `divisor` (at least `divisor`), bumped up one step if rounding lost more than 10 %.
pub fn make_divisible(v: f64, divisor: usize) -> usize {
    let d = divisor as f64;
    let mut new_v = (((v + d / 2.0).floor() / d).floor() * d).max(d);
    if new_v < 0.9 * v {
        new_v += d;
    }
    new_v as usize
}

/// timm's `round_channels(channels, multiplier)`: `make_divisible(channels * multiplier, 8)`
/// (unchanged when `multiplier` is 0).
pub fn round_channels(channels: usize, multiplier: f64) -> usize {
    if multiplier == 0.0 {
        channels
    } else {
        make_divisible(channels as f64 * multiplier, 8)
    }
}

/// A `k x k` convolution initialised as timm's `_init_weight_goog`: weight
/// `N(0, 2 / fan_out)` with `fan_out = k * k * out / groups`, bias zero. Padding is timm's
/// symmetric default `((stride - 1) + (k - 1)) / 2` (= `k / 2` for odd kernels).
pub fn goog_conv(
    in_ch: usize,
    out_ch: usize,
    k: usize,
    stride: usize,
    groups: usize,
    bias: bool,
    rng: &mut Rng,
) -> Conv2d {
    let fan_out = (k * k * out_ch / groups).max(1);
    let std = (2.0 / fan_out as f64).sqrt() as f32;
    let padding = ((stride - 1) + (k - 1)) / 2;
    Conv2d {
        weight: init::normal(&[out_ch, in_ch / groups, k, k], std, rng),
        bias: bias.then(|| Tensor::zeros(&[out_ch])),
        params: Conv2dParams::new(stride, padding).groups(groups),
    }
}

/// A linear layer initialised as timm's `_init_weight_goog`: weight `U(-1/sqrt(out),
/// 1/sqrt(out))`, bias zero.
pub fn goog_linear(in_f: usize, out_f: usize, rng: &mut Rng) -> Linear {
    let bound = 1.0 / (out_f.max(1) as f32).sqrt();
    Linear {
        weight: init::uniform(&[out_f, in_f], bound, rng),
        bias: Some(Tensor::zeros(&[out_f])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn make_divisible_matches_timm() {
        // Values computed with timm.layers.make_divisible.
        assert_eq!(make_divisible(32.0 * 0.35, 8), 16);
        assert_eq!(make_divisible(24.0 * 3.67, 8), 88);
        assert_eq!(make_divisible(16.0 * 4.5, 8), 72);
        assert_eq!(make_divisible(80.0 * 2.3, 8), 184);
        assert_eq!(make_divisible(96.0 * 0.25, 8), 24);
        assert_eq!(make_divisible(72.0 * 0.25, 8), 24);
        assert_eq!(make_divisible(3.0, 8), 8);
        assert_eq!(make_divisible(20.0, 8), 24);
        assert_eq!(round_channels(1280, 1.4), 1792);
        assert_eq!(round_channels(17, 0.0), 17);
    }
}
