//! Flush subnormal floats to zero during training.
//!
//! Masked training drives many values toward zero (optimiser state of pruned weights decays
//! geometrically), and x86 arithmetic on subnormal numbers is one to two orders of magnitude
//! slower than on normal ones. Measured here on LeNet-300-100 pruned to 95 %: epoch time grew
//! from 1.7 s to 5.4 s over 20 epochs without this, and stayed at 1.7 s with it, with identical
//! accuracy. PyTorch offers the same switch (`torch.set_flush_denormal`).
//!
//! The setting is per thread (the MXCSR register), so it is applied to the calling thread and to
//! every thread of rayon's global pool, which burn's flex backend computes on.

/// Sets flush-to-zero and denormals-are-zero on this thread and on rayon's global pool.
/// A no-op on targets other than x86-64.
pub fn flush_denormals() {
    set_this_thread();
    rayon::broadcast(|_| set_this_thread());
}

#[cfg(target_arch = "x86_64")]
fn set_this_thread() {
    // FTZ is bit 15, DAZ bit 6 of MXCSR.
    const FTZ_DAZ: u32 = (1 << 15) | (1 << 6);
    let mut csr: u32 = 0;
    // SAFETY: `stmxcsr` stores the 32-bit MXCSR into the local `csr`, and `ldmxcsr` loads a
    // value that differs from the current one only in the FTZ and DAZ bits, which every x86-64
    // CPU supports (SSE2 baseline); no other state is touched.
    unsafe {
        std::arch::asm!("stmxcsr [{}]", in(reg) &mut csr, options(nostack, preserves_flags));
        csr |= FTZ_DAZ;
        std::arch::asm!("ldmxcsr [{}]", in(reg) &csr, options(nostack, preserves_flags));
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn set_this_thread() {}

#[cfg(test)]
mod tests {
    #[test]
    fn subnormals_flush_after_the_switch() {
        super::flush_denormals();
        let tiny = std::hint::black_box(f32::MIN_POSITIVE);
        let half = std::hint::black_box(0.5f32);
        let product = tiny * half; // subnormal without FTZ
        if cfg!(target_arch = "x86_64") {
            assert_eq!(product, 0.0);
        }
    }
}
