//! IDX files (the MNIST / Fashion-MNIST container), raw or gzip-compressed.
//!
//! Layout: a 4-byte magic `0x00 0x00 TYPE NDIM`, then `NDIM` big-endian u32 dimensions, then the
//! data in row-major order. lopper reads unsigned bytes (`TYPE = 0x08`), which is what image and
//! label files use. Every size is checked before anything is allocated: a file whose header
//! promises more data than it holds, or more than [`MAX_IDX_BYTES`], is refused.

use std::io::Read;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// Largest decoded payload accepted (Fashion-MNIST's training images are 47 MB).
pub const MAX_IDX_BYTES: usize = 1 << 30;

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum IdxError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not an IDX file (magic bytes {magic:02x?}, expected 00 00 08 NDIM)")]
    BadMagic { path: PathBuf, magic: [u8; 4] },
    #[error("{path}: unsupported IDX element type 0x{code:02x} (only unsigned bytes, 0x08)")]
    UnsupportedType { path: PathBuf, code: u8 },
    #[error("{path}: expected {expected} dimensions, header has {actual}")]
    WrongRank {
        path: PathBuf,
        expected: usize,
        actual: usize,
    },
    #[error("{path}: header promises {expected} bytes of data but the file holds {actual}")]
    Truncated {
        path: PathBuf,
        expected: usize,
        actual: usize,
    },
    #[error("{path}: {extra} bytes after the data the header describes")]
    TrailingBytes { path: PathBuf, extra: usize },
    #[error("{path}: header promises {bytes} bytes, over the limit of {limit}")]
    TooLarge {
        path: PathBuf,
        bytes: usize,
        limit: usize,
    },
    #[error("{path}: label {label} at index {index} is outside 0..{classes}")]
    LabelOutOfRange {
        path: PathBuf,
        index: usize,
        label: u8,
        classes: usize,
    },
    #[error("{images} holds {n_images} images but {labels} holds {n_labels} labels")]
    CountMismatch {
        images: PathBuf,
        n_images: usize,
        labels: PathBuf,
        n_labels: usize,
    },
}

/// A decoded IDX array of bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

/// Reads an IDX file, gunzipping it when it starts with the gzip magic.
pub fn read_idx(path: &Path) -> Result<IdxArray, IdxError> {
    let io = |source| IdxError::Io {
        path: path.to_path_buf(),
        source,
    };
    let raw = std::fs::read(path).map_err(io)?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        // Bound the decompressed size: a hostile gzip can expand without limit.
        flate2::read::GzDecoder::new(raw.as_slice())
            .take(MAX_IDX_BYTES as u64 + 64)
            .read_to_end(&mut out)
            .map_err(io)?;
        out
    } else {
        raw
    };
    parse_idx(path, &bytes)
}

/// Parses IDX bytes already in memory. `path` only names the source in errors.
pub fn parse_idx(path: &Path, bytes: &[u8]) -> Result<IdxArray, IdxError> {
    let p = || path.to_path_buf();
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        let mut magic = [0u8; 4];
        magic[..bytes.len().min(4)].copy_from_slice(&bytes[..bytes.len().min(4)]);
        return Err(IdxError::BadMagic { path: p(), magic });
    }
    if bytes[2] != 0x08 {
        return Err(IdxError::UnsupportedType {
            path: p(),
            code: bytes[2],
        });
    }
    let ndim = bytes[3] as usize;
    let header = 4 + 4 * ndim;
    if bytes.len() < header {
        return Err(IdxError::Truncated {
            path: p(),
            expected: header,
            actual: bytes.len(),
        });
    }
    let dims: Vec<usize> = (0..ndim)
        .map(|i| {
            u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().expect("4 bytes")) as usize
        })
        .collect();
    let total = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&t| t <= MAX_IDX_BYTES)
        .ok_or(IdxError::TooLarge {
            path: p(),
            bytes: usize::MAX,
            limit: MAX_IDX_BYTES,
        })?;
    let data = &bytes[header..];
    if data.len() < total {
        return Err(IdxError::Truncated {
            path: p(),
            expected: total,
            actual: data.len(),
        });
    }
    if data.len() > total {
        return Err(IdxError::TrailingBytes {
            path: p(),
            extra: data.len() - total,
        });
    }
    Ok(IdxArray {
        dims,
        data: data.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut v = vec![0, 0, 8, dims.len() as u8];
        for d in dims {
            v.extend_from_slice(&d.to_be_bytes());
        }
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn parses_a_small_array() {
        let a = parse_idx(Path::new("t"), &idx(&[2, 3], &[1, 2, 3, 4, 5, 6])).unwrap();
        assert_eq!(a.dims, vec![2, 3]);
        assert_eq!(a.data, vec![1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn rejects_bad_magic() {
        let e = parse_idx(Path::new("f.idx"), b"PK\x03\x04rest").unwrap_err();
        assert!(matches!(e, IdxError::BadMagic { .. }));
        assert!(e.to_string().starts_with("f.idx: "));
    }

    #[test]
    fn rejects_unsupported_type() {
        let mut b = idx(&[1], &[0, 0, 0, 0]);
        b[2] = 0x0d;
        assert!(matches!(
            parse_idx(Path::new("t"), &b),
            Err(IdxError::UnsupportedType { code: 0x0d, .. })
        ));
    }

    #[test]
    fn rejects_truncated_data() {
        let e = parse_idx(Path::new("t"), &idx(&[10], &[1, 2, 3])).unwrap_err();
        assert!(matches!(
            e,
            IdxError::Truncated {
                expected: 10,
                actual: 3,
                ..
            }
        ));
    }

    #[test]
    fn rejects_truncated_header() {
        let e = parse_idx(Path::new("t"), &[0, 0, 8, 3, 0, 0]).unwrap_err();
        assert!(matches!(e, IdxError::Truncated { .. }));
    }

    #[test]
    fn rejects_trailing_bytes() {
        let e = parse_idx(Path::new("t"), &idx(&[2], &[1, 2, 3])).unwrap_err();
        assert!(matches!(e, IdxError::TrailingBytes { extra: 1, .. }));
    }

    #[test]
    fn rejects_absurd_dimensions_before_allocating() {
        let e = parse_idx(Path::new("t"), &idx(&[u32::MAX, u32::MAX, u32::MAX], &[])).unwrap_err();
        assert!(matches!(e, IdxError::TooLarge { .. }));
    }

    #[test]
    fn reads_gzip() {
        use std::io::Write;
        let dir = std::env::temp_dir().join(format!("lopper-idx-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.idx.gz");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(&idx(&[3], &[7, 8, 9])).unwrap();
        std::fs::write(&path, enc.finish().unwrap()).unwrap();
        assert_eq!(read_idx(&path).unwrap().data, vec![7, 8, 9]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_file_names_the_path() {
        let e = read_idx(Path::new("/nonexistent/x.idx")).unwrap_err();
        assert!(e.to_string().starts_with("/nonexistent/x.idx: "));
    }
}
