//! Exporters: lopper models written in other tools' formats ([`onnx`]).

pub mod onnx;
