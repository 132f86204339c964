//! The one typed vocabulary of format, dtype and pruning-pattern names: parsed ([`FromStr`]),
//! printed ([`Display`]) and serialised (serde, as the same strings) here and nowhere else.
//! Plans, plan caches, recipes, the CLI and the planner all go through these types, so a name
//! printed by one reads back in every other.
//!
//! Names: formats `dense`, `csr16`, `csr32`, `bsrRxC` (e.g. `bsr4x1`), `nmNofM` (e.g.
//! `nm2of4`); dtypes `f32`, `i8` (`int8` also reads); patterns `N:M` (e.g. `2:4`: at most N
//! kept in every M consecutive inputs) and `RxC` (e.g. `4x1`: blocks of R output rows by C
//! inputs). Ranges are the consumers' to check (a recipe allows M up to 16, one-shot pruning 64).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{Dtype, FormatKind};

/// A name that is not in the vocabulary.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} '{name}': use {expected}")]
pub struct VocabError {
    pub what: &'static str,
    pub name: String,
    pub expected: &'static str,
}

fn two(s: &str, sep: &str) -> Option<(usize, usize)> {
    let (a, b) = s.split_once(sep)?;
    Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
}

impl fmt::Display for FormatKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl FromStr for FormatKind {
    type Err = VocabError;
    fn from_str(s: &str) -> Result<Self, VocabError> {
        let t = s.trim();
        let kind = match t {
            "dense" => Some(FormatKind::Dense),
            "csr16" => Some(FormatKind::Csr16),
            "csr32" => Some(FormatKind::Csr32),
            _ => t
                .strip_prefix("bsr")
                .and_then(|d| two(d, "x"))
                .map(|(br, bc)| FormatKind::Bsr { br, bc })
                .or_else(|| {
                    let (n, m) = two(t.strip_prefix("nm")?, "of")?;
                    Some(FormatKind::Nm { n, m })
                }),
        };
        kind.ok_or_else(|| VocabError {
            what: "format",
            name: s.to_string(),
            expected: "dense, csr16, csr32, bsrRxC (e.g. bsr4x1) or nmNofM (e.g. nm2of4)",
        })
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Dtype {
    type Err = VocabError;
    fn from_str(s: &str) -> Result<Self, VocabError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "f32" => Ok(Dtype::F32),
            "i8" | "int8" => Ok(Dtype::I8),
            _ => Err(VocabError {
                what: "dtype",
                name: s.to_string(),
                expected: "f32 or i8",
            }),
        }
    }
}

/// A structured pruning pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Pattern {
    /// At most `n` kept in every `m` consecutive inputs of a row (`N:M`).
    Nm { n: usize, m: usize },
    /// Whole blocks of `rows` output rows by `cols` inputs (`RxC`).
    Block { rows: usize, cols: usize },
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Nm { n, m } => write!(f, "{n}:{m}"),
            Pattern::Block { rows, cols } => write!(f, "{rows}x{cols}"),
        }
    }
}

impl FromStr for Pattern {
    type Err = VocabError;
    fn from_str(s: &str) -> Result<Self, VocabError> {
        let t = s.trim();
        two(t, ":")
            .map(|(n, m)| Pattern::Nm { n, m })
            .or_else(|| two(t, "x").map(|(rows, cols)| Pattern::Block { rows, cols }))
            .ok_or_else(|| VocabError {
                what: "pattern",
                name: s.to_string(),
                expected: "N:M (e.g. 2:4) or RxC blocks (e.g. 4x1)",
            })
    }
}

/// Serde through the names above, so files keep the strings they always held.
macro_rules! serde_by_name {
    ($t:ty) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

serde_by_name!(FormatKind);
serde_by_name!(Dtype);
serde_by_name!(Pattern);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_reads_back() {
        for k in [
            FormatKind::Dense,
            FormatKind::Csr16,
            FormatKind::Csr32,
            FormatKind::Bsr { br: 4, bc: 1 },
            FormatKind::Bsr { br: 1, bc: 8 },
            FormatKind::Nm { n: 2, m: 4 },
        ] {
            assert_eq!(k.to_string().parse::<FormatKind>(), Ok(k));
        }
        for d in [Dtype::F32, Dtype::I8] {
            assert_eq!(d.to_string().parse::<Dtype>(), Ok(d));
        }
        assert_eq!("int8".parse::<Dtype>(), Ok(Dtype::I8));
        for p in [
            Pattern::Nm { n: 2, m: 4 },
            Pattern::Block { rows: 4, cols: 1 },
        ] {
            assert_eq!(p.to_string().parse::<Pattern>(), Ok(p));
        }
        assert_eq!(" 2 : 4 ".parse::<Pattern>(), Ok(Pattern::Nm { n: 2, m: 4 }));
    }

    #[test]
    fn unknown_names_say_what_would_do() {
        let e = "bsr4".parse::<FormatKind>().unwrap_err().to_string();
        assert!(
            e.contains("unknown format 'bsr4'") && e.contains("bsrRxC"),
            "{e}"
        );
        assert!("f16".parse::<Dtype>().is_err());
        assert!("2-4".parse::<Pattern>().is_err());
        assert!("nm2of".parse::<FormatKind>().is_err());
    }
}
