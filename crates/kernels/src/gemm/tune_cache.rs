//! The tuning cache: the microkernel and blocks `tessera tune` measured fastest on this CPU,
//! one line per ISA, keyed by the CPU's full identity.
//!
//! ```text
//! tessera-tune 1
//! cpu GenuineIntel|Intel(R) Xeon(R) Processor|family 6 model 143 stepping 8
//! isa avx512 kernel avx512_12x32 kc 256 mc 1788 deep-kc 512
//! isa avx2 kernel avx2_6x16 kc 256 mc 288 deep-kc 256
//! fnv1a 8c3f0a1e22d9b4c7
//! ```
//!
//! `deep-kc` is the depth block of products whose C outgrows L2 (`Tuning::blocking_for`); a
//! line without it (as written before it was measured) means the same as `kc`.
//!
//! The file lives at `$TESSERA_TUNE_CACHE`, else `$XDG_CACHE_HOME/tessera/tune.txt`, else
//! `$HOME/.cache/tessera/tune.txt`; `TESSERA_TUNE=off` ignores it. It is trusted only whole:
//! a wrong header, a foreign CPU, an unknown kernel, unusable blocks or a checksum mismatch
//! (truncation, editing) make the loader warn once on stderr and fall back to the analytical
//! blocking. `tessera tune` writes it atomically (the models crate's `io::atomic`: a temporary
//! in the same directory, then a rename), so a reader never sees half a file.

use super::table::{find, Tuning};
use crate::host::Host;
use crate::isa::Isa;
use std::path::PathBuf;

const MAGIC: &str = "tessera-tune 1";

/// FNV-1a, 64 bits: detects truncation and accidental edits (not an adversary).
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Where the cache is read and written, or `None` when disabled or no location is known.
pub fn path() -> Option<PathBuf> {
    if std::env::var("TESSERA_TUNE").is_ok_and(|v| v == "off" || v == "0") {
        return None;
    }
    if let Some(p) = std::env::var_os("TESSERA_TUNE_CACHE") {
        return Some(PathBuf::from(p));
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("tessera").join("tune.txt"))
}

/// The cache's text for `cpu_key` and the winners (one per ISA).
pub fn format(cpu_key: &str, winners: &[Tuning]) -> String {
    let mut body = format!("{MAGIC}\ncpu {cpu_key}\n");
    for t in winners {
        body.push_str(&format!(
            "isa {} kernel {} kc {} mc {} deep-kc {}\n",
            t.kernel.isa.name(),
            t.kernel.name,
            t.blocking.kc,
            t.blocking.mc,
            t.deep_kc
        ));
    }
    let sum = fnv1a(&body);
    body.push_str(&format!("fnv1a {sum:016x}\n"));
    body
}

/// Parses a cache file written for `cpu_key`; every entry, or an error saying why none.
pub fn parse(text: &str, cpu_key: &str) -> Result<Vec<Tuning>, String> {
    let (body, sum_line) = match text.trim_end_matches('\n').rsplit_once('\n') {
        Some((body, last)) => (format!("{body}\n"), last),
        None => return Err("truncated (no checksum line)".into()),
    };
    let sum = sum_line
        .strip_prefix("fnv1a ")
        .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        .ok_or("truncated or damaged (no checksum line)")?;
    if sum != fnv1a(&body) {
        return Err("checksum mismatch (truncated or edited)".into());
    }
    let mut lines = body.lines();
    if lines.next() != Some(MAGIC) {
        return Err(format!("not a tuning cache (first line is not `{MAGIC}`)"));
    }
    match lines.next().and_then(|l| l.strip_prefix("cpu ")) {
        Some(k) if k == cpu_key => {}
        Some(k) => return Err(format!("written for another CPU ({k})")),
        None => return Err("no cpu line".into()),
    }
    let mut out = Vec::new();
    for line in lines {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (isa, name, kc, mc, deep_kc) = match f[..] {
            ["isa", isa, "kernel", name, "kc", kc, "mc", mc] => (isa, name, kc, mc, kc),
            ["isa", isa, "kernel", name, "kc", kc, "mc", mc, "deep-kc", deep] => {
                (isa, name, kc, mc, deep)
            }
            _ => return Err(format!("unreadable line `{line}`")),
        };
        let isa = Isa::parse(isa).map_err(|e| e.to_string())?;
        let kernel = find(name)
            .filter(|k| k.isa == isa)
            .ok_or_else(|| format!("unknown kernel `{name}` for {isa}"))?;
        let (kc, mc) = (kc.parse().ok(), mc.parse().ok());
        let t = kc
            .zip(mc)
            .and_then(|(kc, mc)| Tuning::with_blocks(kernel, kc, mc))
            .zip(deep_kc.parse().ok())
            .and_then(|(t, deep)| t.with_deep_kc(deep))
            .ok_or_else(|| format!("unusable blocks in `{line}`"))?;
        out.push(t);
    }
    Ok(out)
}

/// The cached tuning for `isa` on this CPU with the file's path, or `None` (after one warning
/// on stderr if the file exists but cannot be trusted).
pub(crate) fn load_for(isa: Isa) -> Option<(Tuning, String)> {
    let path = path()?;
    let text = std::fs::read_to_string(&path).ok()?;
    match parse(&text, &Host::get().identity.key()) {
        Ok(entries) => entries
            .into_iter()
            .find(|t| t.kernel.isa == isa)
            .map(|t| (t, path.display().to_string())),
        Err(why) => {
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| {
                eprintln!(
                    "tessera: ignoring the tuning cache {}: {why}; using the analytical \
                     blocking (run `tessera tune` to rebuild it)",
                    path.display()
                )
            });
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gemm::table::candidates;

    fn sample() -> (String, Vec<Tuning>) {
        let k = &candidates(Isa::Scalar)[0];
        let t = Tuning::with_blocks(k, 128, 64)
            .and_then(|t| t.with_deep_kc(256))
            .unwrap();
        (
            "Vendor|Brand|family 1 model 2 stepping 3".to_string(),
            vec![t],
        )
    }

    #[test]
    fn round_trips() {
        let (key, w) = sample();
        let text = format(&key, &w);
        assert_eq!(parse(&text, &key).unwrap(), w);
    }

    /// A line without `deep-kc` (a cache written before it was measured) keeps working, with
    /// the deep depth block equal to `kc`.
    #[test]
    fn lines_without_a_deep_kc_mean_kc() {
        let key = "Vendor|Brand|family 1 model 2 stepping 3";
        let body = format!("{MAGIC}\ncpu {key}\nisa scalar kernel scalar_4x4 kc 128 mc 64\n");
        let text = format!("{body}fnv1a {:016x}\n", fnv1a(&body));
        let t = parse(&text, key).unwrap();
        assert_eq!(
            (t[0].blocking.kc, t[0].blocking.mc, t[0].deep_kc),
            (128, 64, 128)
        );
    }

    #[test]
    fn corrupt_truncated_or_foreign_files_are_rejected() {
        let (key, w) = sample();
        let text = format(&key, &w);
        // Truncated anywhere.
        for cut in 0..text.len() - 1 {
            assert!(parse(&text[..cut], &key).is_err(), "cut at {cut}");
        }
        // One byte changed.
        let edited = text.replacen("kc 128", "kc 129", 1);
        assert!(parse(&edited, &key).unwrap_err().contains("checksum"));
        // Another CPU.
        assert!(parse(&text, "Other|CPU|family 1 model 2 stepping 4")
            .unwrap_err()
            .contains("another CPU"));
        // Garbage.
        assert!(parse("\u{0}\u{1}binary", &key).is_err());
        // A well-formed file naming an unknown kernel or unusable blocks.
        for bad in [
            format!("{MAGIC}\ncpu {key}\nisa scalar kernel nope_1x1 kc 128 mc 64\n"),
            format!("{MAGIC}\ncpu {key}\nisa scalar kernel scalar_4x4 kc 0 mc 64\n"),
            format!("{MAGIC}\ncpu {key}\nisa scalar kernel scalar_4x4 kc 128 mc 63\n"),
            format!("{MAGIC}\ncpu {key}\nisa avx2 kernel scalar_4x4 kc 128 mc 64\n"),
            format!("{MAGIC}\ncpu {key}\nisa scalar kernel scalar_4x4 kc 128 mc 64 deep-kc 64\n"),
            format!("{MAGIC}\ncpu {key}\nisa scalar kernel scalar_4x4 kc 128 mc 64 deep-kc x\n"),
            format!("{MAGIC}\ncpu {key}\nisa scalar kernel scalar_4x4 kc 128 mc 64 deep-kc\n"),
        ] {
            let sum = fnv1a(&bad);
            let text = format!("{bad}fnv1a {sum:016x}\n");
            assert!(parse(&text, &key).is_err(), "{bad}");
        }
    }
}
