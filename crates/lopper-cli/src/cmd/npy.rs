//! NumPy `.npy` and `.npz` inputs and outputs for `lopper run`, through the `npyz` crate.
//!
//! An input array is `[n, ...per-example shape]`, C order, f32 or f64; in an `.npz` it is found
//! under the graph's input name (or is the archive's only array). Outputs are written
//! `[n, ...output shape]` f32, under the graph's output name in an `.npz`.

use std::io::Cursor;
use std::path::Path;

use anyhow::{bail, Context};
use npyz::WriterBuilder;

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
) -> anyhow::Result<Vec<f32>> {
    let at = || format!("{}", path.display());
    if is_npz(path) {
        let mut z = npyz::npz::NpzArchive::new(Cursor::new(bytes))
            .with_context(|| format!("{}: not an .npz archive", at()))?;
        let names: Vec<String> = z.array_names().map(str::to_string).collect();
        let pick = if names.iter().any(|n| n == name) {
            name.to_string()
        } else if names.len() == 1 {
            names[0].clone()
        } else {
            bail!(
                "{}: has no array named '{name}' (the model's input); it holds {}",
                at(),
                names.join(", ")
            );
        };
        let file = z
            .by_name(&pick)
            .with_context(|| format!("{}: array '{pick}'", at()))?
            .with_context(|| format!("{}: array '{pick}' vanished", at()))?;
        return decode(file, &format!("{} ['{pick}']", at()), shape);
    }
    let file = npyz::NpyFile::new(bytes).with_context(|| format!("{}: not an .npy file", at()))?;
    decode(file, &at(), shape)
}

fn decode<R: std::io::Read>(
    file: npyz::NpyFile<R>,
    at: &str,
    shape: &[usize],
) -> anyhow::Result<Vec<f32>> {
    let dims: Vec<usize> = file.shape().iter().map(|&d| d as usize).collect();
    if file.order() != npyz::Order::C {
        bail!("{at}: Fortran-order arrays are not supported (save with np.ascontiguousarray)");
    }
    let fits = dims.len() == shape.len() + 1 && dims[1..] == *shape;
    // A single example may leave the batch out.
    let fits_single = dims == shape;
    if !(fits || fits_single) {
        bail!(
            "{at}: shape {dims:?} does not fit the model's input [n, {}]",
            shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let dtype = file.dtype().descr();
    let v: Vec<f32> = match file.try_data::<f32>() {
        Ok(r) => r.collect::<std::io::Result<_>>()?,
        Err(file) => match file.try_data::<f64>() {
            Ok(r) => r
                .map(|x| x.map(|x| x as f32))
                .collect::<std::io::Result<_>>()?,
            Err(_) => bail!("{at}: dtype {dtype}: give float32 or float64"),
        },
    };
    if let Some(i) = v.iter().position(|x| !x.is_finite()) {
        bail!("{at}: value {i} is {}: inputs must be finite", v[i]);
    }
    Ok(v)
}

/// Writes `data` of shape `dims` to `path` (`.npy`, or `.npz` under `name`), atomically.
pub fn write_output(path: &Path, name: &str, dims: &[usize], data: &[f32]) -> anyhow::Result<()> {
    let shape: Vec<u64> = dims.iter().map(|&d| d as u64).collect();
    let mut npy = Vec::new();
    {
        let mut w = npyz::WriteOptions::new()
            .default_dtype()
            .shape(&shape)
            .writer(&mut npy)
            .begin_nd()?;
        w.extend(data.iter().copied())?;
        w.finish()?;
    }
    let bytes = if is_npz(path) {
        let mut out = Cursor::new(Vec::new());
        {
            let mut z = zip::ZipWriter::new(&mut out);
            z.start_file(
                npyz::npz::file_name_from_array_name(name),
                zip::write::FileOptions::default()
                    .compression_method(zip::CompressionMethod::Stored),
            )?;
            std::io::Write::write_all(&mut z, &npy)?;
            z.finish()?;
        }
        out.into_inner()
    } else {
        npy
    };
    lopper_model::file::write_atomic(path, &bytes)?;
    Ok(())
}
