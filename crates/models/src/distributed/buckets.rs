//! Gradient buckets: the parameters cut, in a fixed order, into groups of about `cap` bytes,
//! each reduced across processes by one all-reduce (PyTorch DDP's gradient bucketing, Li et
//! al., "PyTorch Distributed: Experiences on Accelerating Data Parallel Training", VLDB 2020).
//!
//! The first layout follows the reverse of the parameters' declaration order (roughly the
//! order backward completes them); after the first hooked backward it is rebuilt once from
//! the order in which the gradients actually became ready, as DDP does. Both orders are the
//! same on every process (they depend only on the model and its graph), so every process
//! starts the same all-reduces in the same order.

/// One bucket: which parameters, where each starts in the flat buffer, and the length.
#[derive(Debug, Clone, PartialEq)]
pub struct Bucket {
    /// Parameter indices (in the model's visiting order).
    pub params: Vec<usize>,
    /// Offset of each parameter in the bucket's buffer.
    pub offsets: Vec<usize>,
    /// Values in the bucket.
    pub len: usize,
}

/// Where every parameter's gradient goes.
#[derive(Debug, Clone, PartialEq)]
pub struct BucketLayout {
    /// Parameter names and element counts the layout was built for.
    pub params: Vec<(String, usize)>,
    /// The buckets, each all-reduced as one message.
    pub buckets: Vec<Bucket>,
    /// `(bucket, index in it)` of each parameter.
    pub slot: Vec<(usize, usize)>,
    /// Built from an observed order of ready gradients (not the declaration order).
    pub observed: bool,
}

impl BucketLayout {
    /// Cuts `params` (name, element count), taken in `order`, into buckets of at most `cap`
    /// bytes each (a larger parameter gets a bucket of its own).
    pub fn new(params: Vec<(String, usize)>, order: &[usize], cap: usize, observed: bool) -> Self {
        let cap_elems = (cap / 4).max(1);
        let mut buckets: Vec<Bucket> = Vec::new();
        let mut slot = vec![(0, 0); params.len()];
        for &p in order {
            let n = params[p].1;
            let start_new = match buckets.last() {
                None => true,
                Some(b) => b.len > 0 && b.len + n > cap_elems,
            };
            if start_new {
                buckets.push(Bucket {
                    params: Vec::new(),
                    offsets: Vec::new(),
                    len: 0,
                });
            }
            let bi = buckets.len() - 1;
            let b = &mut buckets[bi];
            slot[p] = (bi, b.params.len());
            b.params.push(p);
            b.offsets.push(b.len);
            b.len += n;
        }
        BucketLayout {
            params,
            buckets,
            slot,
            observed,
        }
    }

    /// The declaration-order-reversed layout.
    pub fn reversed(params: Vec<(String, usize)>, cap: usize) -> Self {
        let order: Vec<usize> = (0..params.len()).rev().collect();
        BucketLayout::new(params, &order, cap, false)
    }

    /// The layout for `ready` (parameters in the order their gradients completed; the ones
    /// never reported follow in reverse declaration order).
    pub fn from_ready_order(params: Vec<(String, usize)>, ready: &[usize], cap: usize) -> Self {
        let mut seen = vec![false; params.len()];
        let mut order = Vec::with_capacity(params.len());
        for &p in ready {
            if p < params.len() && !seen[p] {
                seen[p] = true;
                order.push(p);
            }
        }
        order.extend((0..params.len()).rev().filter(|&p| !seen[p]));
        BucketLayout::new(params, &order, cap, true)
    }

    /// Total values over all buckets.
    pub fn total(&self) -> usize {
        self.buckets.iter().map(|b| b.len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(sizes: &[usize]) -> Vec<(String, usize)> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| (format!("p{i}"), n))
            .collect()
    }

    #[test]
    fn buckets_respect_the_cap_and_cover_every_parameter_once() {
        let l = BucketLayout::reversed(params(&[10, 300, 5, 5, 40, 1000, 3]), 4 * 64);
        assert_eq!(l.total(), 1363);
        let mut seen = vec![0; 7];
        for (bi, b) in l.buckets.iter().enumerate() {
            assert!(b.len <= 64 || b.params.len() == 1, "{b:?}");
            for (j, &p) in b.params.iter().enumerate() {
                seen[p] += 1;
                assert_eq!(l.slot[p], (bi, j));
            }
        }
        assert_eq!(seen, vec![1; 7]);
        // Reverse declaration order: the last parameter first.
        assert_eq!(l.buckets[0].params[0], 6);
    }

    #[test]
    fn ready_order_layout_appends_unreported_parameters() {
        let l = BucketLayout::from_ready_order(params(&[1, 1, 1, 1]), &[2, 0, 2], 8);
        let order: Vec<usize> = l.buckets.iter().flat_map(|b| b.params.clone()).collect();
        assert_eq!(order, vec![2, 0, 3, 1]);
        assert!(l.observed);
    }
}
