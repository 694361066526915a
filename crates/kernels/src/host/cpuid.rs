//! CPU identity and cache geometry from the CPUID instruction.
//!
//! Intel SDM vol. 2A, "CPUID—CPU Identification": leaf 0 (vendor), leaf 1 (family, model,
//! stepping), leaves 0x80000002..4 (brand string), leaf 4 (deterministic cache parameters).
//! AMD64 APM vol. 3, appendix E: leaf 0x8000001D has the same layout as Intel's leaf 4 and is
//! present when leaf 0x80000001 ECX bit 22 (TopologyExtensions) is set.

use super::{assemble, CacheLevel, CacheSource, Caches, CpuIdentity};

#[cfg(target_arch = "x86_64")]
#[allow(unused_unsafe)]
fn cpuid(leaf: u32, sub: u32) -> [u32; 4] {
    // SAFETY: CPUID exists on every x86-64 CPU; it only reads processor information.
    let r = unsafe { std::arch::x86_64::__cpuid_count(leaf, sub) };
    [r.eax, r.ebx, r.ecx, r.edx]
}

/// The CPU's identity, or `None` off x86-64.
#[cfg(target_arch = "x86_64")]
pub(super) fn identity() -> Option<CpuIdentity> {
    let [max_leaf, b, c, d] = cpuid(0, 0);
    let vendor: Vec<u8> = [b, d, c].iter().flat_map(|r| r.to_le_bytes()).collect();
    let vendor = String::from_utf8_lossy(&vendor)
        .trim_matches('\0')
        .to_string();
    let (family, model, stepping) = if max_leaf >= 1 {
        let a = cpuid(1, 0)[0];
        let base_family = (a >> 8) & 0xF;
        let base_model = (a >> 4) & 0xF;
        let family = if base_family == 0xF {
            base_family + ((a >> 20) & 0xFF)
        } else {
            base_family
        };
        let model = if base_family == 0x6 || base_family == 0xF {
            base_model | (((a >> 16) & 0xF) << 4)
        } else {
            base_model
        };
        (family, model, a & 0xF)
    } else {
        (0, 0, 0)
    };
    let max_ext = cpuid(0x8000_0000, 0)[0];
    let brand = if max_ext >= 0x8000_0004 {
        let bytes: Vec<u8> = (0x8000_0002..=0x8000_0004u32)
            .flat_map(|leaf| cpuid(leaf, 0))
            .flat_map(|r| r.to_le_bytes())
            .collect();
        String::from_utf8_lossy(&bytes)
            .trim_matches(char::from(0))
            .trim()
            .to_string()
    } else {
        String::new()
    };
    Some(CpuIdentity {
        vendor,
        family,
        model,
        stepping,
        brand,
    })
}

#[cfg(not(target_arch = "x86_64"))]
pub(super) fn identity() -> Option<CpuIdentity> {
    None
}

/// Decodes one subleaf of leaf 4 / 0x8000001D: `Some(Some((level, geometry)))` for a data or
/// unified cache, `Some(None)` for an instruction cache, `None` past the last cache.
pub(crate) fn decode_cache_subleaf(regs: [u32; 4]) -> Option<Option<(u32, CacheLevel)>> {
    let [a, b, c, _] = regs;
    let kind = a & 0x1F;
    if kind == 0 {
        return None; // no more caches
    }
    if kind == 2 {
        return Some(None); // instruction cache
    }
    let level = (a >> 5) & 0x7;
    let line = (b & 0xFFF) as usize + 1;
    let partitions = ((b >> 12) & 0x3FF) as usize + 1;
    let ways = ((b >> 22) & 0x3FF) as usize + 1;
    let sets = c as usize + 1;
    let shared_by = ((a >> 14) & 0xFFF) as usize + 1;
    let fully_associative = (a >> 9) & 1 == 1;
    let size = ways * partitions * line * sets;
    // A fully associative cache reports one set: model it as `ways` ways of one line each.
    let (ways, sets) = if fully_associative {
        (size / line, 1)
    } else {
        (ways * partitions, sets)
    };
    Some(Some((
        level,
        CacheLevel {
            size,
            ways,
            line,
            sets,
            shared_by,
        },
    )))
}

/// The data caches from CPUID, or `None` when the CPU does not describe them (or describes
/// something implausible).
#[cfg(target_arch = "x86_64")]
pub(super) fn caches(id: &CpuIdentity) -> Option<Caches> {
    let leaf = if id.is_amd() || id.vendor == "HygonGenuine" {
        let max_ext = cpuid(0x8000_0000, 0)[0];
        let topo_ext = max_ext >= 0x8000_0001 && (cpuid(0x8000_0001, 0)[2] >> 22) & 1 == 1;
        if !topo_ext || max_ext < 0x8000_001D {
            return None;
        }
        0x8000_001D
    } else {
        if cpuid(0, 0)[0] < 4 {
            return None;
        }
        4
    };
    let mut levels = Vec::new();
    for sub in 0..16 {
        match decode_cache_subleaf(cpuid(leaf, sub)) {
            None => break,
            Some(None) => {}
            Some(Some(entry)) => levels.push(entry),
        }
    }
    assemble(&levels, CacheSource::Cpuid)
}

#[cfg(not(target_arch = "x86_64"))]
pub(super) fn caches(_id: &CpuIdentity) -> Option<Caches> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Leaf 4 subleaf 0 of an Ice Lake-SP core: 48 KiB, 12-way, 64 sets, 64-byte lines, L1d.
    #[test]
    fn decodes_an_l1d_subleaf() {
        let a = 1 | (1 << 5) | (1 << 8) | (1 << 14);
        let b = 63 | (11 << 22);
        let c = 63;
        let (level, g) = decode_cache_subleaf([a, b, c, 0]).unwrap().unwrap();
        assert_eq!(level, 1);
        assert_eq!(g.size, 48 << 10);
        assert_eq!((g.ways, g.sets, g.line, g.shared_by), (12, 64, 64, 2));
    }

    #[test]
    fn instruction_caches_are_skipped_and_null_ends() {
        assert_eq!(decode_cache_subleaf([2 | (1 << 5), 63, 63, 0]), Some(None));
        assert_eq!(decode_cache_subleaf([0, 0, 0, 0]), None);
    }
}
