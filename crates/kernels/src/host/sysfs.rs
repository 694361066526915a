//! CPU identity and cache geometry from Linux sysfs and `/proc/cpuinfo`, the fallback when
//! CPUID does not describe the caches (non-x86 hosts, some hypervisors).
//!
//! Layout: `/sys/devices/system/cpu/cpu0/cache/indexN/{level,type,size,ways_of_associativity,
//! coherency_line_size,number_of_sets,shared_cpu_list}` (Linux `Documentation/ABI/testing/
//! sysfs-devices-system-cpu`).

use super::{assemble, CacheLevel, CacheSource, Caches, CpuIdentity};
use std::path::Path;

fn read(dir: &Path, name: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(name))
        .ok()
        .map(|s| s.trim().to_string())
}

/// Parses sysfs sizes such as `48K`, `2048K`, `32M`.
pub(crate) fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let (digits, mult) = match s.as_bytes().last()? {
        b'K' => (&s[..s.len() - 1], 1usize << 10),
        b'M' => (&s[..s.len() - 1], 1 << 20),
        b'G' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    digits.parse::<usize>().ok()?.checked_mul(mult)
}

/// Counts the CPUs in a list such as `0-3,8,10-11`.
pub(crate) fn count_cpu_list(s: &str) -> Option<usize> {
    let mut n = 0usize;
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        n += match part.split_once('-') {
            Some((lo, hi)) => hi.parse::<usize>().ok()?.checked_sub(lo.parse().ok()?)? + 1,
            None => {
                part.parse::<usize>().ok()?;
                1
            }
        };
    }
    Some(n)
}

/// The caches of cpu0 from sysfs.
pub(super) fn caches() -> Option<Caches> {
    let root = Path::new("/sys/devices/system/cpu/cpu0/cache");
    let mut levels = Vec::new();
    for i in 0..16 {
        let dir = root.join(format!("index{i}"));
        let Some(kind) = read(&dir, "type") else {
            break;
        };
        if kind == "Instruction" {
            continue;
        }
        let level = read(&dir, "level").and_then(|s| s.parse().ok());
        let size = read(&dir, "size").and_then(|s| parse_size(&s));
        let ways = read(&dir, "ways_of_associativity").and_then(|s| s.parse().ok());
        let line = read(&dir, "coherency_line_size").and_then(|s| s.parse().ok());
        let sets = read(&dir, "number_of_sets").and_then(|s| s.parse().ok());
        let shared_by = read(&dir, "shared_cpu_list")
            .and_then(|s| count_cpu_list(&s))
            .unwrap_or(1);
        if let (Some(level), Some(size), Some(ways), Some(line), Some(sets)) =
            (level, size, ways, line, sets)
        {
            levels.push((
                level,
                CacheLevel {
                    size,
                    ways,
                    line,
                    sets,
                    shared_by,
                },
            ));
        }
    }
    assemble(&levels, CacheSource::Sysfs)
}

/// The identity from `/proc/cpuinfo` (first processor), or an empty one.
pub(super) fn identity() -> CpuIdentity {
    let text = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find(|l| l.split(':').next().map(str::trim) == Some(name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default()
    };
    let num = |name: &str| field(name).parse().unwrap_or(0);
    CpuIdentity {
        vendor: field("vendor_id"),
        family: num("cpu family"),
        model: num("model"),
        stepping: num("stepping"),
        brand: field("model name"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_cpu_lists_parse() {
        assert_eq!(parse_size("48K"), Some(48 << 10));
        assert_eq!(parse_size("32M"), Some(32 << 20));
        assert_eq!(parse_size("x"), None);
        assert_eq!(count_cpu_list("0-3,8,10-11"), Some(7));
        assert_eq!(count_cpu_list("0"), Some(1));
        assert_eq!(count_cpu_list("3-1"), None);
    }
}
