//! Truncated, corrupted and hostile `.lop` files, and wrong inputs: each gives a clear error
//! (naming the file when read from disk) and never panics or over-allocates.

mod common;

use common::*;
use lopper_kernels::{Dtype, FormatKind};
use lopper_model::runtime::plan::{make_plan, PlanMode};
use lopper_model::{Executor, Model};
use proptest::prelude::*;
use serde_json::Value;

fn valid() -> Vec<u8> {
    mlp(
        1,
        [FormatKind::Csr16, FormatKind::Bsr { br: 1, bc: 8 }],
        Dtype::F32,
    )
    .to_bytes()
    .unwrap()
}

fn split(bytes: &[u8]) -> (Value, Vec<u8>) {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    (header, bytes[8 + n..].to_vec())
}

/// Reassembles a file with a digest that matches `data`, as a hostile writer would: the
/// structural checks must hold on their own, not rely on the digest.
fn join(header: &Value, data: &[u8]) -> Vec<u8> {
    let mut header = header.clone();
    if let Some(meta) = header
        .get_mut("__metadata__")
        .and_then(Value::as_object_mut)
    {
        meta.insert(
            lopper_model::file::DIGEST_KEY.into(),
            Value::String(format!("{:032x}", xxhash_rust::xxh3::xxh3_128(data))),
        );
    }
    let text = header.to_string();
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(data);
    out
}

/// Applies `f` to the graph JSON inside the header.
fn with_graph(f: impl FnOnce(&mut Value)) -> Vec<u8> {
    let (mut h, data) = split(&valid());
    let mut g: Value = serde_json::from_str(h["__metadata__"]["graph"].as_str().unwrap()).unwrap();
    f(&mut g);
    h["__metadata__"]["graph"] = Value::String(g.to_string());
    join(&h, &data)
}

/// Overwrites the bytes of tensor `name` at element `index` (element size `size`).
fn poke(name: &str, index: usize, value: &[u8]) -> Vec<u8> {
    let (h, mut data) = split(&valid());
    let start = h[name]["data_offsets"][0].as_u64().unwrap() as usize + index * value.len();
    data[start..start + value.len()].copy_from_slice(value);
    join(&h, &data)
}

fn err(bytes: &[u8]) -> String {
    match Model::from_bytes(bytes) {
        Ok(_) => panic!("accepted a bad file"),
        Err(e) => e.to_string(),
    }
}

fn assert_err(bytes: &[u8], want: &str) {
    let e = err(bytes);
    assert!(e.contains(want), "error '{e}' does not mention '{want}'");
}

#[test]
fn accepts_the_valid_file() {
    Model::from_bytes(&valid()).unwrap();
}

#[test]
fn rejects_truncated_file() {
    let b = valid();
    for cut in [0, 5, 8, 100, b.len() - 1] {
        let e = err(&b[..cut]);
        assert!(e.starts_with(&format!("truncated: {cut} of ")), "{e}");
    }
}

#[test]
fn rejects_flipped_data_bytes_by_digest() {
    let b = valid();
    let (h, _) = split(&b);
    let at = b.len() - 5;
    let mut flipped = b.clone();
    flipped[at] ^= 0x10;
    let e = err(&flipped);
    assert!(e.contains("digest") && e.contains("corrupt"), "{e}");
    // A file without a digest (written before it existed) still reads.
    let (mut h2, data) = split(&b);
    h2["__metadata__"]
        .as_object_mut()
        .unwrap()
        .remove(lopper_model::file::DIGEST_KEY);
    let text = h2.to_string();
    let mut old = (text.len() as u64).to_le_bytes().to_vec();
    old.extend_from_slice(text.as_bytes());
    old.extend_from_slice(&data);
    Model::from_bytes(&old).unwrap();
    assert!(h["__metadata__"][lopper_model::file::DIGEST_KEY].is_string());
}

#[test]
fn rejects_bad_header_length() {
    let mut b = valid();
    b[..8].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
    assert_err(&b, "truncated");
    let mut b = valid();
    let n = u64::from_le_bytes(b[..8].try_into().unwrap());
    b[..8].copy_from_slice(&(n + 16).to_le_bytes());
    assert_err(&b, "header");
}

#[test]
fn rejects_offsets_outside_the_file() {
    let (mut h, data) = split(&valid());
    h["fc1.bias"]["data_offsets"] = serde_json::json!([0, 1u64 << 40]);
    assert_err(
        &join(&h, &data),
        "tensor 'fc1.bias': header entry is inconsistent",
    );
    // Consistent with its shape but past the end of the file: truncated.
    let (mut h, data) = split(&valid());
    let end = data.len() as u64;
    h["fc3.bias"]["shape"] = serde_json::json!([4]);
    h["fc3.bias"]["data_offsets"] = serde_json::json!([end, end + 16]);
    assert_err(&join(&h, &data), "truncated");
}

#[test]
fn rejects_out_of_range_index() {
    // fc1 has 48 columns; a u16 column index of 60000 is out of range.
    assert_err(
        &poke("fc1.weight.col_idx", 3, &60000u16.to_le_bytes()),
        "out of range",
    );
}

#[test]
fn rejects_decreasing_row_pointer() {
    assert_err(
        &poke("fc1.weight.row_ptr", 5, &0u32.to_le_bytes()),
        "row pointer",
    );
}

#[test]
fn rejects_unsorted_block_columns() {
    assert_err(
        &poke("fc2.weight.col_idx", 1, &0u32.to_le_bytes()),
        "fc2.weight",
    );
}

#[test]
fn rejects_non_finite_weight() {
    assert_err(
        &poke("fc1.weight.values", 0, &f32::NAN.to_le_bytes()),
        "finite",
    );
    assert_err(&poke("fc3.bias", 2, &f32::INFINITY.to_le_bytes()), "finite");
}

#[test]
fn rejects_inconsistent_shapes() {
    let b = with_graph(|g| g["weights"]["fc1.weight"]["shape"] = serde_json::json!([37, 47]));
    assert_err(&b, "fc1.weight");
    // fc2 expects 37 inputs; claim fc2 is 21x36 so fc1's 37 outputs no longer fit.
    let b = with_graph(|g| g["weights"]["fc3.weight"]["shape"] = serde_json::json!([10, 20]));
    assert_err(&b, "fc3.weight");
}

#[test]
fn rejects_graph_referring_to_missing_tensor() {
    let b = with_graph(|g| g["nodes"][1]["bias"] = Value::String("nowhere.bias".into()));
    assert_err(&b, "nowhere.bias");
    let b = with_graph(|g| g["nodes"][1]["weight"] = Value::String("ghost.weight".into()));
    assert_err(&b, "ghost.weight");
}

#[test]
fn rejects_reference_to_a_later_value() {
    let b = with_graph(|g| g["nodes"][1]["inputs"] = serde_json::json!(["x4"]));
    assert_err(&b, "not the input or an earlier output");
}

#[test]
fn rejects_absurd_dimensions() {
    let b =
        with_graph(|g| g["weights"]["fc1.weight"]["shape"] = serde_json::json!([1u64 << 40, 48]));
    assert_err(&b, "2^24");
    let b = with_graph(|g| g["input"]["shape"] = serde_json::json!([65536, 65536, 65536]));
    assert_err(&b, "too large");
}

#[test]
fn rejects_unknown_op_and_unknown_field() {
    let b = with_graph(|g| g["nodes"][2]["op"] = Value::String("gelu".into()));
    assert_err(&b, "unknown op 'gelu'");
    let b = with_graph(|g| g["nodes"][2]["alpha"] = serde_json::json!(0.1));
    assert_err(&b, "unknown field");
}

#[test]
fn rejects_unknown_version_and_foreign_files() {
    let (mut h, data) = split(&valid());
    h["__metadata__"]["format_version"] = Value::String("99".into());
    assert_err(&join(&h, &data), "version 99");
    let (mut h, data) = split(&valid());
    h.as_object_mut().unwrap().remove("__metadata__");
    assert_err(&join(&h, &data), "no __metadata__");
}

#[test]
fn rejects_tensor_the_graph_does_not_use() {
    let (mut h, mut data) = split(&valid());
    let end = data.len() as u64;
    h["stowaway"] =
        serde_json::json!({"dtype": "F32", "shape": [1], "data_offsets": [end, end + 4]});
    data.extend_from_slice(&1.0f32.to_le_bytes());
    assert_err(&join(&h, &data), "stowaway");
}

#[test]
fn rejects_bad_int8_scale() {
    let m = mlp(2, [FormatKind::Csr16, FormatKind::Csr16], Dtype::I8)
        .to_bytes()
        .unwrap();
    let (h, mut data) = split(&m);
    let s = h["fc1.weight.scales"]["data_offsets"][0].as_u64().unwrap() as usize;
    data[s..s + 4].copy_from_slice(&(-1.0f32).to_le_bytes());
    assert_err(&join(&h, &data), "fc1.weight");
}

#[test]
fn rejects_file_over_the_limit_and_names_the_file() {
    let dir = std::env::temp_dir().join(format!("lopper-rejects-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("big.lop");
    std::fs::write(&p, valid()).unwrap();
    let e = Model::read_with_limit(&p, 100).unwrap_err().to_string();
    assert!(e.contains("big.lop") && e.contains("over the limit"), "{e}");
    std::fs::write(&p, &valid()[..50]).unwrap();
    let e = Model::read(&p).unwrap_err().to_string();
    assert!(e.contains("big.lop"), "{e}");
    let e = Model::read(&dir.join("missing.lop"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing.lop"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn rejects_wrong_input_size() {
    let m = Model::from_bytes(&valid()).unwrap();
    let plan = make_plan(&m, "t", 2, 1, PlanMode::Stored).unwrap();
    let mut ex = Executor::new(&m, &plan).unwrap();
    let e = ex.run(&[0.0; 10]).unwrap_err().to_string();
    assert!(e.contains("expected 96"), "{e}");
}

#[test]
fn rejects_plan_made_for_another_model() {
    let m = Model::from_bytes(&valid()).unwrap();
    let mut plan = make_plan(&m, "t", 1, 1, PlanMode::Stored).unwrap();
    plan.layers[0].kernel = "no_such_kernel".into();
    assert!(Executor::new(&m, &plan).is_err());
    plan.layers.pop();
    assert!(Executor::new(&m, &plan).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    /// Any corruption of any byte is either harmless or an error, never a panic.
    #[test]
    fn random_corruption_never_panics(pos in 0usize..4000, byte in any::<u8>()) {
        let mut b = valid();
        let p = pos % b.len();
        b[p] = byte;
        let _ = Model::from_bytes(&b);
    }
}

#[test]
fn rejects_delta_index_past_the_last_column() {
    let m = mlp(3, [FormatKind::Csr16, FormatKind::Csr16], Dtype::F32)
        .reencoded(lopper_model::StorageChoice::CsrDelta8, Dtype::F32)
        .unwrap()
        .to_bytes()
        .unwrap();
    let (h, mut data) = split(&m);
    let s = h["fc1.weight.col_delta"]["data_offsets"][0]
        .as_u64()
        .unwrap() as usize;
    data[s] = 200; // fc1 has 48 columns
    assert_err(&join(&h, &data), "out of range");
    let (h, mut data) = split(&m);
    let s = h["fc1.weight.row_ptr"]["data_offsets"][0].as_u64().unwrap() as usize;
    data[s + 4..s + 8].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_err(&join(&h, &data), "fc1.weight.");
}

/// Found by the `tokenizer` fuzz targets: tokenizers 0.21.4 panics (an `expect` in its decoder
/// deserialisation) on a malformed `decoder` object; lopper reports it as an error.
#[test]
fn a_tokenizer_json_that_panics_the_tokenizers_crate_is_an_error() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-bert");
    let good = std::fs::read_to_string(dir.join("tokenizer.json")).unwrap();
    assert!(lopper_model::bert::runtime::parse_tokenizer(&good).is_ok());
    let bad = good.replacen("\"prefix\": \"##\"", "\"pref:i\"x \"##\"", 1);
    assert_ne!(bad, good, "the fixture's decoder has a prefix");
    let err = lopper_model::bert::runtime::parse_tokenizer(&bad).unwrap_err();
    assert!(
        err.to_string().contains("tokenizer.json does not parse"),
        "{err}"
    );
}

#[test]
fn int8_activations_on_f32_weights_are_refused() {
    let bytes = with_graph(|g| {
        g["weights"]["fc1.weight"]["int8_acts"] = Value::Bool(true);
    });
    let err = Model::from_bytes(&bytes).expect_err("refused").to_string();
    assert!(err.contains("int8_acts needs int8 weights"), "{err}");
}

/// Found by the `npz` fuzz target: npyz allocates the header length an `.npy` claims (up to
/// 4 GiB in format versions 2 and 3) before reading it; lopper checks it against the bytes.
#[test]
fn an_npy_header_longer_than_the_file_is_refused_before_allocating() {
    use lopper_model::npy::read_input;
    use std::path::Path;
    let mut npy = b"\x93NUMPY\x02\x00".to_vec();
    npy.extend_from_slice(&0xff00_0000u32.to_le_bytes());
    npy.extend_from_slice(b"{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }\n");
    let err = read_input(Path::new("x.npy"), &npy, "input", &[4]).unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");
    // The same member inside an .npz (stored, as numpy.savez writes).
    let npz = stored_npz(&npy);
    let err = read_input(Path::new("x.npz"), &npz, "input", &[4]).unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");
}

/// A one-member stored zip archive holding `input.npy`.
fn stored_npz(member: &[u8]) -> Vec<u8> {
    let crc = {
        let mut c = 0xffff_ffffu32;
        for &b in member {
            c ^= b as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    (c >> 1) ^ 0xedb8_8320
                } else {
                    c >> 1
                };
            }
        }
        !c
    };
    let name = b"input.npy";
    let len = member.len() as u32;
    let mut z = Vec::new();
    let local = |z: &mut Vec<u8>| {
        z.extend_from_slice(&[0x50, 0x4b, 0x03, 0x04, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        z.extend_from_slice(&crc.to_le_bytes());
        z.extend_from_slice(&len.to_le_bytes());
        z.extend_from_slice(&len.to_le_bytes());
        z.extend_from_slice(&(name.len() as u16).to_le_bytes());
        z.extend_from_slice(&0u16.to_le_bytes());
        z.extend_from_slice(name);
    };
    local(&mut z);
    z.extend_from_slice(member);
    let central_at = z.len() as u32;
    z.extend_from_slice(&[0x50, 0x4b, 0x01, 0x02, 20, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    z.extend_from_slice(&crc.to_le_bytes());
    z.extend_from_slice(&len.to_le_bytes());
    z.extend_from_slice(&len.to_le_bytes());
    z.extend_from_slice(&(name.len() as u16).to_le_bytes());
    z.extend_from_slice(&[0; 12]);
    z.extend_from_slice(&0u32.to_le_bytes());
    z.extend_from_slice(name);
    let central_len = z.len() as u32 - central_at;
    z.extend_from_slice(&[0x50, 0x4b, 0x05, 0x06, 0, 0, 0, 0, 1, 0, 1, 0]);
    z.extend_from_slice(&central_len.to_le_bytes());
    z.extend_from_slice(&central_at.to_le_bytes());
    z.extend_from_slice(&0u16.to_le_bytes());
    z
}

/// Found by the `npy` fuzz target: 60 nested brackets in a 361-byte header made npyz's
/// backtracking header parser run for minutes; such headers are refused before parsing.
#[test]
fn an_npy_header_with_deeply_nested_brackets_is_refused_quickly() {
    use lopper_model::npy::read_input;
    let mut text = String::from("{'descr': ");
    text.push_str(&"[".repeat(60));
    text.push_str("'<f4', 'fortran_order': False, 'shape': (4,), }");
    text.push('\n');
    let mut npy = b"\x93NUMPY\x01\x00".to_vec();
    npy.extend_from_slice(&(text.len() as u16).to_le_bytes());
    npy.extend_from_slice(text.as_bytes());
    npy.extend_from_slice(&[0; 16]);
    let err = read_input(std::path::Path::new("x.npy"), &npy, "input", &[4]).unwrap_err();
    assert!(err.to_string().contains("nests brackets"), "{err}");
}
