//! Placement of a plan's intermediate buffers in one arena by liveness analysis.
//!
//! Every buffer the plan's steps read or write is declared with its length; each step that
//! touches it extends its live interval `[first step, last step]`. Buffers whose intervals
//! overlap must not share memory; the others may. Offsets are assigned greedily, largest
//! buffer first, each at the lowest offset that does not collide with an already placed
//! buffer whose interval overlaps (the "greedy by size" arena planner of TensorFlow Lite and
//! of Pisarchyk & Lee, "Efficient Memory Management for Deep Neural Net Inference", 2020).
//! The arena is the highest end offset; it is allocated once, so a warm run allocates
//! nothing.

/// A buffer of the plan: an element range of the arena (after [`Planner::place`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buf {
    /// Index in the planner.
    pub id: usize,
    /// First element in the arena.
    pub off: usize,
    /// Elements.
    pub len: usize,
}

impl Buf {
    /// The element range in the arena.
    pub fn range(&self) -> std::ops::Range<usize> {
        self.off..self.off + self.len
    }
}

/// Alignment of every buffer, in elements (64 bytes: one cache line, one AVX-512 vector).
const ALIGN: usize = 16;

#[derive(Debug, Clone)]
struct Interval {
    len: usize,
    first: usize,
    last: usize,
}

/// Collects buffers and their live intervals, then places them.
#[derive(Debug, Default)]
pub struct Planner {
    bufs: Vec<Interval>,
}

impl Planner {
    /// A new buffer of `len` elements, not yet used by any step.
    pub fn buffer(&mut self, len: usize) -> Buf {
        self.bufs.push(Interval {
            len,
            first: usize::MAX,
            last: 0,
        });
        Buf {
            id: self.bufs.len() - 1,
            off: 0,
            len,
        }
    }

    /// Records that step `step` reads or writes `b`.
    pub fn touch(&mut self, b: Buf, step: usize) {
        let iv = &mut self.bufs[b.id];
        iv.first = iv.first.min(step);
        iv.last = iv.last.max(step);
    }

    /// Assigns every buffer its offset; returns the offsets (by buffer id) and the arena
    /// length in elements.
    pub fn place(&self) -> (Vec<usize>, usize) {
        let mut order: Vec<usize> = (0..self.bufs.len()).collect();
        order.sort_by(|&a, &b| self.bufs[b].len.cmp(&self.bufs[a].len).then(a.cmp(&b)));
        let mut offs = vec![0usize; self.bufs.len()];
        let mut placed: Vec<usize> = Vec::new();
        let mut total = 0;
        for &i in &order {
            let iv = &self.bufs[i];
            if iv.first == usize::MAX {
                continue; // never used
            }
            // Occupied ranges of placed buffers live at the same time, by start.
            let mut busy: Vec<(usize, usize)> = placed
                .iter()
                .filter(|&&j| {
                    let o = &self.bufs[j];
                    o.first <= iv.last && iv.first <= o.last
                })
                .map(|&j| (offs[j], offs[j] + self.bufs[j].len))
                .collect();
            busy.sort_unstable();
            let mut at = 0;
            for (s, e) in busy {
                if at + iv.len <= s {
                    break;
                }
                at = at.max(e.next_multiple_of(ALIGN));
            }
            offs[i] = at;
            total = total.max(at + iv.len);
            placed.push(i);
        }
        (offs, total)
    }

    /// Whether two placed buffers that are live at the same time overlap (a planner bug;
    /// checked by the tests).
    pub fn has_conflict(&self, offs: &[usize]) -> bool {
        let n = self.bufs.len();
        (0..n).any(|i| {
            (i + 1..n).any(|j| {
                let (a, b) = (&self.bufs[i], &self.bufs[j]);
                let used = a.first != usize::MAX && b.first != usize::MAX;
                let live = a.first <= b.last && b.first <= a.last;
                let mem = offs[i] < offs[j] + b.len && offs[j] < offs[i] + a.len;
                used && live && mem && a.len > 0 && b.len > 0
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disjoint_lifetimes_share_memory_and_overlapping_ones_do_not() {
        let mut p = Planner::default();
        let a = p.buffer(100);
        let b = p.buffer(50);
        let c = p.buffer(100);
        p.touch(a, 0);
        p.touch(b, 0);
        p.touch(a, 1);
        p.touch(b, 1);
        p.touch(c, 2); // a and b are dead: c reuses a's place
        p.touch(b, 2);
        let (offs, total) = p.place();
        assert!(!p.has_conflict(&offs));
        assert_eq!(offs[c.id], offs[a.id]);
        assert!(total <= 100 + 50 + ALIGN);
    }
}
