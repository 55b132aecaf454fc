//! The one error type of the library.
//!
//! Messages are lowercase and name the offending thing in backticks. The binary maps every variant
//! that stems from the user's input to exit code 2.

use std::path::PathBuf;

/// Everything that can go wrong in onnx-slim, with the structured context needed to say what.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("cannot {action} `{path}`: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not a valid ONNX protobuf.
    #[error("`{path}` is not a valid onnx model: {reason}")]
    Decode { path: PathBuf, reason: String },
    /// Tensor data stored outside the model file is missing or inconsistent.
    #[error("external data of tensor `{tensor}` in `{path}`: {reason}")]
    ExternalData {
        tensor: String,
        path: PathBuf,
        reason: String,
    },
    /// The graph is structurally invalid (dangling input, cycle, duplicate names, ...).
    #[error("invalid graph: {reason}")]
    Graph { reason: String },
    /// A node is malformed (bad attribute, wrong number of inputs, ...).
    #[error("node `{node}` (`{op}`): {reason}")]
    Node {
        node: String,
        op: String,
        reason: String,
    },
    /// A tensor cannot be interpreted (bad dtype, size mismatch, absurd dims, ...).
    #[error("tensor `{name}`: {reason}")]
    Tensor { name: String, reason: String },
    /// The user asked for something that does not make sense (unknown rule, bad flag value, ...).
    #[error("{0}")]
    Usage(String),
    /// A rule failed while building or applying its patch.
    #[error("rule `{rule}`: {reason}")]
    Rule { rule: String, reason: String },
    /// tract could not load or run a model.
    #[error("tract cannot run `{model}`: {reason}")]
    Tract { model: String, reason: String },
    /// A packed model (`onnx-slim pack`) that cannot be unpacked: another kind of file, another
    /// format version, truncated or corrupt.
    #[error("packed model `{path}`: {reason}")]
    Pack { path: PathBuf, reason: String },
    /// Verification ran and the outputs disagree beyond the tolerance.
    #[error("verification failed: {0}")]
    VerifyFailed(String),
}

impl Error {
    /// Exit code for the binary: 2 for bad input or usage, 1 for internal or verification failures.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Io { .. }
            | Error::Decode { .. }
            | Error::ExternalData { .. }
            | Error::Graph { .. }
            | Error::Node { .. }
            | Error::Tensor { .. }
            | Error::Usage(_)
            | Error::Pack { .. } => 2,
            Error::Rule { .. } | Error::Tract { .. } | Error::VerifyFailed(_) => 1,
        }
    }

    /// Shorthand for an I/O error with its path.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

/// Result with the library's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
