//! Inconsistent parts and bad kernel calls give typed errors, never panics.

use lopper_kernels::format::{Bsr, Csr, Dense, NmMatrix, Values, WeightMatrix, MAX_DIM};
use lopper_kernels::registry::by_name;
use lopper_kernels::{FormatError, KernelError};

fn f32s(v: &[f32]) -> Values {
    Values::F32(v.to_vec())
}

#[test]
fn rejects_csr_column_out_of_range() {
    let e = Csr::<u32>::from_parts(1, 3, vec![0, 1], vec![3], f32s(&[1.0])).unwrap_err();
    assert_eq!(
        e,
        FormatError::ColumnOutOfRange {
            row: 0,
            col: 3,
            cols: 3
        }
    );
}

#[test]
fn rejects_csr_unsorted_columns() {
    let e = Csr::<u16>::from_parts(1, 4, vec![0, 2], vec![2, 1], f32s(&[1.0, 2.0])).unwrap_err();
    assert_eq!(
        e,
        FormatError::ColumnsNotSorted {
            row: 0,
            prev: 2,
            col: 1
        }
    );
}

#[test]
fn rejects_csr_duplicate_columns() {
    let e = Csr::<u16>::from_parts(1, 4, vec![0, 2], vec![1, 1], f32s(&[1.0, 2.0])).unwrap_err();
    assert!(matches!(
        e,
        FormatError::ColumnsNotSorted {
            row: 0,
            prev: 1,
            col: 1
        }
    ));
}

#[test]
fn rejects_csr_wrong_value_length() {
    let e = Csr::<u16>::from_parts(1, 4, vec![0, 2], vec![0, 1], f32s(&[1.0])).unwrap_err();
    assert!(matches!(
        e,
        FormatError::LengthMismatch {
            what: "values",
            expected: 2,
            actual: 1
        }
    ));
}

#[test]
fn rejects_csr_wrong_row_ptr_length() {
    let e = Csr::<u16>::from_parts(2, 4, vec![0, 1], vec![0], f32s(&[1.0])).unwrap_err();
    assert!(matches!(
        e,
        FormatError::LengthMismatch {
            what: "row_ptr",
            ..
        }
    ));
}

#[test]
fn rejects_csr_non_monotonic_row_ptr() {
    let e = Csr::<u16>::from_parts(2, 4, vec![0, 2, 1], vec![0, 1], f32s(&[1.0, 2.0])).unwrap_err();
    assert!(matches!(e, FormatError::RowPtrNotMonotonic { row: 1, .. }));
}

#[test]
fn rejects_csr_row_ptr_not_starting_at_zero() {
    let e = Csr::<u16>::from_parts(1, 4, vec![1, 1], vec![], f32s(&[])).unwrap_err();
    assert_eq!(e, FormatError::RowPtrStart { start: 1 });
}

#[test]
fn rejects_csr_row_ptr_end_mismatch() {
    let e = Csr::<u16>::from_parts(1, 4, vec![0, 1], vec![0, 2], f32s(&[1.0, 2.0])).unwrap_err();
    assert_eq!(e, FormatError::RowPtrEnd { end: 1, nnz: 2 });
}

#[test]
fn rejects_csr_u16_for_too_many_columns() {
    let dense = Dense::zeros(1, 70_000).unwrap();
    let e = Csr::<u16>::from_dense_threshold(&dense, 0.0).unwrap_err();
    assert_eq!(
        e,
        FormatError::IndexTooNarrow {
            cols: 70_000,
            bits: 16
        }
    );
    assert!(Csr::<u32>::from_dense_threshold(&dense, 0.0).is_ok());
}

#[test]
fn rejects_absurd_dimensions() {
    let e = Csr::<u32>::from_parts(MAX_DIM + 1, 1, vec![], vec![], f32s(&[])).unwrap_err();
    assert!(matches!(
        e,
        FormatError::DimensionTooLarge { what: "rows", .. }
    ));
    assert!(matches!(
        Dense::zeros(1, MAX_DIM + 1),
        Err(FormatError::DimensionTooLarge { .. })
    ));
}

#[test]
fn rejects_dense_wrong_length() {
    let e = Dense::from_vec(2, 3, vec![0.0; 5]).unwrap_err();
    assert!(matches!(
        e,
        FormatError::LengthMismatch {
            expected: 6,
            actual: 5,
            ..
        }
    ));
}

#[test]
fn rejects_mask_of_wrong_length() {
    let dense = Dense::zeros(2, 2).unwrap();
    let e = Csr::<u16>::from_dense_masked(&dense, &[true; 3]).unwrap_err();
    assert_eq!(
        e,
        FormatError::MaskLength {
            expected: 4,
            actual: 3
        }
    );
}

#[test]
fn rejects_bad_int8_scales() {
    for scale in [f32::NAN, -1.0, f32::INFINITY] {
        let v = Values::I8 {
            q: vec![1],
            scales: vec![scale],
        };
        let e = Csr::<u16>::from_parts(1, 2, vec![0, 1], vec![0], v).unwrap_err();
        assert!(matches!(e, FormatError::BadScale { row: 0, .. }), "{scale}");
    }
    let v = Values::I8 {
        q: vec![1],
        scales: vec![],
    };
    let e = Csr::<u16>::from_parts(1, 2, vec![0, 1], vec![0], v).unwrap_err();
    assert!(matches!(
        e,
        FormatError::LengthMismatch { what: "scales", .. }
    ));
}

#[test]
fn rejects_quantizing_non_finite_weights() {
    let dense = Dense::from_vec(1, 3, vec![1.0, f32::INFINITY, 2.0]).unwrap();
    let csr = Csr::<u16>::from_dense_threshold(&dense, 0.0).unwrap();
    let e = csr.quantize_i8().unwrap_err();
    assert!(matches!(
        e,
        FormatError::NonFiniteWeight { row: 0, col: 1, .. }
    ));
}

#[test]
fn rejects_bsr_bad_block_shape() {
    let dense = Dense::zeros(4, 4).unwrap();
    assert_eq!(
        Bsr::from_dense_threshold(&dense, 0, 8, 0.0).unwrap_err(),
        FormatError::BadBlockShape { br: 0, bc: 8 }
    );
    assert!(matches!(
        Bsr::from_dense_threshold(&dense, 65, 1, 0.0),
        Err(FormatError::BadBlockShape { .. })
    ));
}

#[test]
fn rejects_bsr_block_column_out_of_range() {
    let e = Bsr::from_parts(2, 8, 2, 4, vec![0, 1], vec![2], f32s(&[0.0; 8])).unwrap_err();
    assert!(matches!(e, FormatError::ColumnOutOfRange { .. }));
}

#[test]
fn rejects_bsr_unsorted_blocks() {
    let e = Bsr::from_parts(1, 8, 1, 4, vec![0, 2], vec![1, 0], f32s(&[1.0; 8])).unwrap_err();
    assert!(matches!(e, FormatError::ColumnsNotSorted { .. }));
}

#[test]
fn rejects_bsr_nonzero_padding() {
    // 1x8 block over a 6-column matrix: lanes 6 and 7 lie outside and must be zero.
    let mut v = vec![1.0f32; 8];
    v[7] = 2.0;
    let e = Bsr::from_parts(1, 6, 1, 8, vec![0, 1], vec![0], f32s(&v)).unwrap_err();
    assert_eq!(
        e,
        FormatError::BlockPaddingNotZero {
            block_row: 0,
            col: 6
        }
    );
}

#[test]
fn rejects_bsr_wrong_value_length() {
    let e = Bsr::from_parts(4, 4, 4, 1, vec![0, 1], vec![0], f32s(&[1.0; 3])).unwrap_err();
    assert!(matches!(
        e,
        FormatError::LengthMismatch {
            what: "values",
            expected: 4,
            actual: 3
        }
    ));
}

#[test]
fn rejects_nm_overfull_group() {
    let dense = Dense::from_vec(1, 4, vec![1.0, 2.0, 3.0, 0.0]).unwrap();
    let e = NmMatrix::from_dense_where(&dense, 2, 4, |_, _, v| v != 0.0).unwrap_err();
    assert_eq!(
        e,
        FormatError::NmGroupOverfull {
            row: 0,
            group: 0,
            count: 3,
            n: 2
        }
    );
}

#[test]
fn rejects_nm_bad_in_group_index() {
    let e = NmMatrix::from_parts(1, 4, 2, 4, vec![1.0, 2.0], vec![1, 4]).unwrap_err();
    assert_eq!(
        e,
        FormatError::NmBadIndex {
            row: 0,
            group: 0,
            m: 4
        }
    );
    let e = NmMatrix::from_parts(1, 4, 2, 4, vec![1.0, 2.0], vec![2, 2]).unwrap_err();
    assert_eq!(
        e,
        FormatError::NmBadIndex {
            row: 0,
            group: 0,
            m: 4
        }
    );
}

#[test]
fn rejects_nm_bad_pattern_and_columns() {
    assert_eq!(
        NmMatrix::from_parts(1, 4, 3, 2, vec![], vec![]).unwrap_err(),
        FormatError::BadNmPattern { n: 3, m: 2 }
    );
    assert_eq!(
        NmMatrix::from_parts(1, 6, 2, 4, vec![], vec![]).unwrap_err(),
        FormatError::NmColsNotMultiple { cols: 6, m: 4 }
    );
}

#[test]
fn rejects_int8_for_formats_without_it() {
    let dense = Dense::zeros(2, 4).unwrap();
    let w = WeightMatrix::Dense(dense);
    assert!(matches!(
        w.quantize_i8(),
        Err(FormatError::NoInt8Variant { .. })
    ));
}

fn small_csr() -> WeightMatrix {
    let dense = Dense::from_vec(2, 3, vec![1.0, 0.0, 2.0, 0.0, 3.0, 0.0]).unwrap();
    WeightMatrix::Csr16(Csr::from_dense_threshold(&dense, 0.0).unwrap())
}

#[test]
fn rejects_kernel_call_with_wrong_x_length() {
    let k = by_name("f32_spmm_csr16_scalar").unwrap();
    let mut y = [0.0; 2];
    let e = k.run(&small_csr(), &[1.0; 2], 1, &mut y, 0..2).unwrap_err();
    assert!(matches!(
        e,
        KernelError::ShapeMismatch {
            expected: 3,
            actual: 2,
            ..
        }
    ));
}

#[test]
fn rejects_kernel_call_with_wrong_y_length() {
    let k = by_name("f32_spmm_csr16_scalar").unwrap();
    let mut y = [0.0; 3];
    let e = k.run(&small_csr(), &[1.0; 3], 1, &mut y, 0..2).unwrap_err();
    assert!(matches!(
        e,
        KernelError::ShapeMismatch {
            expected: 2,
            actual: 3,
            ..
        }
    ));
}

#[test]
fn rejects_kernel_call_with_bad_row_range() {
    let k = by_name("f32_spmm_csr16_scalar").unwrap();
    let mut y = [0.0; 3];
    let e = k.run(&small_csr(), &[1.0; 3], 1, &mut y, 0..3).unwrap_err();
    assert!(matches!(e, KernelError::BadRowRange { .. }));
    let dense = Dense::zeros(8, 4).unwrap();
    let bsr = WeightMatrix::Bsr(Bsr::from_dense_threshold(&dense, 4, 1, 0.0).unwrap());
    let k = by_name("f32_spmm_bsr_scalar").unwrap();
    let mut y = [0.0; 6];
    let e = k.run(&bsr, &[1.0; 4], 1, &mut y, 2..8).unwrap_err();
    assert!(matches!(e, KernelError::BadRowRange { granularity: 4, .. }));
}

#[test]
fn rejects_kernel_for_other_format_or_dtype() {
    let k = by_name("f32_spmm_csr32_scalar").unwrap();
    let mut y = [0.0; 2];
    let e = k.run(&small_csr(), &[1.0; 3], 1, &mut y, 0..2).unwrap_err();
    assert!(matches!(
        e,
        KernelError::Unsupported {
            reason: "format differs",
            ..
        }
    ));
    let k = by_name("i8_spmm_csr16_scalar").unwrap();
    let e = k.run(&small_csr(), &[1.0; 3], 1, &mut y, 0..2).unwrap_err();
    assert!(matches!(
        e,
        KernelError::Unsupported {
            reason: "dtype differs",
            ..
        }
    ));
}

#[test]
fn rejects_spmv_kernel_with_batch_above_one() {
    let Some(k) = by_name("f32_spmv_csr16_avx2") else {
        return;
    };
    let mut y = [0.0; 4];
    let e = k.run(&small_csr(), &[1.0; 6], 2, &mut y, 0..2).unwrap_err();
    assert!(
        matches!(
            e,
            KernelError::Unsupported {
                reason: "spmv kernels need batch 1",
                ..
            }
        ) || matches!(e, KernelError::IsaUnavailable { .. })
    );
}

#[test]
fn encode_decode_round_trips() {
    use lopper_kernels::synth;
    use lopper_kernels::{Dtype, FormatKind};
    let mut rng = synth::rng(5);
    let dense = synth::random_dense(13, 24, &mut rng);
    let mask = synth::random_mask(13, 24, 0.5, synth::Pattern::Nm { n: 2, m: 4 }, &mut rng);
    let mut want = dense.clone();
    want.apply_mask(&mask).unwrap();
    let kinds = [
        FormatKind::Dense,
        FormatKind::Csr16,
        FormatKind::Csr32,
        FormatKind::Bsr { br: 1, bc: 8 },
        FormatKind::Bsr { br: 4, bc: 1 },
        FormatKind::Bsr { br: 3, bc: 5 },
        FormatKind::Nm { n: 2, m: 4 },
    ];
    for kind in kinds {
        let w = WeightMatrix::encode(&dense, &mask, kind, Dtype::F32).unwrap();
        assert_eq!(w.to_dense(), want, "{kind:?}");
        w.validate().unwrap();
        if !matches!(kind, FormatKind::Dense | FormatKind::Nm { .. }) {
            let q = WeightMatrix::encode(&dense, &mask, kind, Dtype::I8).unwrap();
            let got = q.to_dense();
            for (a, b) in got.data().iter().zip(want.data()) {
                assert!((a - b).abs() <= 1.0 / 254.0 + 1e-6, "{kind:?}: {a} vs {b}");
            }
            assert!(q.storage_bytes() < w.storage_bytes(), "{kind:?}");
        }
    }
}
