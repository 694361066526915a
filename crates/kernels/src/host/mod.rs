//! What this CPU is: its identity (vendor, family, model, stepping, brand string) and its cache
//! hierarchy (size, associativity, line size and sets of L1d, L2 and L3), read once at start-up.
//!
//! The GEMM and convolution kernels derive their block sizes from these numbers (see
//! `gemm/blocking.rs`, after Low, Igual, Smith and Quintana-Ortí, "Analytical Modeling Is Enough
//! for High-Performance BLIS", ACM TOMS 2016), and the tuning cache is keyed by the identity.
//!
//! Sources, in order: CPUID (leaf 4 on Intel, leaf 0x8000001D on AMD; both give the
//! "deterministic cache parameters": ways, partitions, line size and sets per level), then
//! Linux sysfs (`/sys/devices/system/cpu/cpu0/cache/index*`), then conservative defaults
//! (32 KiB 8-way L1d, 512 KiB 8-way L2, 8 MiB 16-way L3), each marked with where it came from.

mod cpuid;
mod sysfs;

use std::sync::OnceLock;

/// One level of the data-cache hierarchy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheLevel {
    /// Total size in bytes.
    pub size: usize,
    /// Associativity (ways per set); `size == ways * sets * line` for set-associative caches.
    pub ways: usize,
    /// Line size in bytes.
    pub line: usize,
    /// Number of sets.
    pub sets: usize,
    /// Logical processors sharing this cache (1 for a private cache).
    pub shared_by: usize,
}

impl CacheLevel {
    /// A cache of `size` bytes, `ways`-way set-associative, with 64-byte lines.
    pub const fn new(size: usize, ways: usize, shared_by: usize) -> CacheLevel {
        let line = 64;
        CacheLevel {
            size,
            ways,
            line,
            sets: size / (ways * line),
            shared_by,
        }
    }

    /// Bytes per way (`sets * line`): the unit in which the analytical model places operands.
    pub fn way_bytes(&self) -> usize {
        self.sets * self.line
    }

    /// Whether the numbers are self-consistent and plausible (used to reject garbage from a
    /// hypervisor's CPUID or a damaged sysfs).
    pub fn is_plausible(&self) -> bool {
        self.ways >= 1
            && self.line.is_power_of_two()
            && (16..=512).contains(&self.line)
            && self.sets >= 1
            && self
                .ways
                .checked_mul(self.sets)
                .and_then(|x| x.checked_mul(self.line))
                == Some(self.size)
            && self.size >= 4096
    }
}

/// Where the cache geometry was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheSource {
    /// CPUID leaf 4 (Intel) or 0x8000001D (AMD).
    Cpuid,
    /// `/sys/devices/system/cpu/cpu0/cache`.
    Sysfs,
    /// Nothing readable: conservative defaults.
    Default,
}

/// The data caches of one core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caches {
    /// Level-1 data cache.
    pub l1d: CacheLevel,
    /// Level-2 cache.
    pub l2: CacheLevel,
    /// Last-level cache, if there is a third level.
    pub l3: Option<CacheLevel>,
    /// Where the numbers came from.
    pub source: CacheSource,
}

impl Caches {
    /// The defaults used when neither CPUID nor sysfs answers.
    pub const DEFAULT: Caches = Caches {
        l1d: CacheLevel::new(32 << 10, 8, 1),
        l2: CacheLevel::new(512 << 10, 8, 1),
        l3: Some(CacheLevel::new(8 << 20, 16, 8)),
        source: CacheSource::Default,
    };
}

/// Who made this CPU and which one it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuIdentity {
    /// `GenuineIntel`, `AuthenticAMD`, ... (empty when unknown).
    pub vendor: String,
    /// Display family (base + extended, as the vendors' manuals define it).
    pub family: u32,
    /// Display model (base + extended).
    pub model: u32,
    /// Stepping.
    pub stepping: u32,
    /// The brand string (`Intel(R) Xeon(R) Processor`, `AMD EPYC 9R14 ...`).
    pub brand: String,
}

impl CpuIdentity {
    /// One line naming the CPU completely: used as the key of the tuning cache, so results
    /// measured on one CPU are never applied to another.
    pub fn key(&self) -> String {
        format!(
            "{}|{}|family {} model {} stepping {}",
            self.vendor, self.brand, self.family, self.model, self.stepping
        )
    }

    /// Whether this is an AMD CPU.
    pub fn is_amd(&self) -> bool {
        self.vendor == "AuthenticAMD"
    }
}

/// Everything known about the host, detected once.
#[derive(Debug, Clone)]
pub struct Host {
    /// The CPU's identity.
    pub identity: CpuIdentity,
    /// Its data caches.
    pub caches: Caches,
}

impl Host {
    /// The host this process runs on (detected on first use, then cached).
    pub fn get() -> &'static Host {
        static HOST: OnceLock<Host> = OnceLock::new();
        HOST.get_or_init(Host::detect)
    }

    fn detect() -> Host {
        let identity = cpuid::identity().unwrap_or_else(sysfs::identity);
        let caches = cpuid::caches(&identity)
            .or_else(sysfs::caches)
            .unwrap_or(Caches::DEFAULT);
        Host { identity, caches }
    }
}

/// Picks L1d, L2 and L3 out of a list of `(level, is_data_or_unified, geometry)` entries.
pub(crate) fn assemble(levels: &[(u32, CacheLevel)], source: CacheSource) -> Option<Caches> {
    let find = |lv: u32| {
        levels
            .iter()
            .find(|(l, c)| *l == lv && c.is_plausible())
            .map(|(_, c)| *c)
    };
    let (l1d, l2) = (find(1)?, find(2)?);
    if l2.size < l1d.size {
        return None;
    }
    Some(Caches {
        l1d,
        l2,
        l3: find(3).filter(|c| c.size >= l2.size),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_is_self_consistent() {
        let c = CacheLevel::new(48 << 10, 12, 1);
        assert_eq!(c.sets, 64);
        assert_eq!(c.way_bytes(), 4096);
        assert!(c.is_plausible());
        let bad = CacheLevel { size: 1000, ..c };
        assert!(!bad.is_plausible());
    }

    #[test]
    fn detection_gives_plausible_caches() {
        let h = Host::get();
        assert!(h.caches.l1d.is_plausible());
        assert!(h.caches.l2.is_plausible());
        assert!(h.caches.l2.size >= h.caches.l1d.size);
        assert!(!h.identity.key().is_empty());
    }

    #[test]
    fn assemble_rejects_garbage() {
        let l1 = CacheLevel::new(32 << 10, 8, 1);
        let l2 = CacheLevel::new(1 << 20, 8, 1);
        assert!(assemble(&[(1, l1), (2, l2)], CacheSource::Sysfs).is_some());
        assert!(assemble(&[(1, l1)], CacheSource::Sysfs).is_none());
        // L2 smaller than L1: reject rather than trust.
        assert!(assemble(&[(1, l2), (2, l1)], CacheSource::Sysfs).is_none());
    }
}
