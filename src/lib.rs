//! onnx-slim: rewrite ONNX graphs to make models smaller and faster, and prove every rewrite in tract.

pub mod error;
pub mod ir;
pub mod onnx;
pub mod verify;

pub use error::{Error, Result};
