//! A warm GEMM allocates nothing: packing buffers are per-thread and reused, and the thread
//! partition is computed, not collected. Counted with a global allocator wrapper.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use tessera_kernels::gemm::{gemm, Bias, Epilogue, GemmConfig, MatMut, MatRef};
use tessera_kernels::{Activation, Isa};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn warm_gemm_does_not_allocate() {
    let (m, n, k) = (300, 200, 700);
    let a = vec![0.5f32; m * k];
    let b = vec![0.25f32; k * n];
    let bias = vec![1.0f32; n];
    let mut c = vec![0.0f32; m * n];
    for isa in Isa::available() {
        // Single-threaded: the caller's thread does all the work, so its buffers are warm after
        // one call. (With several threads, rayon decides which worker runs which task, so a
        // worker may see its first GEMM on any later call.)
        let cfg = GemmConfig {
            isa: Some(isa),
            threads: 1,
            tuning: None,
        };
        let call = |c: &mut [f32]| {
            gemm(
                1.0,
                MatRef::row_major(&a, m, k),
                MatRef::row_major(&b, k, n),
                0.0,
                MatMut::row_major(c, m, n),
                Epilogue::new(Bias::PerCol(&bias), Activation::Relu),
                &cfg,
            )
            .unwrap()
        };
        call(&mut c);
        let before = ALLOCATIONS.load(Ordering::SeqCst);
        call(&mut c);
        call(&mut c);
        let after = ALLOCATIONS.load(Ordering::SeqCst);
        assert_eq!(
            after - before,
            0,
            "{isa}: a warm GEMM allocated {} times",
            after - before
        );
        assert!(c
            .iter()
            .all(|&x| (x - (1.0 + 0.125 * k as f32)).abs() < 1e-3));
    }
}
