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
    #[error("{path}: {extra} bytes (or more) after the data the header describes")]
    TrailingBytes { path: PathBuf, extra: usize },
    #[error("{path}: header promises {bytes} bytes of data, over the limit of {limit}")]
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

/// Reads an IDX file, gunzipping it when it starts with the gzip magic, with the payload limit
/// [`MAX_IDX_BYTES`].
pub fn read_idx(path: &Path) -> Result<IdxArray, IdxError> {
    read_idx_limited(path, MAX_IDX_BYTES)
}

/// Reads an IDX file as a stream: the header is read and checked first (magic, element type,
/// dimensions, payload size against `limit`), and only then is the payload read or inflated,
/// never more than the header promises plus a little to detect trailing bytes. A gzip bomb with
/// a bad header is refused after a few bytes; one with a valid header stops at its promise.
pub fn read_idx_limited(path: &Path, limit: usize) -> Result<IdxArray, IdxError> {
    let io = |source| IdxError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.is_file() {
        return Err(io(std::io::Error::other(
            "not a regular file (a FIFO, device or socket): give a file",
        )));
    }
    let file = std::io::BufReader::new(std::fs::File::open(path).map_err(io)?);
    decode(path, file, limit)
}

/// Decodes IDX bytes already in memory (raw or gzip), as [`read_idx_limited`] does a file.
/// `path` only names the source in errors.
pub fn parse_idx_limited(path: &Path, bytes: &[u8], limit: usize) -> Result<IdxArray, IdxError> {
    decode(path, bytes, limit)
}

/// Streams IDX from `r`, gunzipping it when it starts with the gzip magic.
fn decode(path: &Path, mut r: impl std::io::BufRead, limit: usize) -> Result<IdxArray, IdxError> {
    let head = r.fill_buf().map_err(|source| IdxError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let reader: Box<dyn Read + '_> = if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::GzDecoder::new(r))
    } else {
        Box::new(r)
    };
    read_stream(path, reader, limit)
}

/// Fills `buf` from `r` as far as the stream goes; returns how many bytes arrived.
fn fill(r: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// How far past the promised payload a read looks to count trailing bytes.
const TRAILING_PROBE: usize = 4096;

fn read_stream(path: &Path, mut r: Box<dyn Read + '_>, limit: usize) -> Result<IdxArray, IdxError> {
    let p = || path.to_path_buf();
    let io = |source| IdxError::Io { path: p(), source };
    let mut magic = [0u8; 4];
    let got = fill(&mut *r, &mut magic).map_err(io)?;
    if got < 4 || magic[0] != 0 || magic[1] != 0 {
        return Err(IdxError::BadMagic { path: p(), magic });
    }
    if magic[2] != 0x08 {
        return Err(IdxError::UnsupportedType {
            path: p(),
            code: magic[2],
        });
    }
    let ndim = magic[3] as usize;
    let mut dims_raw = vec![0u8; 4 * ndim];
    let got = fill(&mut *r, &mut dims_raw).map_err(io)?;
    if got < dims_raw.len() {
        return Err(IdxError::Truncated {
            path: p(),
            expected: 4 + dims_raw.len(),
            actual: 4 + got,
        });
    }
    let dims: Vec<usize> = dims_raw
        .chunks_exact(4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .collect();
    let total = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    let total = match total {
        Some(t) if t <= limit => t,
        _ => {
            return Err(IdxError::TooLarge {
                path: p(),
                bytes: total.unwrap_or(usize::MAX),
                limit,
            })
        }
    };
    let mut data = Vec::new();
    r.take((total + TRAILING_PROBE) as u64)
        .read_to_end(&mut data)
        .map_err(io)?;
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
    Ok(IdxArray { dims, data })
}

/// Parses IDX bytes already in memory. `path` only names the source in errors.
pub fn parse_idx(path: &Path, bytes: &[u8]) -> Result<IdxArray, IdxError> {
    decode(path, bytes, MAX_IDX_BYTES)
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
    fn a_gzip_bomb_is_refused_by_its_header_before_inflating() {
        use std::io::Write;
        let dir = std::env::temp_dir().join(format!("lopper-idx-bomb-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // 256 MiB of zeros after a header promising 16 bytes: refused after reading the
        // header and a few KiB, never inflated whole.
        let path = dir.join("bomb.idx.gz");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(&idx(&[16], &[])).unwrap();
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..256 {
            enc.write_all(&zeros).unwrap();
        }
        std::fs::write(&path, enc.finish().unwrap()).unwrap();
        let e = read_idx(&path).unwrap_err();
        assert!(matches!(e, IdxError::TrailingBytes { .. }), "{e}");
        // A header promising more than the limit: refused from the header alone.
        let path2 = dir.join("big.idx.gz");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(&idx(&[1 << 20, 784], &[])).unwrap();
        std::fs::write(&path2, enc.finish().unwrap()).unwrap();
        assert!(matches!(
            read_idx_limited(&path2, 1 << 20),
            Err(IdxError::TooLarge { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_file_names_the_path() {
        let e = read_idx(Path::new("/nonexistent/x.idx")).unwrap_err();
        assert!(e.to_string().starts_with("/nonexistent/x.idx: "));
    }
}
