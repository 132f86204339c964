//! Instruction-set selection at run time.
//!
//! A binary built for generic x86-64 still uses AVX2+FMA when the CPU has them: the choice is made
//! once, at run time, with `is_x86_feature_detected!`. The environment variable `LOPPER_ISA`
//! (`scalar`, `avx2`, `avx512` or `auto`) overrides the choice; asking for an ISA the CPU lacks falls back
//! to the best available one, because running an unsupported instruction would be undefined
//! behaviour.

use std::fmt;

/// An instruction set a kernel is written for. Ordered from least to most capable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    /// Portable Rust, no explicit SIMD. Runs everywhere.
    Scalar,
    /// x86-64 AVX2 with FMA3.
    Avx2,
    /// x86-64 AVX-512F (used for batch > 1, where the products are bound by compute).
    Avx512,
}

impl Isa {
    pub const ALL: [Isa; 3] = [Isa::Scalar, Isa::Avx2, Isa::Avx512];

    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        }
    }

    /// Whether this CPU can run kernels written for `self`.
    pub fn available(self) -> bool {
        match self {
            Isa::Scalar => true,
            Isa::Avx2 => avx2_fma_detected(),
            Isa::Avx512 => avx2_fma_detected() && avx512f_detected(),
        }
    }

    /// The best ISA this CPU supports.
    pub fn best_available() -> Isa {
        *Isa::ALL
            .iter()
            .rev()
            .find(|isa| isa.available())
            .unwrap_or(&Isa::Scalar)
    }

    /// The ISA to use: `LOPPER_ISA` if set and available, else the best available. Read once
    /// per process (elementwise functions ask per row, and reading the environment each time
    /// cost more than the work).
    pub fn selected() -> Isa {
        static SELECTED: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
        *SELECTED.get_or_init(|| match std::env::var("LOPPER_ISA") {
            Ok(v) => Isa::from_override(&v),
            Err(_) => Isa::best_available(),
        })
    }

    /// Interprets an override value. Unknown values and unavailable ISAs fall back to the best
    /// available ISA, so a typo can never select an instruction the CPU does not have.
    pub fn from_override(value: &str) -> Isa {
        let wanted = match value.trim().to_ascii_lowercase().as_str() {
            "scalar" | "portable" | "generic" => Some(Isa::Scalar),
            "avx2" => Some(Isa::Avx2),
            "avx512" => Some(Isa::Avx512),
            _ => None,
        };
        match wanted {
            Some(isa) if isa.available() => isa,
            _ => Isa::best_available(),
        }
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(target_arch = "x86_64")]
fn avx2_fma_detected() -> bool {
    std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
}

#[cfg(not(target_arch = "x86_64"))]
fn avx2_fma_detected() -> bool {
    false
}

#[cfg(target_arch = "x86_64")]
fn avx512f_detected() -> bool {
    std::is_x86_feature_detected!("avx512f")
}

#[cfg(not(target_arch = "x86_64"))]
fn avx512f_detected() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn override_scalar_is_honoured() {
        assert_eq!(Isa::from_override("scalar"), Isa::Scalar);
        assert_eq!(Isa::from_override(" SCALAR "), Isa::Scalar);
    }

    #[test]
    fn unknown_override_falls_back_to_best() {
        assert_eq!(Isa::from_override("avx9000"), Isa::best_available());
    }

    #[test]
    fn override_never_selects_unavailable() {
        for name in ["avx2", "avx512"] {
            assert!(Isa::from_override(name).available(), "{name}");
        }
    }

    #[test]
    fn override_caps_at_the_named_isa() {
        if Isa::Avx512.available() {
            assert_eq!(Isa::from_override("avx2"), Isa::Avx2);
        }
    }
}
