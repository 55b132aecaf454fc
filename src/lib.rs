//! onnx-slim: rewrite ONNX graphs to make models smaller and faster, and prove every rewrite in tract.

pub mod bench;
pub mod budget;
pub mod calibrate;
pub mod cli;
pub mod error;
pub mod ir;
pub mod linalg;
pub mod onnx;
pub mod ops;
pub mod pack;
pub mod report;
pub mod rewrite;
pub mod rules;
pub mod verify;

pub use error::{Error, Result};
