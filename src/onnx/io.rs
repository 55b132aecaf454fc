//! Decoding a model from a file or bytes, and writing it back atomically.

use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use prost::Message;

use super::external::{self, ExternalSummary};
use super::proto::ModelProto;
use crate::error::{Error, Result};

/// Protobuf messages cannot exceed 2 GiB; above this the model's tensors must go to external data.
pub const PROTOBUF_LIMIT: u64 = (1 << 31) - 1;

/// A decoded model plus what its loading found out.
#[derive(Debug, Clone)]
pub struct LoadedModel {
    /// The model, with every external tensor read into `raw_data`.
    pub model: ModelProto,
    /// Size of the `.onnx` file itself.
    pub file_len: u64,
    /// External data that was read in.
    pub external: ExternalSummary,
}

/// Decodes `bytes` as a `ModelProto`; `path` only names the source in errors.
///
/// Tensor payloads are sliced out of `bytes` without copying. A model needs a graph: random bytes
/// that happen to parse as protobuf are refused.
pub fn decode_bytes(bytes: Bytes, path: &Path) -> Result<ModelProto> {
    let err = |reason: String| Error::Decode {
        path: path.to_path_buf(),
        reason,
    };
    if bytes.is_empty() {
        return Err(err("the file is empty".into()));
    }
    let model = ModelProto::decode(bytes).map_err(|e| err(format!("protobuf: {e}")))?;
    if model.graph.is_none() {
        return Err(err("it has no graph".into()));
    }
    if model.ir_version.is_none() && model.opset_import.is_empty() {
        return Err(err("it has neither an ir_version nor opset imports".into()));
    }
    Ok(model)
}

/// Reads and decodes the model at `path`, reading external data relative to its folder.
pub fn decode_file(path: &Path) -> Result<LoadedModel> {
    let data = std::fs::read(path).map_err(|e| Error::io("read", path, e))?;
    let file_len = data.len() as u64;
    let mut model = decode_bytes(Bytes::from(data), path)?;
    let base = path.parent().unwrap_or(Path::new("."));
    let external = external::load_external(&mut model, base)?;
    Ok(LoadedModel {
        model,
        file_len,
        external,
    })
}

/// Encodes `model` into one buffer (its exact size is computed first, so it is allocated once).
pub fn encode_model(model: &ModelProto) -> Vec<u8> {
    model.encode_to_vec()
}

/// How [`write_model`] lays the model out on disk.
#[derive(Debug, Clone, Default)]
pub struct SaveOptions {
    /// Move tensors of at least this many bytes into `<out>.data`. `None`: only when needed.
    pub external_threshold: Option<u64>,
}

/// What [`write_model`] wrote.
#[derive(Debug, Clone)]
pub struct Written {
    /// Bytes of the `.onnx` file.
    pub model_bytes: u64,
    /// The external data file and its size, when one was written.
    pub data_file: Option<(PathBuf, u64)>,
    /// The encoded `.onnx` bytes, for verification of exactly what was written.
    pub encoded: Vec<u8>,
}

/// A temp file in `dir` that becomes an ordinary file on rename: mode 0666 minus the umask, like
/// `File::create` (tempfile's default, 0600, would leave the output unreadable to others).
fn temp_file_in(dir: &Path) -> Result<tempfile::NamedTempFile> {
    let mut b = tempfile::Builder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        b.permissions(std::fs::Permissions::from_mode(0o666));
    }
    b.tempfile_in(dir)
        .map_err(|e| Error::io("create a file in", dir, e))
}

/// Writes `model` to `out` atomically: a temp file in the target folder, then a rename, so a
/// failure never leaves a partial file. Tensors go to `<out file name>.data` when
/// `opts.external_threshold` says so, or automatically when the model would pass protobuf's
/// 2 GiB limit.
pub fn write_model(mut model: ModelProto, out: &Path, opts: &SaveOptions) -> Result<Written> {
    let threshold = match opts.external_threshold {
        Some(t) => Some(t),
        None if model.encoded_len() as u64 > PROTOBUF_LIMIT => Some(1024),
        None => None,
    };
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = out
        .file_name()
        .ok_or_else(|| Error::Usage(format!("output path `{}` has no file name", out.display())))?
        .to_string_lossy()
        .to_string();
    let mut data_file = None;
    let mut pending_data = None;
    if let Some(threshold) = threshold {
        let location = format!("{file_name}.data");
        let chunks = external::externalize(&mut model, &location, threshold);
        if !chunks.is_empty() {
            let path = dir.join(&location);
            let mut tmp = temp_file_in(&dir)?;
            let mut total = 0u64;
            for c in &chunks {
                tmp.write_all(c).map_err(|e| Error::io("write", &path, e))?;
                total += c.len() as u64;
            }
            pending_data = Some((tmp, path.clone()));
            data_file = Some((path, total));
        }
    }
    let encoded = encode_model(&model);
    if encoded.len() as u64 > PROTOBUF_LIMIT {
        return Err(Error::Usage(format!(
            "`{}` would be {} bytes, over protobuf's 2 GiB limit even with external data",
            out.display(),
            encoded.len()
        )));
    }
    let mut tmp = temp_file_in(&dir)?;
    tmp.write_all(&encoded)
        .map_err(|e| Error::io("write", out, e))?;
    let mut persisted_data = None;
    if let Some((data_tmp, path)) = pending_data {
        data_tmp
            .persist(&path)
            .map_err(|e| Error::io("write", &path, e.error))?;
        persisted_data = Some(path);
    }
    tmp.persist(out).map_err(|e| {
        // Do not leave a data file behind without the model that describes it.
        if let Some(p) = &persisted_data {
            let _ = std::fs::remove_file(p);
        }
        Error::io("write", out, e.error)
    })?;
    Ok(Written {
        model_bytes: encoded.len() as u64,
        data_file,
        encoded,
    })
}
