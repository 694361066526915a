//! A readable `Display` and `Debug` for tensors: values summarised as PyTorch does (at most three
//! leading and three trailing entries per dim once a tensor has more than 1000 elements), then
//! the shape and strides.

use std::fmt;

use crate::layout::contiguous_strides;
use crate::tensor::Tensor;

const THRESHOLD: usize = 1000;
const EDGE: usize = 3;

fn fmt_value(v: f32) -> String {
    if v.is_finite() && v == v.trunc() && v.abs() < 1e8 {
        format!("{v:.1}")
    } else if v.is_finite() && (v.abs() >= 1e5 || (v != 0.0 && v.abs() < 1e-4)) {
        format!("{v:.4e}")
    } else {
        format!("{v:.4}")
    }
}

fn write_dim(
    f: &mut fmt::Formatter<'_>,
    data: &[f32],
    shape: &[usize],
    strides: &[usize],
    base: usize,
    summarise: bool,
    indent: usize,
) -> fmt::Result {
    if shape.is_empty() {
        return write!(f, "{}", fmt_value(data[base]));
    }
    let n = shape[0];
    let items: Vec<Option<usize>> = if summarise && n > 2 * EDGE {
        (0..EDGE)
            .map(Some)
            .chain(std::iter::once(None))
            .chain((n - EDGE..n).map(Some))
            .collect()
    } else {
        (0..n).map(Some).collect()
    };
    write!(f, "[")?;
    for (j, item) in items.iter().enumerate() {
        if j > 0 {
            if shape.len() > 1 {
                write!(f, ",\n{}", " ".repeat(indent + 1))?;
            } else {
                write!(f, ", ")?;
            }
        }
        match item {
            Some(i) => write_dim(
                f,
                data,
                &shape[1..],
                &strides[1..],
                base + i * strides[0],
                summarise,
                indent + 1,
            )?,
            None => write!(f, "...")?,
        }
    }
    write!(f, "]")
}

impl fmt::Display for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let data = self.data();
        let shape = self.shape();
        write!(f, "tensor(")?;
        if data.is_empty() {
            write!(f, "[]")?;
        } else {
            let strides = contiguous_strides(shape);
            write_dim(f, &data, shape, &strides, 0, data.len() > THRESHOLD, 7)?;
        }
        write!(f, ", shape={:?}, strides={:?}", shape, self.strides())?;
        if let Some(op) = self.op_name() {
            write!(f, ", grad_fn={op}")?;
        } else if self.requires_grad() {
            write!(f, ", requires_grad=true")?;
        }
        write!(f, ")")
    }
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_and_summarised() {
        let t = Tensor::from_vec(vec![1.0, 2.5, -3.0, 4.0], &[2, 2]).unwrap();
        assert_eq!(
            t.to_string(),
            "tensor([[1.0, 2.5000],\n        [-3.0, 4.0]], shape=[2, 2], strides=[2, 1])"
        );
        let big = Tensor::arange(0.0, 2000.0, 1.0).unwrap();
        let s = big.to_string();
        assert!(
            s.starts_with("tensor([0.0, 1.0, 2.0, ..., 1997.0, 1998.0, 1999.0]"),
            "{s}"
        );
    }
}
