//! Generates the ONNX protobuf messages from the vendored `proto/onnx.proto` (onnx 1.23.2,
//! Apache-2.0: `proto/LICENSE-onnx`, `proto/NOTICE-onnx`). protox compiles the schema in Rust, so
//! the build needs no `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/onnx.proto");
    let fds = protox::compile(["onnx.proto"], ["proto"])?;
    prost_build::Config::new().bytes(["."]).compile_fds(fds)?;
    Ok(())
}
