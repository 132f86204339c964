//! Activation buffers aligned to 64 bytes.
//!
//! The runtime's activations are `[features, n]` with the batch innermost, and at a sub-batch
//! of 16 every pixel's batch vector is exactly one 64-byte cache line, but only when the buffer
//! starts on a line. `vec![0.0; len]` starts wherever the allocator puts it (16-byte aligned
//! here), so from one process to the next a 16-float load either reads one line or straddles
//! two, and LeNet-5 at batch 64 ran 635 µs in some processes and 730–850 µs in others.

use std::ops::{Deref, DerefMut};

/// Floats per 64-byte line.
const LINE: usize = 16;

/// `len` zeroed floats whose first one sits on a 64-byte boundary.
#[derive(Debug, Default)]
pub(crate) struct AlignedBuf {
    /// Backing store with room to slide the start to a line boundary; its heap block does not
    /// move when the `AlignedBuf` moves, so `off` stays valid.
    v: Vec<f32>,
    off: usize,
    len: usize,
}

impl AlignedBuf {
    pub(crate) fn zeroed(len: usize) -> Self {
        let v = vec![0.0f32; len + LINE];
        let misalign = (v.as_ptr() as usize / std::mem::size_of::<f32>()) % LINE;
        let off = (LINE - misalign) % LINE;
        Self { v, off, len }
    }
}

impl Deref for AlignedBuf {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.v[self.off..self.off + self.len]
    }
}

impl DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.v[self.off..self.off + self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_on_a_line_and_survives_moves() {
        for len in [0, 1, 15, 16, 17, 1000] {
            let b = AlignedBuf::zeroed(len);
            assert_eq!(b.len(), len);
            assert!(b.iter().all(|&x| x == 0.0));
            // Moving the struct (here onto the heap) keeps the start on its line.
            let moved = Box::new(b);
            assert_eq!(moved.as_ptr() as usize % 64, 0, "len {len}");
            assert_eq!(moved.len(), len);
        }
        assert!(AlignedBuf::default().is_empty());
    }
}
