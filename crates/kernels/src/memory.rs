//! Packed weights on transparent huge pages.
//!
//! A network's packed weights are read once per inference, in panels that cross a 4 KiB page
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
//! The plan's arena (activations, hot in cache) measured no gain and is not advised.
//!
//! `TESSERA_HUGEPAGES=off` turns the advice off (to compare). Elsewhere than Linux, and for
//! buffers under 2 MiB, [`zeroed`] is `vec![0.0; len]`.

/// Bytes of one huge page on x86-64 Linux; smaller buffers are not advised.
const HUGE: usize = 2 << 20;

/// `len` zeros in a new vector whose pages the OS may back with huge pages (see the module
/// header). The contents and the vector are those of `vec![0.0; len]`.
pub fn zeroed(len: usize) -> Vec<f32> {
    let mut v = Vec::new();
    resize_zeroed(&mut v, len);
    v
}

/// Resizes `v` to `len` elements, zeros appended, like `v.resize(len, 0.0)`; when that needs
/// a new allocation of at least 2 MiB, the allocation is advised for huge pages before any
/// of it is written.
pub fn resize_zeroed(v: &mut Vec<f32>, len: usize) {
    if len > v.capacity() && len * std::mem::size_of::<f32>() >= HUGE && enabled() {
        // A new allocation of exactly `len` (the old contents are moved into it), advised
        // before `resize` writes its pages.
        v.reserve_exact(len - v.len());
        advise(
            v.as_mut_ptr().cast(),
            v.capacity() * std::mem::size_of::<f32>(),
        );
    }
    v.resize(len, 0.0);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeroed_and_resized_buffers_hold_zeros_and_keep_their_contents() {
        for len in [0, 1, 1000, (HUGE / 4) - 1, HUGE / 4, 3 * HUGE / 4 + 17] {
            let v = zeroed(len);
            assert_eq!(v.len(), len);
            assert!(v.iter().all(|&x| x == 0.0));
        }
        let mut v: Vec<f32> = (0..100).map(|i| i as f32).collect();
        resize_zeroed(&mut v, HUGE);
        assert_eq!(v.len(), HUGE);
        assert!(v[..100].iter().enumerate().all(|(i, &x)| x == i as f32));
        assert!(v[100..].iter().all(|&x| x == 0.0));
        resize_zeroed(&mut v, 10);
        assert_eq!(&v[..], &(0..10).map(|i| i as f32).collect::<Vec<_>>()[..]);
    }
}
