//! MNIST-layout datasets (Fashion-MNIST, MNIST): four IDX files, 28x28 grey images, 10 classes.
//!
//! The folder is the first of: an explicit `--data DIR`, the `LOPPER_DATA` environment variable,
//! `/usr/share/datasets/fashion-mnist` (Debian package `dataset-fashion-mnist`). A folder the user
//! named (flag or variable) that lacks the data is an error, not a silent fall-back to the next.
//! Images become f32 `[n, 784]` row-major, standardised with the mean and standard deviation of
//! the training images (so MNIST and Fashion-MNIST both work unchanged).

use std::path::{Path, PathBuf};

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use thiserror::Error;

use super::idx::{read_idx, IdxArray, IdxError};

pub const DEFAULT_DIR: &str = "/usr/share/datasets/fashion-mnist";
pub const CLASSES: usize = 10;
pub const SIDE: usize = 28;
pub const PIXELS: usize = SIDE * SIDE;

/// Fashion-MNIST class names, in label order.
pub const FASHION_LABELS: [&str; CLASSES] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum DataError {
    #[error(
        "no MNIST-layout dataset found (looked in: {searched}). Install Fashion-MNIST with \
         `apt-get install -y dataset-fashion-mnist` (it goes to {DEFAULT_DIR}), or pass --data DIR / \
         set LOPPER_DATA to a folder holding train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], \
         t10k-images-idx3-ubyte[.gz] and t10k-labels-idx1-ubyte[.gz]"
    )]
    NotFound { searched: String },
    #[error("{dir}: missing {file}[.gz]")]
    MissingFile { dir: PathBuf, file: &'static str },
    #[error(transparent)]
    Idx(#[from] IdxError),
    #[error("{path}: expected images of shape [n, 28, 28], found {dims:?}")]
    BadImageShape { path: PathBuf, dims: Vec<usize> },
}

/// One split: standardised images `[n, 784]` and labels.
#[derive(Debug, Clone)]
pub struct Split {
    pub images: Vec<f32>,
    pub labels: Vec<u8>,
}

impl Split {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The first `n` examples (all if `n >= len`).
    pub fn take(&self, n: usize) -> Split {
        let n = n.min(self.len());
        Split {
            images: self.images[..n * PIXELS].to_vec(),
            labels: self.labels[..n].to_vec(),
        }
    }

    /// Gathers the examples at `idx` into contiguous buffers (images `[len, 784]`).
    pub fn gather(&self, idx: &[usize]) -> (Vec<f32>, Vec<u8>) {
        let mut images = Vec::with_capacity(idx.len() * PIXELS);
        let mut labels = Vec::with_capacity(idx.len());
        for &i in idx {
            images.extend_from_slice(&self.images[i * PIXELS..(i + 1) * PIXELS]);
            labels.push(self.labels[i]);
        }
        (images, labels)
    }
}

/// Training and test splits of one dataset folder.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub dir: PathBuf,
    pub train: Split,
    pub test: Split,
    /// Mean and standard deviation of the training pixels in [0, 1], used to standardise.
    pub mean: f32,
    pub std: f32,
}

/// Finds the dataset folder (see the module docs).
pub fn locate(explicit: Option<&Path>) -> Result<PathBuf, DataError> {
    let env = std::env::var_os("LOPPER_DATA").map(PathBuf::from);
    locate_in(explicit, env.as_deref(), Path::new(DEFAULT_DIR))
}

fn locate_in(
    explicit: Option<&Path>,
    env: Option<&Path>,
    default: &Path,
) -> Result<PathBuf, DataError> {
    // The first folder given wins; only the default is reached when nothing was named.
    let dir = explicit.or(env).unwrap_or(default);
    if find_file(dir, "train-images-idx3-ubyte").is_some() {
        return Ok(dir.to_path_buf());
    }
    Err(DataError::NotFound {
        searched: dir.display().to_string(),
    })
}

fn find_file(dir: &Path, stem: &str) -> Option<PathBuf> {
    [stem.to_string(), format!("{stem}.gz")]
        .into_iter()
        .map(|name| dir.join(name))
        .find(|p| p.is_file())
}

fn read_named(dir: &Path, stem: &'static str) -> Result<(PathBuf, IdxArray), DataError> {
    let path = find_file(dir, stem).ok_or_else(|| DataError::MissingFile {
        dir: dir.to_path_buf(),
        file: stem,
    })?;
    let arr = read_idx(&path)?;
    Ok((path, arr))
}

fn read_split(
    dir: &Path,
    images: &'static str,
    labels: &'static str,
) -> Result<(Vec<u8>, Vec<u8>), DataError> {
    let (ipath, img) = read_named(dir, images)?;
    let (lpath, lab) = read_named(dir, labels)?;
    if img.dims.len() != 3 || img.dims[1] != SIDE || img.dims[2] != SIDE {
        return Err(DataError::BadImageShape {
            path: ipath,
            dims: img.dims,
        });
    }
    if lab.dims.len() != 1 {
        return Err(IdxError::WrongRank {
            path: lpath,
            expected: 1,
            actual: lab.dims.len(),
        }
        .into());
    }
    if img.dims[0] != lab.dims[0] {
        return Err(IdxError::CountMismatch {
            images: ipath,
            n_images: img.dims[0],
            labels: lpath,
            n_labels: lab.dims[0],
        }
        .into());
    }
    if let Some((index, &label)) = lab
        .data
        .iter()
        .enumerate()
        .find(|(_, &l)| l as usize >= CLASSES)
    {
        return Err(IdxError::LabelOutOfRange {
            path: lpath,
            index,
            label,
            classes: CLASSES,
        }
        .into());
    }
    Ok((img.data, lab.data))
}

/// Loads and standardises both splits of the dataset in `dir`.
pub fn load(dir: &Path) -> Result<Dataset, DataError> {
    let (train_img, train_lab) =
        read_split(dir, "train-images-idx3-ubyte", "train-labels-idx1-ubyte")?;
    let (test_img, test_lab) = read_split(dir, "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")?;
    let n = train_img.len().max(1) as f64;
    let mean = train_img.iter().map(|&p| p as f64 / 255.0).sum::<f64>() / n;
    let var = train_img
        .iter()
        .map(|&p| (p as f64 / 255.0 - mean).powi(2))
        .sum::<f64>()
        / n;
    let (mean, std) = (mean as f32, (var.sqrt() as f32).max(1e-6));
    let norm = |px: &[u8]| {
        px.iter()
            .map(|&p| (p as f32 / 255.0 - mean) / std)
            .collect::<Vec<f32>>()
    };
    Ok(Dataset {
        dir: dir.to_path_buf(),
        train: Split {
            images: norm(&train_img),
            labels: train_lab,
        },
        test: Split {
            images: norm(&test_img),
            labels: test_lab,
        },
        mean,
        std,
    })
}

/// The test split of the dataset in `dir` (raw 8-bit pixels `p`), preprocessed as a model file
/// says: `(p · scale − mean) / std`. Evaluation uses the model's own preprocessing, never the
/// statistics of whatever training split lies in the folder.
pub fn load_test_with(dir: &Path, scale: f32, mean: f32, std: f32) -> Result<Split, DataError> {
    let (img, labels) = read_split(dir, "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")?;
    Ok(Split {
        images: img
            .iter()
            .map(|&p| (p as f32 * scale - mean) / std)
            .collect(),
        labels,
    })
}

/// A seeded order of example indices for one epoch, cut into batches on demand.
pub fn epoch_order(len: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    let mut rng =
        ChaCha8Rng::seed_from_u64(seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    order.shuffle(&mut rng);
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_order_is_a_seeded_permutation() {
        let a = epoch_order(100, 7, 0);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        assert_eq!(a, epoch_order(100, 7, 0));
        assert_ne!(a, epoch_order(100, 7, 1));
        assert_ne!(a, epoch_order(100, 8, 0));
    }

    #[test]
    fn missing_dataset_says_how_to_get_it() {
        let e = locate_in(
            Some(Path::new("/nonexistent/a")),
            Some(Path::new("/nonexistent/b")),
            Path::new("/nonexistent/c"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("apt-get install -y dataset-fashion-mnist"),
            "{e}"
        );
        // The named folder is the one reported; the others are not silently tried.
        assert!(
            e.contains("/nonexistent/a") && !e.contains("/nonexistent/c"),
            "{e}"
        );
        let e = locate_in(
            None,
            Some(Path::new("/nonexistent/b")),
            Path::new("/nonexistent/c"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("/nonexistent/b") && !e.contains("/nonexistent/c"),
            "{e}"
        );
        let e = locate_in(None, None, Path::new("/nonexistent/c"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/c"), "{e}");
    }

    #[test]
    fn explicit_folder_wins() {
        let dir = std::env::temp_dir().join(format!("lopper-locate-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("train-images-idx3-ubyte.gz"), b"").unwrap();
        assert_eq!(
            locate_in(Some(&dir), None, Path::new("/nonexistent")).unwrap(),
            dir
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
