//! Buffers for the hot data: 64-byte aligned, and on transparent huge pages when large.
//!
//! **Alignment.** A large `Vec<f32>` from glibc's allocator starts 16 bytes past a page
//! boundary, so every 64-byte vector access into it straddles two cache lines. On a Sapphire
//! Rapids class Xeon (2026-12-05, one thread, 64 Ki floats in cache, a microbenchmark outside
//! the repository) hard-swish out of place took 0.118-0.133 ns per element on such buffers
//! and 0.091 on 64-byte aligned ones (a copy: 0.080 either way). [`AlignedBuf`] is a vector
//! whose first element is 64-byte aligned: the plan's arena and packed GEMM operands live in
//! one. Whole networks, `tessera bench ARCH --threads 2` on that host, two alternating runs
//! each, before / after: MobileNetV2 3.85-4.05 / 3.56-3.61 ms, MobileNetV3-Large 3.77-3.87 /
//! 3.41-3.53, SE-ResNet-101 68.9-69.2 / 66.9-68.5, ViT-B/16 141.5-144.8 / 136.4-137.4.
//!
//! **Huge pages.** A network's packed weights are read once per inference, in panels that cross a 4 KiB page
//! every 1024 floats: ViT-B/16 streams 344 MB of them, 84,000 pages, far beyond what the
//! second-level TLB maps (2,048 entries, 8 MiB, on Intel Golden Cove), so each new page costs
//! a page walk on top of its memory latency. Linux backs 2 MiB-aligned parts of a range with
//! huge pages when the range is advised `MADV_HUGEPAGE` before it is first touched (the
//! kernel's `transparent_hugepage` setting `madvise`, common on servers, does nothing without
//! the advice; `always` does it anyway; `never` ignores it). PyTorch's CPU allocator advises
//! its large allocations the same way (`c10/core/impl/alloc_cpu.cpp`, `THP_MEM_ALLOC_ENABLE`).
//!
//! Measured on a Sapphire Rapids class Xeon (`madvise` mode, 2 cores), 2026-12-05: a 204 x
//! 3072 x 512 GEMM block (ViT-B's MLP at batch 1, 12 x 32 AVX-512 tiles) over 12 rotating
//! cold 6 MiB packed weight blocks runs at 73-74% of the FMA peak on 4 KiB pages and 76% on
//! huge pages; `tessera bench vit_base_patch16_224 --threads 2`, 4 alternating rounds,
//! 141.3-144.5 ms against 143.2-145.4 ms with `TESSERA_HUGEPAGES=off` (about 1%); the
//! CNNs, whose packed layers are mostly under 2 MiB, and batch 8 do not move beyond noise.
//! The plan's arena (activations, mostly hot in cache) measured no gain from the advice
//! alone; as an [`AlignedBuf`] of 2 MiB or more it is advised too.
//!
//! `TESSERA_HUGEPAGES=off` turns the advice off (to compare). Elsewhere than Linux, and for
//! buffers under 2 MiB, nothing is advised.

/// Bytes of one huge page on x86-64 Linux; smaller buffers are not advised.
const HUGE: usize = 2 << 20;

/// Floats in 64 bytes: the alignment of [`AlignedBuf`].
const ALIGN_FLOATS: usize = 16;

/// A zero-initialised f32 buffer whose first element is 64-byte aligned (one cache line, one
/// AVX-512 vector), on huge pages when it is 2 MiB or more (see the module header). Derefs to
/// `[f32]`. A clone is aligned too.
pub struct AlignedBuf {
    storage: Vec<f32>,
    off: usize,
    len: usize,
}

impl AlignedBuf {
    /// `len` zeros.
    pub fn zeroed(len: usize) -> Self {
        let storage = huge_zeroed(len + ALIGN_FLOATS);
        // `align_offset` counts f32 elements; a 4-byte aligned pointer reaches 64 bytes
        // within 16 of them.
        let off = storage.as_ptr().align_offset(64).min(ALIGN_FLOATS);
        AlignedBuf { storage, off, len }
    }

    /// A copy of `v`.
    pub fn from_slice(v: &[f32]) -> Self {
        let mut b = AlignedBuf::zeroed(v.len());
        b.copy_from_slice(v);
        b
    }

    /// Resizes to `len` elements like `Vec::resize(len, 0.0)`: the first `min(len, old len)`
    /// are kept, the rest are zeros. Reallocates only to grow past the storage.
    pub fn resize_zeroed(&mut self, len: usize) {
        if self.off + len <= self.storage.len() {
            if len > self.len {
                self.storage[self.off + self.len..self.off + len].fill(0.0);
            }
            self.len = len;
        } else {
            let mut grown = AlignedBuf::zeroed(len);
            let keep = self.len.min(len);
            grown[..keep].copy_from_slice(&self[..keep]);
            *self = grown;
        }
    }
}

impl Default for AlignedBuf {
    /// Empty, without allocating (so `std::mem::take` of a buffer costs nothing).
    fn default() -> Self {
        AlignedBuf {
            storage: Vec::new(),
            off: 0,
            len: 0,
        }
    }
}

impl Clone for AlignedBuf {
    fn clone(&self) -> Self {
        AlignedBuf::from_slice(self)
    }
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AlignedBuf({} floats)", self.len)
    }
}

impl std::ops::Deref for AlignedBuf {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.storage[self.off..self.off + self.len]
    }
}

impl std::ops::DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.storage[self.off..self.off + self.len]
    }
}

/// Makes room in a reused scratch `buf` for `len` floats starting on a 64-byte boundary and
/// returns `(start, grew)`: the index of that boundary and whether `buf` was replaced by a
/// larger zeroed vector (its contents are not kept). The scratch buffers that are kept
/// between calls (GEMM packing, depthwise blocks) use it, since a plain `Vec` is only
/// 16-byte aligned (a large one starts 16 bytes past a page) and off a line boundary every
/// 64-byte access touches two lines.
pub(crate) fn line_aligned(buf: &mut Vec<f32>, len: usize) -> (usize, bool) {
    let grew = buf.len() < len + ALIGN_FLOATS;
    if grew {
        *buf = vec![0.0; len + ALIGN_FLOATS];
    }
    (buf.as_ptr().align_offset(64).min(ALIGN_FLOATS), grew)
}

/// `vec![0.0; len]`, its allocation advised for huge pages before any of it is written when
/// it is 2 MiB or more (see the module header).
fn huge_zeroed(len: usize) -> Vec<f32> {
    let mut v: Vec<f32> = Vec::new();
    if len * std::mem::size_of::<f32>() >= HUGE && enabled() {
        v.reserve_exact(len);
        advise(
            v.as_mut_ptr().cast(),
            v.capacity() * std::mem::size_of::<f32>(),
        );
    }
    v.resize(len, 0.0);
    v
}

/// Whether `TESSERA_HUGEPAGES` leaves the advice on (read once).
fn enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| !std::env::var("TESSERA_HUGEPAGES").is_ok_and(|v| v == "off" || v == "0"))
}

#[cfg(target_os = "linux")]
fn advise(ptr: *mut u8, bytes: usize) {
    extern "C" {
        fn madvise(
            addr: *mut std::ffi::c_void,
            len: usize,
            advice: std::ffi::c_int,
        ) -> std::ffi::c_int;
    }
    /// `MADV_HUGEPAGE` in Linux's `asm-generic/mman-common.h`.
    const MADV_HUGEPAGE: std::ffi::c_int = 14;
    const PAGE: usize = 4096;
    // The whole pages inside the allocation (madvise takes a page-aligned start).
    let start = (ptr as usize).next_multiple_of(PAGE);
    let end = (ptr as usize + bytes) / PAGE * PAGE;
    if end > start {
        // SAFETY: [start, end) lies inside one live allocation owned by the caller's vector;
        // MADV_HUGEPAGE only changes how the kernel backs those pages, never their contents
        // or validity, and its failure (a kernel without THP) is harmless and ignored.
        unsafe {
            madvise(start as *mut std::ffi::c_void, end - start, MADV_HUGEPAGE);
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn advise(_ptr: *mut u8, _bytes: usize) {}

/// Lends the calling thread's scratch in `key`, grown to at least `len` floats, to `f` as its
/// first `len` floats, and keeps it for the next call. Taken out of the slot while `f` runs,
/// so a nested call on the same thread gets a new buffer rather than an alias. Kept per
/// thread so that `Plan::warm_up` (which runs every step on every thread) sizes it on each
/// of them: a warm call then allocates nothing, whichever thread it runs on.
pub(crate) fn lend_scratch<R>(
    key: &'static std::thread::LocalKey<std::cell::Cell<Vec<f32>>>,
    len: usize,
    f: impl FnOnce(&mut [f32]) -> R,
) -> R {
    let mut buf = key.take();
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
    let r = f(&mut buf[..len]);
    key.set(buf);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_buffers_are_aligned_zeroed_and_keep_their_contents() {
        for len in [0, 1, 17, 1000, HUGE / 4 + 3] {
            let mut b = AlignedBuf::zeroed(len);
            assert_eq!(b.len(), len);
            assert_eq!(b.as_ptr() as usize % 64, 0);
            assert!(b.iter().all(|&x| x == 0.0));
            b.iter_mut().enumerate().for_each(|(i, x)| *x = i as f32);
            let c = b.clone();
            assert_eq!(c.as_ptr() as usize % 64, 0);
            assert_eq!(&c[..], &b[..]);
            b.resize_zeroed(len / 2);
            b.resize_zeroed(len + 40);
            assert_eq!(b.as_ptr() as usize % 64, 0);
            assert!(b[..len / 2].iter().enumerate().all(|(i, &x)| x == i as f32));
            assert!(b[len / 2..].iter().all(|&x| x == 0.0));
        }
    }
}
