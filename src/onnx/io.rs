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
    /// The model, every external tensor's `raw_data` a slice of its mapped data file.
    pub model: ModelProto,
    /// Size of the `.onnx` file itself.
    pub file_len: u64,
    /// The file's bytes as read (mapped when large): an untouched model is written back as
    /// these very bytes, which keeps what this build does not decode (fields of a newer ONNX).
    pub bytes: Bytes,
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

/// Files below this size are mapped with `MAP_POPULATE` (every page faulted in by the one `mmap`
/// call); larger ones are mapped lazily, so that a model larger than memory stays page cache the
/// kernel can drop. Measured on the shared models (`--rules clean --no-verify`, mean of 20 runs):
/// populating took captcha_crnn (54 MB) from 180 to 133 ms and ddddocr_det_yolox (20 MB) from 72
/// to 64 ms.
pub(crate) const POPULATE_BELOW: u64 = 1 << 30;

/// A read-only map of `file` (`len` bytes), populated up front only below [`POPULATE_BELOW`].
pub(crate) fn map_readonly(file: &std::fs::File, len: u64) -> std::io::Result<memmap2::Mmap> {
    let mut options = memmap2::MmapOptions::new();
    if len < POPULATE_BELOW {
        options.populate();
    }
    // SAFETY: the map is read-only and onnx-slim never writes to an input: outputs go to a temp
    // file that is renamed over the target, so even `--in-place` leaves the mapped inode intact.
    // Another process truncating the file while we run would fault; every mmap-based loader
    // (tract, safetensors) accepts the same.
    unsafe { options.map(file) }
}

/// The bytes of the file at `path`: memory-mapped when it is large (tensor payloads then stay
/// page-cache pages instead of being copied onto the heap), read otherwise.
pub(crate) fn map_file(path: &Path) -> Result<Bytes> {
    const MAP_FROM: u64 = 1 << 20;
    let file = std::fs::File::open(path).map_err(|e| Error::io("read", path, e))?;
    let meta = file.metadata().map_err(|e| Error::io("read", path, e))?;
    let len = meta.len();
    if len >= MAP_FROM && meta.is_file() {
        if let Ok(map) = map_readonly(&file, len) {
            return Ok(Bytes::from_owner(map));
        }
    }
    let mut data = Vec::with_capacity(len as usize);
    std::io::Read::read_to_end(&mut &file, &mut data).map_err(|e| Error::io("read", path, e))?;
    Ok(Bytes::from(data))
}

/// Whether `path` names standard input or output: `-`, or (for output) `/dev/stdout`.
pub fn is_stdio(path: &Path) -> bool {
    path.as_os_str() == "-" || path == Path::new("/dev/stdout")
}

/// Reads and decodes the model at `path`, reading external data relative to its folder; `-`
/// reads standard input (external data relative to the current folder).
pub fn decode_file(path: &Path) -> Result<LoadedModel> {
    let data = if path.as_os_str() == "-" {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut v)
            .map_err(|e| Error::io("read", path, e))?;
        Bytes::from(v)
    } else {
        map_file(path)?
    };
    let file_len = data.len() as u64;
    let mut model = decode_bytes(data.clone(), path)?;
    let base = path.parent().unwrap_or(Path::new("."));
    let external = external::load_external(&mut model, base)?;
    super::validate::validate_tensors(&mut model)?;
    Ok(LoadedModel {
        model,
        file_len,
        bytes: data,
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
}

/// A temp file in `dir` that becomes an ordinary file on rename: mode 0666 minus the umask, like
/// `File::create` (tempfile's default, 0600, would leave the output unreadable to others).
pub(crate) fn temp_file_in(dir: &Path) -> Result<tempfile::NamedTempFile> {
    let mut b = tempfile::Builder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        b.permissions(std::fs::Permissions::from_mode(0o666));
    }
    b.tempfile_in(dir)
        .map_err(|e| Error::io("create a file in", dir, e))
}

/// Where writing to `out` really goes: `out` itself when it does not exist or is a regular file,
/// the file a symlink points to when `out` is a symlink to a regular file (so the link stays a
/// link). Anything else that exists — a folder, device, FIFO, socket, or a symlink to one or to
/// nothing — is refused: renaming over it would replace it.
pub fn resolve_output(out: &Path) -> Result<PathBuf> {
    let refuse = |what: String| Error::Usage(format!("cannot write `{}`: {what}", out.display()));
    let meta = match std::fs::symlink_metadata(out) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out.to_path_buf()),
        Err(e) => return Err(Error::io("inspect", out, e)),
    };
    if meta.is_file() {
        return Ok(out.to_path_buf());
    }
    if meta.is_dir() {
        return Err(refuse("it is a folder".into()));
    }
    if !meta.file_type().is_symlink() {
        return Err(refuse(
            "it exists and is not a regular file (a device, FIFO or socket)".into(),
        ));
    }
    let target = out
        .canonicalize()
        .map_err(|_| refuse("it is a symlink whose target does not exist".into()))?;
    match std::fs::metadata(&target) {
        Ok(m) if m.is_file() => Ok(target),
        _ => Err(refuse(format!(
            "it is a symlink to `{}`, which is not a regular file",
            target.display()
        ))),
    }
}

/// A model encoded into temp files beside its destination, not yet renamed into place; dropping
/// it removes the temp files. Lets a caller write something else (a report) and put both in place
/// only when both could be written.
pub struct PreparedWrite {
    tmp: tempfile::NamedTempFile,
    out: PathBuf,
    pending_data: Vec<(tempfile::NamedTempFile, PathBuf)>,
    written: Written,
}

impl PreparedWrite {
    /// What [`PreparedWrite::commit`] will have written.
    pub fn written(&self) -> &Written {
        &self.written
    }

    /// A write of `tmp` to `out` and of each `(temp, path)` of `data` to its path, prepared by the
    /// caller with [`temp_file_in`] beside each destination (checked with [`resolve_output`] and
    /// [`check_data_path`]).
    pub(crate) fn new(
        tmp: tempfile::NamedTempFile,
        out: PathBuf,
        data: Vec<(tempfile::NamedTempFile, PathBuf)>,
        written: Written,
    ) -> Self {
        PreparedWrite {
            tmp,
            out,
            pending_data: data,
            written,
        }
    }

    /// Renames the temp files into place: the data files first, then the model (a failure removes
    /// the data files again, so a data file never lands without its model).
    pub fn commit(self) -> Result<Written> {
        let mut persisted_data = Vec::new();
        let undo = |persisted: &[PathBuf]| {
            for p in persisted {
                let _ = std::fs::remove_file(p);
            }
        };
        for (data_tmp, path) in self.pending_data {
            if let Err(e) = data_tmp.persist(&path) {
                undo(&persisted_data);
                return Err(Error::io("write", &path, e.error));
            }
            persisted_data.push(path);
        }
        let out = self.out;
        self.tmp.persist(&out).map_err(|e| {
            undo(&persisted_data);
            Error::io("write", &out, e.error)
        })?;
        Ok(self.written)
    }
}

/// Writes `model` to `out` atomically: a temp file in the target folder, then a rename, so a
/// failure never leaves a partial file. Tensors go to `<out file name>.data` when
/// `opts.external_threshold` says so, or automatically when the model would pass protobuf's
/// 2 GiB limit. See [`resolve_output`] for what `out` may be.
pub fn write_model(model: ModelProto, out: &Path, opts: &SaveOptions) -> Result<Written> {
    prepare_write(model, out, opts)?.commit()
}

/// [`write_model`] up to, not including, the renames.
pub fn prepare_write(
    mut model: ModelProto,
    out: &Path,
    opts: &SaveOptions,
) -> Result<PreparedWrite> {
    let out = resolve_output(out)?;
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
    let mut pending_data = Vec::new();
    if let Some(threshold) = threshold {
        let location = format!("{file_name}.data");
        let chunks = external::externalize(&mut model, &location, threshold);
        if !chunks.is_empty() {
            let path = dir.join(&location);
            check_data_path(&path)?;
            let mut tmp = temp_file_in(&dir)?;
            let mut total = 0u64;
            for c in &chunks {
                tmp.write_all(c).map_err(|e| Error::io("write", &path, e))?;
                total += c.len() as u64;
            }
            pending_data.push((tmp, path.clone()));
            data_file = Some((path, total));
        }
    }
    let model_bytes = model.encoded_len() as u64;
    if model_bytes > PROTOBUF_LIMIT {
        return Err(Error::Usage(format!(
            "`{}` would be {model_bytes} bytes, over protobuf's 2 GiB limit even with external data",
            out.display(),
        )));
    }
    let mut tmp = temp_file_in(&dir)?;
    let mut sink = FileSink::new(tmp.as_file_mut());
    // The sink never refuses bytes, so encoding cannot fail; write errors are kept in the sink.
    let _ = model.encode(&mut sink);
    sink.finish().map_err(|e| Error::io("write", &out, e))?;
    Ok(PreparedWrite {
        tmp,
        out,
        pending_data,
        written: Written {
            model_bytes,
            data_file,
        },
    })
}

/// Refuses `path` as the destination of a data file unless it is absent, a regular file or a
/// symlink: the data file is replaced, never written through (a symlink there is replaced by the
/// file), and a device or folder refuses the write.
pub(crate) fn check_data_path(path: &Path) -> Result<()> {
    if let Ok(m) = std::fs::symlink_metadata(path) {
        if !m.is_file() && !m.file_type().is_symlink() {
            return Err(Error::Usage(format!(
                "cannot write `{}`: it exists and is not a regular file",
                path.display()
            )));
        }
    }
    Ok(())
}

/// [`prepare_write`] for bytes that are already a model file (an untouched input, written back
/// as it was read).
pub fn prepare_write_bytes(bytes: &[u8], out: &Path) -> Result<PreparedWrite> {
    let out = resolve_output(out)?;
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut tmp = temp_file_in(&dir)?;
    tmp.write_all(bytes)
        .and_then(|_| tmp.flush())
        .map_err(|e| Error::io("write", &out, e))?;
    Ok(PreparedWrite {
        tmp,
        out,
        pending_data: Vec::new(),
        written: Written {
            model_bytes: bytes.len() as u64,
            data_file: None,
        },
    })
}

/// A small file (a report) written to a temp file beside `path`, to be renamed into place with
/// `persist`. `path` is checked as [`resolve_output`] checks a model's output.
pub fn prepare_small_file(path: &Path) -> Result<(tempfile::NamedTempFile, PathBuf)> {
    let real = resolve_output(path)?;
    let dir = match real.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        return Err(Error::Usage(format!(
            "cannot write `{}`: folder `{}` does not exist",
            path.display(),
            dir.display()
        )));
    }
    Ok((temp_file_in(&dir)?, real))
}

/// Streams prost's encoder into a file through a 1 MiB buffer; slices at least that large (tensor
/// payloads) go straight to the file, so a model is never assembled in memory a second time.
struct FileSink<W: Write> {
    buf: Vec<u8>,
    inner: W,
    error: Option<std::io::Error>,
}

impl<W: Write> FileSink<W> {
    const CAP: usize = 1 << 20;

    fn new(inner: W) -> Self {
        FileSink {
            buf: Vec::with_capacity(Self::CAP),
            inner,
            error: None,
        }
    }

    fn flush_buf(&mut self) {
        if self.error.is_none() && !self.buf.is_empty() {
            if let Err(e) = self.inner.write_all(&self.buf) {
                self.error = Some(e);
            }
        }
        self.buf.clear();
    }

    fn finish(mut self) -> std::io::Result<()> {
        self.flush_buf();
        match self.error.take() {
            Some(e) => Err(e),
            None => self.inner.flush(),
        }
    }
}

// SAFETY: `chunk_mut` hands out only the buffer's spare capacity, and `advance_mut` is called by
// the encoder with at most that many initialised bytes, which stay within the capacity.
unsafe impl<W: Write> bytes::BufMut for FileSink<W> {
    fn remaining_mut(&self) -> usize {
        usize::MAX
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        let len = self.buf.len() + cnt;
        assert!(len <= self.buf.capacity(), "advance past the buffer");
        // SAFETY: the caller initialised `cnt` bytes of the spare capacity (BufMut contract).
        unsafe { self.buf.set_len(len) };
    }

    fn chunk_mut(&mut self) -> &mut bytes::buf::UninitSlice {
        if self.buf.len() == self.buf.capacity() {
            self.flush_buf();
        }
        bytes::buf::UninitSlice::uninit(self.buf.spare_capacity_mut())
    }

    fn put_slice(&mut self, src: &[u8]) {
        if self.buf.len() + src.len() > Self::CAP {
            self.flush_buf();
        }
        if src.len() >= Self::CAP {
            if self.error.is_none() {
                if let Err(e) = self.inner.write_all(src) {
                    self.error = Some(e);
                }
            }
        } else {
            self.buf.extend_from_slice(src);
        }
    }

    fn put<T: bytes::Buf>(&mut self, mut src: T) {
        while src.has_remaining() {
            let chunk = src.chunk();
            let n = chunk.len();
            self.put_slice(chunk);
            src.advance(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_sink_writes_exactly_what_encode_to_vec_gives() {
        let big = Bytes::from(
            (0..3_000_000u32)
                .map(|i| (i % 251) as u8)
                .collect::<Vec<_>>(),
        );
        let mut model = crate::ir::builder::ModelBuilder::new(17).build();
        if let Some(g) = model.graph.as_mut() {
            for (i, len) in [0usize, 5, 1 << 20, (1 << 20) - 1, 3_000_000]
                .into_iter()
                .enumerate()
            {
                g.initializer.push(crate::onnx::proto::TensorProto {
                    name: Some(format!("t{i}")),
                    data_type: Some(2),
                    dims: vec![len as i64],
                    raw_data: Some(big.slice(..len)),
                    ..Default::default()
                });
            }
        }
        let mut out = Vec::new();
        let mut sink = FileSink::new(&mut out);
        let _ = model.encode(&mut sink);
        sink.finish().unwrap();
        assert_eq!(out, model.encode_to_vec());
    }
}
