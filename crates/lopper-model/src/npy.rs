//! NumPy `.npy` and `.npz` inputs and outputs (`lopper run`, `lopper prune --calib/--eval`),
//! through the `npyz` crate.
//!
//! Invariants: nothing is allocated from a declared shape before the shape is checked against
//! the model's input, so the values read are bounded by the bytes given (which callers bound by
//! `LOPPER_MAX_INPUT_BYTES`); only stored (uncompressed) `.npz` members are read, as zip's
//! deflate support is not built in; every value must be finite.
//!
//! An input array is `[n, ...per-example shape]`, C order, f32 or f64; in an `.npz` it is found
//! under the graph's input name (or is the archive's only array). Outputs are written
//! `[n, ...output shape]` f32, under the graph's output name in an `.npz`.

use std::io::Cursor;
use std::path::Path;

use npyz::WriterBuilder;

use crate::error::ModelError;

fn bad(at: &str, msg: impl std::fmt::Display) -> ModelError {
    ModelError::Input(format!("{at}: {msg}"))
}

/// Whether `path` ends in `.npy` or `.npz`.
pub fn is_numpy(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("npy") || e.eq_ignore_ascii_case("npz"))
}

fn is_npz(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("npz"))
}

/// The examples in `bytes` (the contents of `path`) for an input named `name` of per-example
/// shape `shape`.
pub fn read_input(
    path: &Path,
    bytes: &[u8],
    name: &str,
    shape: &[usize],
) -> Result<Vec<f32>, ModelError> {
    let at = || format!("{}", path.display());
    if is_npz(path) {
        // The zip crate directly, not npyz's archive: that parses each member's header as it
        // opens it, allocating what the header claims.
        let mut z = zip::ZipArchive::new(Cursor::new(bytes))
            .map_err(|e| bad(&at(), format!("not an .npz archive: {e}")))?;
        let names: Vec<String> = z
            .file_names()
            .filter_map(|f| f.strip_suffix(".npy"))
            .map(str::to_string)
            .collect();
        let pick = if names.iter().any(|n| n == name) {
            name.to_string()
        } else if names.len() == 1 {
            names[0].clone()
        } else {
            return Err(bad(
                &at(),
                format!(
                    "has no array named '{name}' (the model's input); it holds {}",
                    crate::limits::clip(&names.join(", "), 400)
                ),
            ));
        };
        let file = z
            .by_name(&format!("{pick}.npy"))
            .map_err(|e| bad(&at(), format!("array '{pick}': {e}")))?;
        // Members are stored, so a member holds at most the archive's bytes: read it whole
        // (bounded by those, whatever size it claims) and parse it as an .npy.
        let mut member = Vec::new();
        std::io::Read::read_to_end(
            &mut std::io::Read::take(file, bytes.len() as u64),
            &mut member,
        )
        .map_err(|e| bad(&at(), format!("array '{pick}': {e}")))?;
        return read_npy(&member, &format!("{} ['{pick}']", at()), shape);
    }
    read_npy(bytes, &at(), shape)
}

/// An `.npy` held in memory. The header length is checked against the bytes first: `npyz`
/// allocates what the file claims (up to 4 GiB for version 2 and 3 headers) before reading it.
fn read_npy(bytes: &[u8], at: &str, shape: &[usize]) -> Result<Vec<f32>, ModelError> {
    if bytes.len() < 10 || !bytes.starts_with(b"\x93NUMPY") {
        return Err(bad(at, "not an .npy file (no \\x93NUMPY magic)"));
    }
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => return Err(bad(at, format!("not an .npy file (format version {v})"))),
    };
    if header_len > bytes.len() - start {
        return Err(bad(
            at,
            format!(
                "truncated: the header claims {header_len} bytes, {} follow",
                bytes.len() - start
            ),
        ));
    }
    // npyz parses the header (a Python dict literal) with a backtracking parser that takes
    // exponential time on nested brackets: 60 of them in a 361-byte file ran for minutes (found
    // by the `npy` fuzz target). A header of the kinds lopper reads (float32/float64, any
    // shape) nests two deep; anything past four is refused before parsing.
    let header = &bytes[start..start + header_len];
    let mut depth = 0usize;
    for &b in header {
        match b {
            b'(' | b'[' | b'{' => {
                depth += 1;
                if depth > MAX_HEADER_NESTING {
                    return Err(bad(
                        at,
                        "the header nests brackets too deep for an .npy header",
                    ));
                }
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    let file = npyz::NpyFile::new(bytes).map_err(|e| bad(at, format!("not an .npy file: {e}")))?;
    decode(file, at, shape)
}

/// Bracket nesting an `.npy` header may have (a float array's header has two levels).
const MAX_HEADER_NESTING: usize = 4;

fn decode<R: std::io::Read>(
    file: npyz::NpyFile<R>,
    at: &str,
    shape: &[usize],
) -> Result<Vec<f32>, ModelError> {
    let dims: Vec<usize> = file.shape().iter().map(|&d| d as usize).collect();
    if file.order() != npyz::Order::C {
        return Err(bad(
            at,
            "Fortran-order arrays are not supported (save with np.ascontiguousarray)",
        ));
    }
    let fits = dims.len() == shape.len() + 1 && dims[1..] == *shape;
    // A single example may leave the batch out.
    let fits_single = dims == shape;
    if !(fits || fits_single) {
        return Err(bad(
            at,
            format!(
                "shape {dims:?} does not fit the model's input [n, {}]",
                shape
                    .iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    let dtype = file.dtype().descr();
    let short = |e: std::io::Error| bad(at, format!("data: {e}"));
    let v: Vec<f32> = match file.try_data::<f32>() {
        Ok(r) => r.collect::<std::io::Result<_>>().map_err(short)?,
        Err(file) => match file.try_data::<f64>() {
            Ok(r) => r
                .map(|x| x.map(|x| x as f32))
                .collect::<std::io::Result<_>>()
                .map_err(short)?,
            Err(_) => return Err(bad(at, format!("dtype {dtype}: give float32 or float64"))),
        },
    };
    if let Some(i) = v.iter().position(|x| !x.is_finite()) {
        return Err(bad(
            at,
            format!("value {i} is {}: inputs must be finite", v[i]),
        ));
    }
    Ok(v)
}

/// Writes `data` of shape `dims` to `path` (`.npy`, or `.npz` under `name`), atomically.
pub fn write_output(
    path: &Path,
    name: &str,
    dims: &[usize],
    data: &[f32],
) -> Result<(), ModelError> {
    let io = |source: std::io::Error| ModelError::Io {
        path: path.to_path_buf(),
        source,
    };
    let shape: Vec<u64> = dims.iter().map(|&d| d as u64).collect();
    let mut npy = Vec::new();
    {
        let mut w = npyz::WriteOptions::new()
            .default_dtype()
            .shape(&shape)
            .writer(&mut npy)
            .begin_nd()
            .map_err(io)?;
        w.extend(data.iter().copied()).map_err(io)?;
        w.finish().map_err(io)?;
    }
    let bytes = if is_npz(path) {
        let mut out = Cursor::new(Vec::new());
        {
            let mut z = zip::ZipWriter::new(&mut out);
            z.start_file(
                npyz::npz::file_name_from_array_name(name),
                zip::write::FileOptions::default()
                    .compression_method(zip::CompressionMethod::Stored),
            )
            .map_err(|e| io(e.into()))?;
            std::io::Write::write_all(&mut z, &npy).map_err(io)?;
            z.finish().map_err(|e| io(e.into()))?;
        }
        out.into_inner()
    } else {
        npy
    };
    crate::file::write_atomic(path, &bytes)
}
