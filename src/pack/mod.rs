//! `onnx-slim pack` and `unpack`: lossless, entropy-coded storage of a model file and its external
//! data, for storage and transfer. `unpack` restores every file byte for byte.
//!
//! Tensor payloads compress badly as they are: a float32 is 3 bytes of near-random mantissa and
//! one byte that mixes the sign with 7 of the 8 exponent bits. `pack` finds each payload in the
//! file by walking the protobuf wire format (the `raw_data` and packed `float_data` of every
//! tensor, and every external tensor's range in its data file), without decoding or re-encoding
//! anything, and splits 2-, 4- and 8-byte elements into byte planes: the exponents then sit in a
//! plane of their own that zstd codes in about 3 bits a byte, and the mantissa planes, which do
//! not compress, are stored. Every other byte (protobuf structure, names, 1-byte tensors) goes
//! into one plain stream. Each stream is coded with zstd at a high level (long-distance matching,
//! a window covering the stream) when a fast trial shows it compresses, and stored otherwise.
//!
//! # Format, version 1
//!
//! All integers are little-endian.
//!
//! ```text
//! header    "ONNXSLIM" (8 bytes), format version u32 = 1
//! file      'F', original length u64, name length u16, name (UTF-8): empty for the model, else
//!           the external data file's location relative to the model's folder
//!           segment* (until the file's length is reached)
//!           'E', SHA-256 of the file record's first bytes ('F' to the name) followed by the
//!           file's original bytes (32 bytes)
//! (the model comes first, then one file record per external data file)
//! end       'Z', file count u32, CRC-32 (IEEE) u32 of every byte before it (from the magic to
//!           the count: a flipped bit anywhere is refused, even one the decoders would not
//!           notice); nothing may follow
//!
//! segment   'S', original length u32 (1 ..= 16 MiB), stream count u8, stream*
//! stream    id u8 (0 ..= 16), codec u8 (0 stored, 1 zstd frame with its checksum), decoded length u32,
//!           stored length u32, stored bytes
//! ```
//!
//! Stream 0 is the segment's layout: a flags byte (bit 0: the 4-byte elements are
//! exponent-aligned, i.e. each float32 `s|eeeeeeee|m…` is stored as `eeeeeeee|s|m…`, chosen per
//! segment when a trial shows it compresses better), a varint span count, then per span a kind
//! byte (0 plain, 1, 2, 4 or 8: the element width) and a varint length. Stream 1 holds the plain
//! spans' bytes in order; streams 2–5, 6–7 and 8–15 hold byte 0, 1, … of every 4-, 2- and 8-byte
//! element, in order; stream 16 the 1-byte elements (int8, uint8, float8, packed int4), apart
//! from the protobuf structure so they are coded on their own statistics. `unpack` interleaves the planes back, checks every file's SHA-256 and
//! length, and writes nothing unless everything matched.
//!
//! Memory is bounded by the segment size: both commands stream, a few buffers of 16 MiB at a
//! time, whatever the size of the external data.

mod scan;
mod segment;

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::onnx::external::resolve_location;
use crate::onnx::io::{check_data_path, map_file, temp_file_in, PreparedWrite, Written};
use crate::onnx::{decode_bytes, is_stdio, resolve_output};
use scan::{Kind, Range};
use segment::{DecodeError, Decoder, Encoder, SEGMENT};

/// The first bytes of every packed model.
pub const MAGIC: &[u8; 8] = b"ONNXSLIM";
/// The format version this build writes and reads.
pub const VERSION: u32 = 1;
/// The zstd level of the streams that compress.
const LEVEL: i32 = 19;

/// One file of a pack: its name (empty for the model, else the external location) and length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackedFile {
    pub name: String,
    pub len: u64,
}

/// What [`pack`] or [`unpack`] did.
#[derive(Debug, Clone)]
pub struct PackSummary {
    /// The model first, then its external data files.
    pub files: Vec<PackedFile>,
    /// Bytes of the packed file.
    pub packed_len: u64,
}

impl PackSummary {
    /// Total original bytes of all files.
    pub fn original_len(&self) -> u64 {
        self.files.iter().map(|f| f.len).sum()
    }
}

fn dir_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn refuse_stdio(path: &Path, what: &str) -> Result<()> {
    if is_stdio(path) {
        return Err(Error::Usage(format!(
            "`{what}` needs a file, not standard input or output (`{}`)",
            path.display()
        )));
    }
    Ok(())
}

/// Packs the model at `input` and its external data into `output` (a temp file beside it,
/// renamed into place when complete).
pub fn pack(input: &Path, output: &Path) -> Result<PackSummary> {
    refuse_stdio(input, "pack")?;
    refuse_stdio(output, "pack")?;
    let bytes = map_file(input)?;
    // Refuses what is not a model, with the message every command gives; the payloads stay
    // slices of the mapped file, and the decoded model is dropped at once.
    drop(decode_bytes(bytes.clone(), input)?);
    let found = scan::scan(&bytes);
    let base = dir_of(input);
    let model_real = input.canonicalize().ok();

    // External data files, each once (by resolved path), with their payload ranges.
    let mut externals: Vec<(String, PathBuf, u64, Vec<Range>)> = Vec::new();
    let mut index: HashMap<PathBuf, usize> = HashMap::new();
    let mut real_base = None;
    for r in &found.external {
        let (real, len) =
            resolve_location(&base, &r.location, &mut real_base).map_err(|(path, reason)| {
                Error::ExternalData {
                    tensor: r.tensor.clone(),
                    path,
                    reason,
                }
            })?;
        if model_real.as_ref() == Some(&real) {
            continue;
        }
        let i = *index.entry(real.clone()).or_insert_with(|| {
            externals.push((r.location.clone(), real, len, Vec::new()));
            externals.len() - 1
        });
        let length = r.length.unwrap_or_else(|| {
            crate::onnx::dtype::byte_len(r.data_type as i32, &r.dims)
                .unwrap_or_else(|| len.saturating_sub(r.offset))
        });
        externals[i].3.push(Range {
            offset: r.offset,
            len: length,
            kind: Kind::of_data_type(r.data_type),
        });
    }
    for e in &mut externals {
        e.3.sort_by_key(|r| r.offset);
    }

    let out = resolve_output(output)?;
    if let Ok(real_out) = out.canonicalize() {
        let inputs = model_real.iter().chain(externals.iter().map(|e| &e.1));
        if let Some(same) = inputs.into_iter().find(|p| **p == real_out) {
            return Err(Error::Usage(format!(
                "`pack` would overwrite its input `{}` with `{}`",
                same.display(),
                output.display()
            )));
        }
    }
    let dir = dir_of(&out);
    let tmp = temp_file_in(&dir)?;
    let werr = |e: std::io::Error| Error::io("write", &out, e);
    let mut w = Checksummed::new(BufWriter::with_capacity(1 << 20, tmp.as_file()));
    w.write_all(MAGIC).map_err(werr)?;
    w.write_all(&VERSION.to_le_bytes()).map_err(werr)?;
    let mut enc = Encoder::new(LEVEL).map_err(werr)?;
    let mut files = vec![PackedFile {
        name: String::new(),
        len: bytes.len() as u64,
    }];
    let mut buf = Vec::new();
    let mut put_file = |w: &mut Checksummed<BufWriter<&File>>,
                        name: &str,
                        len: u64,
                        ranges: &[Range],
                        read: &mut dyn FnMut(usize, &mut Vec<u8>) -> Result<()>|
     -> Result<()> {
        let mut head = vec![b'F'];
        head.extend_from_slice(&len.to_le_bytes());
        head.extend_from_slice(&(name.len() as u16).to_le_bytes());
        head.extend_from_slice(name.as_bytes());
        w.write_all(&head).map_err(werr)?;
        let mut sha = Sha256::new();
        sha.update(&head);
        let mut data = Vec::with_capacity(SEGMENT.min(len as usize));
        for spans in segment::plan(len, ranges) {
            let n: usize = spans.iter().map(|s| s.len as usize).sum();
            read(n, &mut data)?;
            sha.update(&data);
            buf.clear();
            buf.push(b'S');
            enc.encode(&data, &spans, &mut buf).map_err(werr)?;
            w.write_all(&buf).map_err(werr)?;
        }
        w.write_all(b"E").map_err(werr)?;
        w.write_all(&sha.finalize()).map_err(werr)?;
        Ok(())
    };
    let mut at = 0usize;
    put_file(
        &mut w,
        "",
        bytes.len() as u64,
        &found.ranges,
        &mut |n, data| {
            data.clear();
            data.extend_from_slice(&bytes[at..at + n]);
            at += n;
            Ok(())
        },
    )?;
    for (location, real, len, ranges) in &externals {
        if location.len() > usize::from(u16::MAX) {
            return Err(Error::Usage(format!(
                "external data location `{location}` is too long to pack"
            )));
        }
        let rerr = |e: std::io::Error| Error::io("read", real, e);
        let mut f = BufReader::new(File::open(real).map_err(rerr)?).take(*len);
        put_file(&mut w, location, *len, ranges, &mut |n, data| {
            data.resize(n, 0);
            f.read_exact(data).map_err(rerr)
        })?;
        files.push(PackedFile {
            name: location.clone(),
            len: *len,
        });
    }
    w.write_all(b"Z").map_err(werr)?;
    w.write_all(&(files.len() as u32).to_le_bytes())
        .map_err(werr)?;
    let sum = w.crc.clone().finalize();
    w.write_all(&sum.to_le_bytes()).map_err(werr)?;
    w.flush().map_err(werr)?;
    drop(w);
    let packed_len = tmp.as_file().metadata().map_err(werr)?.len();
    PreparedWrite::new(
        tmp,
        out,
        Vec::new(),
        Written {
            model_bytes: packed_len,
            data_file: None,
        },
    )
    .commit()?;
    Ok(PackSummary { files, packed_len })
}

/// Where an external file of a pack goes: `name` below `dir`, if it is a plain relative path.
fn external_destination(dir: &Path, name: &str) -> Option<PathBuf> {
    let rel = Path::new(name);
    let plain = !name.is_empty()
        && rel
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
        && rel.file_name().is_some();
    plain.then(|| dir.join(rel))
}

/// Folders created for the external files of an unpack, removed again (when still empty) unless
/// the unpack completes.
struct CreatedDirs(Vec<PathBuf>);

impl CreatedDirs {
    /// Creates the missing folders of `dir`, outermost first, remembering each.
    fn create(&mut self, dir: &Path) -> std::io::Result<()> {
        let mut missing = Vec::new();
        let mut d = Some(dir);
        while let Some(p) = d {
            if p.as_os_str().is_empty() || p.exists() {
                break;
            }
            missing.push(p.to_path_buf());
            d = p.parent();
        }
        for p in missing.into_iter().rev() {
            std::fs::create_dir(&p)?;
            self.0.push(p);
        }
        Ok(())
    }
}

impl Drop for CreatedDirs {
    fn drop(&mut self) {
        for p in self.0.iter().rev() {
            let _ = std::fs::remove_dir(p);
        }
    }
}

/// Unpacks `input` (made by [`pack`]) into the model `output` and its external data files, at
/// their locations relative to `output`'s folder. Every file is checked (length and SHA-256)
/// before any is renamed into place; a foreign, truncated or corrupt pack writes nothing.
pub fn unpack(input: &Path, output: &Path) -> Result<PackSummary> {
    refuse_stdio(input, "unpack")?;
    refuse_stdio(output, "unpack")?;
    let bad = |reason: String| Error::Pack {
        path: input.to_path_buf(),
        reason,
    };
    let file = File::open(input).map_err(|e| Error::io("read", input, e))?;
    let packed_len = file
        .metadata()
        .map_err(|e| Error::io("read", input, e))?
        .len();
    let mut r = Checksummed::new(BufReader::with_capacity(1 << 20, file));
    let read = |r: &mut Checksummed<BufReader<File>>, buf: &mut [u8], what: &str| -> Result<()> {
        r.read_exact(buf).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => bad(format!("it is truncated (it ends {what})")),
            _ => Error::io("read", input, e),
        })
    };
    let mut head = [0u8; 12];
    let n = read_up_to(&mut r, &mut head).map_err(|e| Error::io("read", input, e))?;
    if n < 8 || &head[..8] != MAGIC {
        let prefix = n < 8 && head[..n] == MAGIC[..n] && n > 0;
        return Err(bad(if prefix {
            "it is truncated (it ends inside the header)".into()
        } else {
            "it is not an onnx-slim pack (it does not start with `ONNXSLIM`)".into()
        }));
    }
    if n < 12 {
        return Err(bad("it is truncated (it ends inside the header)".into()));
    }
    let version = u32::from_le_bytes([head[8], head[9], head[10], head[11]]);
    if version != VERSION {
        return Err(bad(format!(
            "it is format version {version}; this onnx-slim reads version {VERSION}"
        )));
    }

    let out = resolve_output(output)?;
    let dir = dir_of(&out);
    let mut dirs = CreatedDirs(Vec::new());
    let mut model_tmp = None;
    let mut data = Vec::new();
    let mut files: Vec<PackedFile> = Vec::new();
    let mut dec = Decoder::new().map_err(|e| Error::io("read", input, e))?;
    let mut segment = Vec::new();
    loop {
        let mut tag = [0u8];
        read(&mut r, &mut tag, "between files")?;
        match tag[0] {
            b'F' => {}
            b'Z' if !files.is_empty() => {
                let mut count = [0u8; 4];
                read(&mut r, &mut count, "inside the end record")?;
                if u32::from_le_bytes(count) as usize != files.len() {
                    return Err(bad(
                        "its file count does not match its files (corrupt)".into()
                    ));
                }
                let sum = r.crc.clone().finalize();
                let mut stored = [0u8; 4];
                read(&mut r, &mut stored, "inside the end record")?;
                if u32::from_le_bytes(stored) != sum {
                    return Err(bad(
                        "the checksum of the pack does not match (corrupt)".into()
                    ));
                }
                let mut extra = [0u8];
                if read_up_to(&mut r, &mut extra).map_err(|e| Error::io("read", input, e))? != 0 {
                    return Err(bad("bytes follow its end record".into()));
                }
                break;
            }
            _ => return Err(bad("a record has an unknown tag (corrupt)".into())),
        }
        let mut fixed = [0u8; 10];
        read(&mut r, &mut fixed, "inside a file record")?;
        let len = u64::from_le_bytes(fixed[..8].try_into().unwrap_or_default());
        let mut name = vec![0u8; usize::from(u16::from_le_bytes([fixed[8], fixed[9]]))];
        read(&mut r, &mut name, "inside a file record")?;
        let name = String::from_utf8(name)
            .map_err(|_| bad("a file name is not UTF-8 (corrupt)".into()))?;
        let label = if name.is_empty() {
            "the model".to_string()
        } else {
            format!("`{name}`")
        };
        let (tmp, dest) = if files.is_empty() {
            if !name.is_empty() {
                return Err(bad("its first file is not the model (corrupt)".into()));
            }
            (temp_file_in(&dir)?, out.clone())
        } else {
            let dest = external_destination(&dir, &name).ok_or_else(|| {
                bad(format!(
                    "external file name `{name}` is not a relative path"
                ))
            })?;
            if dest == out || files.iter().any(|f| f.name == name) {
                return Err(bad(format!(
                    "external file `{name}` would overwrite another file of the pack"
                )));
            }
            check_data_path(&dest)?;
            let parent = dir_of(&dest);
            dirs.create(&parent)
                .map_err(|e| Error::io("create the folder", &parent, e))?;
            (temp_file_in(&parent)?, dest)
        };
        let mut sha = Sha256::new();
        sha.update(b"F");
        sha.update(fixed);
        sha.update(name.as_bytes());
        let mut done = 0u64;
        {
            let mut w = tmp.as_file();
            while done < len {
                let mut tag = [0u8];
                read(&mut r, &mut tag, &format!("inside {label}"))?;
                if tag[0] != b'S' {
                    return Err(bad(format!("{label} ends early (corrupt)")));
                }
                dec.decode(&mut r, len - done, &mut segment)
                    .map_err(|e| match e {
                        DecodeError::Truncated => {
                            bad(format!("it is truncated (it ends inside {label})"))
                        }
                        DecodeError::Io(e) => Error::io("read", input, e),
                        DecodeError::Corrupt(why) => {
                            bad(format!("{label} is corrupt at byte {done}: {why}"))
                        }
                    })?;
                sha.update(&segment);
                w.write_all(&segment)
                    .map_err(|e| Error::io("write", &dest, e))?;
                done += segment.len() as u64;
            }
        }
        let mut end = [0u8; 33];
        read(&mut r, &mut end, &format!("inside {label}"))?;
        if end[0] != b'E' {
            return Err(bad(format!("{label} is longer than it says (corrupt)")));
        }
        if end[1..] != sha.finalize()[..] {
            return Err(bad(format!(
                "the checksum of {label} does not match (corrupt)"
            )));
        }
        files.push(PackedFile { name, len });
        if model_tmp.is_none() {
            model_tmp = Some(tmp);
        } else {
            data.push((tmp, dest));
        }
    }
    let Some(model_tmp) = model_tmp else {
        return Err(bad("it holds no model (corrupt)".into()));
    };
    let written = Written {
        model_bytes: files[0].len,
        data_file: (data.len() == 1).then(|| (data[0].1.clone(), files[1].len)),
    };
    PreparedWrite::new(model_tmp, out, data, written).commit()?;
    dirs.0.clear();
    Ok(PackSummary { files, packed_len })
}

/// A reader or writer that checksums every byte it passes on.
struct Checksummed<T> {
    inner: T,
    crc: crc32fast::Hasher,
}

impl<T> Checksummed<T> {
    fn new(inner: T) -> Self {
        Checksummed {
            inner,
            crc: crc32fast::Hasher::new(),
        }
    }
}

impl<R: Read> Read for Checksummed<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }
}

impl<W: Write> Write for Checksummed<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Reads into `buf` until it is full or the input ends; how many bytes were read.
fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
