//! ONNX models: protobuf decoding (`onnx::decode`) and import into lopper's graph
//! (`import_model`: opset checks, constant folding of shape subgraphs, layer mapping). External
//! data is looked up in an empty folder, so references to it must fail cleanly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lopper_model::import::onnx::import_model;
use lopper_model::onnx::decode;

fuzz_target!(|data: &[u8]| {
    let Ok(m) = decode(data) else {
        return;
    };
    let dir = std::env::temp_dir().join("lopper-fuzz-onnx-empty");
    let _ = std::fs::create_dir_all(&dir);
    let _ = import_model(&m, &dir, "fuzz");
});
