//! Tensor data stored outside the `.onnx` file (`data_location = EXTERNAL`).
//!
//! Reading: each external tensor's `location` is resolved relative to the model's folder, the file
//! is memory-mapped once (never populated up front, never copied) and the tensor's `raw_data`
//! becomes the `offset..offset+length` slice of that map: weights stay page-cache pages the kernel
//! can drop and reload, so a model larger than memory loads in memory bounded by its graph. Writing: tensors whose payload reaches a threshold are
//! moved into one data file beside the model, each described by `location`, `offset` and `length`.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Component, Path, PathBuf};

use bytes::Bytes;

use super::dtype;
use super::proto::tensor_proto::DataLocation;
use super::proto::{ModelProto, StringStringEntryProto, TensorProto};
use super::visit::for_each_tensor_mut;
use crate::error::{Error, Result};

/// What loading found out about external data, so that saving can keep the same layout.
#[derive(Debug, Clone, Default)]
pub struct ExternalSummary {
    /// Number of tensors taken from external files.
    pub tensors: usize,
    /// Total bytes of those tensors (mapped, not read in).
    pub bytes: u64,
    /// Smallest external payload seen: a good threshold for writing the model back out.
    pub min_len: Option<u64>,
}

/// Whether `t` keeps its payload in an external file.
pub fn is_external(t: &TensorProto) -> bool {
    t.data_location == Some(DataLocation::External as i32)
}

fn tensor_label(t: &TensorProto) -> String {
    t.name.clone().unwrap_or_else(|| "<unnamed>".into())
}

/// Points the `raw_data` of every external tensor of `model` at its bytes in the external file,
/// resolving locations against `base_dir`, and clears the external markers. Each file is mapped
/// once ([`map_data_file`]) and each tensor holds a `Bytes` slice of the map: nothing is copied.
pub fn load_external(model: &mut ModelProto, base_dir: &Path) -> Result<ExternalSummary> {
    let mut summary = ExternalSummary::default();
    let mut files: HashMap<PathBuf, Bytes> = HashMap::new();
    let mut real_base: Option<PathBuf> = None;
    let base_dir = if base_dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        base_dir
    };
    for_each_tensor_mut(model, &mut |t: &mut TensorProto| -> Result<()> {
        if !is_external(t) {
            return Ok(());
        }
        let name = tensor_label(t);
        let err = |path: &Path, reason: String| Error::ExternalData {
            tensor: name.clone(),
            path: path.to_path_buf(),
            reason,
        };
        let mut location = None;
        let mut offset = 0u64;
        let mut length = None;
        for e in &t.external_data {
            let value = e.value.as_deref().unwrap_or("");
            match e.key.as_deref().unwrap_or("") {
                "location" => location = Some(value.to_string()),
                "offset" => {
                    offset = value
                        .parse()
                        .map_err(|_| err(base_dir, format!("bad offset `{value}`")))?
                }
                "length" => {
                    length = Some(
                        value
                            .parse::<u64>()
                            .map_err(|_| err(base_dir, format!("bad length `{value}`")))?,
                    )
                }
                _ => {}
            }
        }
        let location = location.ok_or_else(|| err(base_dir, "no `location` entry".into()))?;
        let path = base_dir.join(&location);
        if !files.contains_key(&path) {
            let (real, len) = resolve_location(base_dir, &location, &mut real_base)
                .map_err(|(p, reason)| err(&p, reason))?;
            let f = File::open(&real).map_err(|e| err(&path, format!("cannot open: {e}")))?;
            let data =
                map_data_file(&f, len).map_err(|e| err(&path, format!("cannot read: {e}")))?;
            files.insert(path.clone(), data);
        }
        let Some(data) = files.get(&path) else {
            return Err(err(&path, "cannot open".into()));
        };
        let file_len = data.len() as u64;
        let length = match length {
            Some(l) => l,
            None => match dtype::byte_len(t.data_type.unwrap_or(0), &t.dims) {
                Some(l) => l,
                None => file_len.saturating_sub(offset),
            },
        };
        let end = offset
            .checked_add(length)
            .ok_or_else(|| err(&path, "offset + length overflows".into()))?;
        if end > file_len {
            return Err(err(
                &path,
                format!("file is too short: needs bytes {offset}..{end}, has {file_len}"),
            ));
        }
        // `end <= file_len == data.len()`, so both fit a usize.
        let payload = data.slice(offset as usize..end as usize);
        summary.tensors += 1;
        summary.bytes += length;
        summary.min_len = Some(summary.min_len.map_or(length, |m| m.min(length)));
        t.raw_data = Some(payload);
        t.data_location = None;
        t.external_data.clear();
        Ok(())
    })?;
    Ok(summary)
}

/// The bytes of an external data file of `len` bytes: a read-only memory map, populated up front
/// only when small ([`super::io::POPULATE_BELOW`]): the pages of a large one are faulted in as
/// tensors are read and stay page cache, which the kernel may drop and reload. An empty file is an
/// empty `Bytes` (a zero-length map is refused by the kernel); a file that cannot be mapped is read.
pub(crate) fn map_data_file(file: &File, len: u64) -> std::io::Result<Bytes> {
    if len == 0 {
        return Ok(Bytes::new());
    }
    if let Ok(map) = super::io::map_readonly(file, len) {
        if map.len() as u64 == len {
            return Ok(Bytes::from_owner(map));
        }
    }
    let mut data = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    std::io::Read::read_to_end(&mut &*file, &mut data)?;
    Ok(Bytes::from(data))
}

/// The regular file an external `location` names, checked to lie inside the model's folder
/// `base_dir` (`real_base` caches the folder's canonical form between calls): its canonical path
/// and length. On refusal: the path to name and why.
pub(crate) fn resolve_location(
    base_dir: &Path,
    location: &str,
    real_base: &mut Option<PathBuf>,
) -> std::result::Result<(PathBuf, u64), (PathBuf, String)> {
    let rel = Path::new(location);
    if rel.is_absolute()
        || rel
            .components()
            .any(|c| matches!(c, Component::ParentDir | Component::Prefix(_)))
    {
        return Err((
            rel.to_path_buf(),
            "location must be a relative path inside the model's folder".into(),
        ));
    }
    let path = base_dir.join(rel);
    // The lexical check above is not enough: a symlink inside the folder may point out of it.
    // Resolve both and compare, and read only regular files (a FIFO would block).
    let real = path
        .canonicalize()
        .map_err(|e| (path.clone(), format!("cannot open: {e}")))?;
    let base = match real_base {
        Some(b) => b,
        None => real_base.insert(base_dir.canonicalize().map_err(|e| {
            (
                base_dir.to_path_buf(),
                format!("cannot resolve the model's folder: {e}"),
            )
        })?),
    };
    if !real.starts_with(base.as_path()) {
        return Err((
            path,
            format!(
                "resolves to `{}`, outside the model's folder",
                real.display()
            ),
        ));
    }
    // Checked before opening: opening a FIFO blocks until something writes to it.
    let meta = std::fs::metadata(&real).map_err(|e| (path.clone(), format!("cannot stat: {e}")))?;
    if !meta.is_file() {
        return Err((path, "not a regular file".into()));
    }
    Ok((real, meta.len()))
}

/// Moves the `raw_data` of every tensor with at least `threshold` bytes out of `model`, pointing it
/// at `location` (a file name relative to the model). Returns the payloads in file order.
pub fn externalize(model: &mut ModelProto, location: &str, threshold: u64) -> Vec<Bytes> {
    let mut chunks = Vec::new();
    let mut offset = 0u64;
    let _ = for_each_tensor_mut::<()>(model, &mut |t| {
        let Some(raw) = t.raw_data.as_ref() else {
            return Ok(());
        };
        let len = raw.len() as u64;
        if len < threshold || len == 0 {
            return Ok(());
        }
        let entry = |k: &str, v: String| StringStringEntryProto {
            key: Some(k.into()),
            value: Some(v),
        };
        t.external_data = vec![
            entry("location", location.to_string()),
            entry("offset", offset.to_string()),
            entry("length", len.to_string()),
        ];
        t.data_location = Some(DataLocation::External as i32);
        if let Some(raw) = t.raw_data.take() {
            chunks.push(raw);
        }
        offset += len;
        Ok(())
    });
    chunks
}
