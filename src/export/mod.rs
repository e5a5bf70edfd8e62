//! Exporting a trained detector for other runtimes.
//!
//! [`onnx`]: YOLOX as an ONNX graph (opset 13, standard operators, weights as initializers,
//! BN folded into the convolutions), raw or decoded outputs. The protobuf messages are
//! [`onnx_proto`]'s (prost), so writing a model needs no ONNX runtime.

pub mod onnx;
mod onnx_graph;
pub mod onnx_proto;

pub use onnx::{encode_onnx, write_onnx, yolox_to_onnx, OnnxOptions, OnnxOutput};
