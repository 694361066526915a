//! Counting NaN and infinite values, for a recording that checks op outputs
//! ([`crate::profile::Recorder::start_checking`]): anomaly detection names the first op whose
//! output (or, in backward, whose returned gradient) is not finite.

use std::fmt;

use crate::tensor::Tensor;

/// How many values of an op's output are NaN or infinite.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NonFinite {
    /// NaN values.
    pub nan: usize,
    /// Positive or negative infinities.
    pub inf: usize,
    /// Values checked (every element of the outputs).
    pub numel: usize,
}

impl NonFinite {
    /// Counts the NaN and infinite values of `values`.
    pub fn count(values: &[f32]) -> NonFinite {
        let mut n = NonFinite {
            numel: values.len(),
            ..NonFinite::default()
        };
        // The common case, every value finite, is one pass that vectorises.
        if values.iter().all(|v| v.is_finite()) {
            return n;
        }
        for v in values {
            n.nan += usize::from(v.is_nan());
            n.inf += usize::from(v.is_infinite());
        }
        n
    }

    /// The counts over `tensors` together, `None` when every value is finite.
    pub fn of<'a>(tensors: impl IntoIterator<Item = &'a Tensor>) -> Option<NonFinite> {
        let mut total = NonFinite::default();
        for t in tensors {
            let n = NonFinite::count(&t.data());
            total.nan += n.nan;
            total.inf += n.inf;
            total.numel += n.numel;
        }
        total.any().then_some(total)
    }

    /// Whether any value is NaN or infinite.
    pub fn any(&self) -> bool {
        self.nan + self.inf > 0
    }
}

impl fmt::Display for NonFinite {
    /// `3 NaN and 0 infinite of 1536 values`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} NaN and {} infinite of {} values",
            self.nan, self.inf, self.numel
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_display() {
        let n = NonFinite::count(&[1.0, f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0]);
        assert_eq!((n.nan, n.inf, n.numel), (1, 2, 5));
        assert_eq!(n.to_string(), "1 NaN and 2 infinite of 5 values");
        assert!(!NonFinite::count(&[0.0, -1e30, f32::MAX]).any());
        let a = Tensor::from_vec(vec![1.0, f32::NAN], &[2]).unwrap();
        let b = Tensor::full(&[3], f32::INFINITY);
        let both = NonFinite::of([&a, &b]).unwrap();
        assert_eq!((both.nan, both.inf, both.numel), (1, 3, 5));
        assert_eq!(NonFinite::of([&Tensor::zeros(&[4])]), None);
        // A strided view counts its own elements only.
        let t = Tensor::from_vec(vec![f32::NAN, 1.0, 2.0, 3.0], &[2, 2]).unwrap();
        let col = t.narrow(1, 1, 1).unwrap();
        assert_eq!(NonFinite::of([&col]), None);
    }
}
