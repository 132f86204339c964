//! Bounded reads: every byte lopper reads from a user's file passes through a reader that stops
//! at a limit while reading, never trusting the size the filesystem reports (a FIFO, `/dev/zero`
//! or a file growing under us report a size that is not what a read returns).
//!
//! Limits (each overridable through its environment variable, documented in `docs/format.md`):
//! - model files (`.lop`, `model.safetensors`): `LOPPER_MAX_FILE_BYTES`, default 1 GiB;
//! - inputs (`run --input`): `LOPPER_MAX_INPUT_BYTES`, default 64 MiB of decoded data;
//! - the plan cache: `LOPPER_MAX_CACHE_BYTES`, default 16 MiB;
//! - text files (configs, tokenizers, sentences): `LOPPER_MAX_TEXT_BYTES`, default 64 MiB.

use std::io::Read;
use std::path::Path;

/// A read that stopped at its limit, or failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("larger than the limit of {limit} bytes (set {var} to raise it)")]
    TooLarge { limit: u64, var: &'static str },
    #[error("not a regular file (a FIFO, device or socket): give a file")]
    NotAFile,
}

impl ReadError {
    /// This error as the model crate's error, naming `path`.
    pub fn in_file(self, path: &Path) -> crate::ModelError {
        use crate::ModelError;
        match self {
            ReadError::Io(source) => ModelError::Io {
                path: path.to_path_buf(),
                source,
            },
            ReadError::TooLarge { limit, var } => {
                ModelError::FileTooLarge { limit, var }.in_file(path)
            }
            e @ ReadError::NotAFile => ModelError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::other(e.to_string()),
            },
        }
    }
}

/// The value of the environment variable `var` when it is a number, else `default`.
pub fn limit_from_env(var: &str, default: u64) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

pub const DEFAULT_MAX_INPUT_BYTES: u64 = 64 << 20;
pub const DEFAULT_MAX_CACHE_BYTES: u64 = 16 << 20;
pub const DEFAULT_MAX_TEXT_BYTES: u64 = 64 << 20;

/// The input limit (`LOPPER_MAX_INPUT_BYTES`).
pub fn max_input_bytes() -> u64 {
    limit_from_env("LOPPER_MAX_INPUT_BYTES", DEFAULT_MAX_INPUT_BYTES)
}

/// The plan-cache limit (`LOPPER_MAX_CACHE_BYTES`).
pub fn max_cache_bytes() -> u64 {
    limit_from_env("LOPPER_MAX_CACHE_BYTES", DEFAULT_MAX_CACHE_BYTES)
}

/// The text-file limit (`LOPPER_MAX_TEXT_BYTES`).
pub fn max_text_bytes() -> u64 {
    limit_from_env("LOPPER_MAX_TEXT_BYTES", DEFAULT_MAX_TEXT_BYTES)
}

/// `text` cut to at most `max` characters, naming how many were cut: errors that quote their
/// input stay one readable line.
pub fn clip(text: &str, max: usize) -> String {
    let n = text.chars().count();
    if n <= max {
        return text.to_string();
    }
    let kept: String = text.chars().take(max).collect();
    format!("{kept}… ({} more characters)", n - max)
}

/// All of `r` when it holds at most `limit` bytes; `None` as soon as one more arrives (nothing
/// past `limit + 1` bytes is read or held).
pub fn read_at_most(r: impl Read, limit: u64) -> std::io::Result<Option<Vec<u8>>> {
    let mut out = Vec::new();
    r.take(limit.saturating_add(1)).read_to_end(&mut out)?;
    Ok((out.len() as u64 <= limit).then_some(out))
}

/// Reads all of `r`, stopping with [`ReadError::TooLarge`] (which names the variable `var` that
/// raises the limit) as soon as more than `limit` bytes arrive.
pub fn read_to_limit(r: impl Read, limit: u64, var: &'static str) -> Result<Vec<u8>, ReadError> {
    read_at_most(r, limit)?.ok_or(ReadError::TooLarge { limit, var })
}

/// Reads the regular file `path` (FIFOs, devices and sockets are refused before opening, since
/// opening a FIFO blocks until a writer comes), stopping at `limit`.
pub fn read_file(path: &Path, limit: u64, var: &'static str) -> Result<Vec<u8>, ReadError> {
    if !std::fs::metadata(path)?.is_file() {
        return Err(ReadError::NotAFile);
    }
    read_to_limit(std::fs::File::open(path)?, limit, var)
}

/// Reads `path` as UTF-8 text under the text limit.
pub fn read_text(path: &Path) -> Result<String, ReadError> {
    let bytes = read_file(path, max_text_bytes(), "LOPPER_MAX_TEXT_BYTES")?;
    String::from_utf8(bytes).map_err(|e| {
        ReadError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("not UTF-8 text (byte {})", e.utf8_error().valid_up_to()),
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endless_stream_stops_at_the_limit() {
        let zeros = std::io::repeat(0);
        match read_to_limit(zeros, 1000, "X") {
            Err(ReadError::TooLarge { limit: 1000, .. }) => {}
            other => panic!("{other:?}"),
        }
        assert_eq!(read_to_limit(&[1u8, 2, 3][..], 3, "X").unwrap(), [1, 2, 3]);
    }

    #[cfg(unix)]
    #[test]
    fn devices_are_refused_before_reading() {
        assert!(matches!(
            read_file(Path::new("/dev/zero"), 1 << 30, "X"),
            Err(ReadError::NotAFile)
        ));
    }
}
