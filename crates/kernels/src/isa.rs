//! CPU instruction-set detection, cached once, with an environment override for tests.
//!
//! Every kernel family has one implementation per [`Isa`]. [`Isa::current`] returns the path in
//! use: the best the CPU supports, or the one named by `TESSERA_ISA=avx512|avx2|portable|scalar`.
//! Forcing a path the CPU lacks is an error, never a silent fallback. Tests call the `*_with`
//! entry points of each kernel with every [`Isa::available`] value to cover each path the host has.
//!
//! Dispatch, one idiom for every kernel family (after XNNPACK's per-family configs): the
//! family declares one `static` table of entry points per ISA (a struct of `unsafe fn`
//! pointers to its `#[target_feature]` wrappers) and a [`Tables`] over them; `Tables::get`
//! returns the table of a checked ISA and `Tables::current` the table of [`Isa::current`],
//! chosen once and cached in a `OnceLock`.

use crate::error::KernelError;
use std::sync::OnceLock;

/// One implementation path of the kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Isa {
    /// x86-64 AVX-512F (`std::arch` intrinsics behind `#[target_feature]`).
    Avx512,
    /// x86-64 AVX2 + FMA (`std::arch` intrinsics behind `#[target_feature]`).
    Avx2,
    /// Portable SIMD on the `wide` crate (instructions chosen at compile time).
    Portable,
    /// Plain scalar Rust: the reference and test oracle.
    Scalar,
}

impl Isa {
    /// All paths, best first.
    pub const ALL: [Isa; 4] = [Isa::Avx512, Isa::Avx2, Isa::Portable, Isa::Scalar];

    /// The name used by `TESSERA_ISA` and in benchmark output.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Avx512 => "avx512",
            Isa::Avx2 => "avx2",
            Isa::Portable => "portable",
            Isa::Scalar => "scalar",
        }
    }

    /// Parses a name as accepted by `TESSERA_ISA`.
    pub fn parse(name: &str) -> Result<Isa, KernelError> {
        match name.trim().to_ascii_lowercase().as_str() {
            "avx512" | "avx512f" => Ok(Isa::Avx512),
            "avx2" | "avx2fma" | "fma" => Ok(Isa::Avx2),
            "portable" | "wide" => Ok(Isa::Portable),
            "scalar" | "reference" => Ok(Isa::Scalar),
            other => Err(KernelError::Isa(format!(
                "unknown instruction set {other:?}; expected one of avx512, avx2, portable, scalar"
            ))),
        }
    }

    /// Whether this CPU can run the path.
    pub fn is_supported(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            // The AVX-512 kernels also use 256-bit EVEX forms (the 8-wide GEMM twins).
            Isa::Avx512 => {
                std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                    && std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(not(target_arch = "x86_64"))]
            Isa::Avx512 | Isa::Avx2 => false,
            Isa::Portable | Isa::Scalar => true,
        }
    }

    /// Every path this CPU supports, best first.
    pub fn available() -> Vec<Isa> {
        Isa::ALL.into_iter().filter(|i| i.is_supported()).collect()
    }

    /// The best path this CPU supports.
    pub fn best() -> Isa {
        Isa::ALL
            .into_iter()
            .find(|i| i.is_supported())
            .unwrap_or(Isa::Scalar)
    }

    /// Returns `Ok(self)` if the CPU supports it, else an error naming the path.
    pub fn check(self) -> Result<Isa, KernelError> {
        if self.is_supported() {
            Ok(self)
        } else {
            Err(KernelError::Isa(format!(
                "{} was requested but this CPU does not support it (available: {})",
                self.name(),
                Isa::available()
                    .iter()
                    .map(|i| i.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            )))
        }
    }

    /// `isa` checked against this CPU, or the path in use ([`Isa::current`]) for `None`.
    pub fn resolve(isa: Option<Isa>) -> Result<Isa, KernelError> {
        match isa {
            Some(i) => i.check(),
            None => Isa::current(),
        }
    }

    /// The path in use, detected once and cached: `TESSERA_ISA` if set (an error if the CPU
    /// lacks it or the name is unknown), else [`Isa::best`].
    pub fn current() -> Result<Isa, KernelError> {
        static CHOICE: OnceLock<Result<Isa, KernelError>> = OnceLock::new();
        CHOICE
            .get_or_init(|| match std::env::var("TESSERA_ISA") {
                Ok(name) if !name.trim().is_empty() => {
                    Isa::parse(&name).and_then(Isa::check).map_err(|e| match e {
                        // Keep one "instruction set:" prefix (the variant's Display adds it).
                        KernelError::Isa(msg) => {
                            KernelError::Isa(format!("TESSERA_ISA={name}: {msg}"))
                        }
                        other => other,
                    })
                }
                _ => Ok(Isa::best()),
            })
            .clone()
    }
}

/// The per-ISA tables of one kernel family, with the choice for [`Isa::current`] cached.
pub(crate) struct Tables<T: 'static> {
    /// The tables of AVX-512, AVX2 and portable (`None`: not built for this target).
    vector: [Option<&'static T>; 3],
    scalar: &'static T,
    current: OnceLock<Result<&'static T, KernelError>>,
}

impl<T: Sync + 'static> Tables<T> {
    /// Tables for AVX-512, AVX2, portable and scalar (the x86 ones `None` on other targets).
    pub(crate) const fn new(
        avx512: Option<&'static T>,
        avx2: Option<&'static T>,
        portable: &'static T,
        scalar: &'static T,
    ) -> Self {
        Tables {
            vector: [avx512, avx2, Some(portable)],
            scalar,
            current: OnceLock::new(),
        }
    }

    /// The table of `isa`, an error if the CPU lacks it.
    pub(crate) fn get(&self, isa: Isa) -> Result<&'static T, KernelError> {
        let isa = isa.check()?;
        let t = match isa {
            Isa::Avx512 => self.vector[0],
            Isa::Avx2 => self.vector[1],
            Isa::Portable => self.vector[2],
            Isa::Scalar => None,
        };
        // A supported ISA always has a table on its target (`is_supported` is false for the
        // x86 paths elsewhere).
        Ok(t.unwrap_or(self.scalar))
    }

    /// The table of [`Isa::current`] (honouring `TESSERA_ISA`), chosen once.
    pub(crate) fn current(&self) -> Result<&'static T, KernelError> {
        self.current
            .get_or_init(|| Isa::current().and_then(|isa| self.get(isa)))
            .clone()
    }
}

impl std::fmt::Display for Isa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for isa in Isa::ALL {
            assert_eq!(Isa::parse(isa.name()).unwrap(), isa);
        }
        assert!(Isa::parse("sse9").is_err());
    }

    #[test]
    fn scalar_and_portable_always_available() {
        let avail = Isa::available();
        assert!(avail.contains(&Isa::Scalar));
        assert!(avail.contains(&Isa::Portable));
        assert_eq!(Isa::best(), avail[0]);
    }

    #[test]
    fn unsupported_path_is_an_error() {
        for isa in Isa::ALL {
            assert_eq!(isa.check().is_ok(), isa.is_supported());
        }
    }
}
