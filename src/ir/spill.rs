//! Large tensors that rewrites make, kept in a temporary file instead of on the heap.
//!
//! A rule's new initializer enters the graph through [`crate::rewrite::Patch::add_initializer`],
//! which hands its payload to [`spill`]: a payload of at least [`threshold`] bytes that the
//! tensor alone owns on the heap is written to one unnamed temporary file (created in the folder
//! [`set_dir`] names, else the system's temp folder; the kernel deletes it when the process
//! exits, however it exits) and replaced by a [`Bytes`] over a read-only map of its pages. Those
//! are page cache the kernel can write back and drop, not anonymous memory, so a rule that
//! rewrites every weight of a model larger than memory (quantize, cluster) holds one tensor at a
//! time on the heap; the writer streams the payloads out like those of a mapped input. When the
//! last slice of a spilled payload is dropped (a rewrite taken back), its range of the file is
//! freed (`FALLOC_FL_PUNCH_HOLE`). Payloads are never changed: the map gives back the very bytes.
//! Where the file cannot be made or written (a full disk), the payload stays on the heap.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

/// The default [`threshold`]: payloads from 1 MiB up are spilled.
pub const SPILL_FROM: u64 = 1 << 20;

struct Store {
    dir: Option<PathBuf>,
    threshold: u64,
    file: Option<(PathBuf, Arc<std::fs::File>)>,
    end: u64,
}

static STORE: Mutex<Store> = Mutex::new(Store {
    dir: None,
    threshold: SPILL_FROM,
    file: None,
    end: 0,
});

fn store() -> std::sync::MutexGuard<'static, Store> {
    STORE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Spills from now on go to a file in `dir` (the CLI passes the output's folder, which must have
/// room for the output anyway). Payloads spilled before stay where they are.
pub fn set_dir(dir: &Path) {
    let mut s = store();
    if s.dir.as_deref() != Some(dir) {
        s.dir = Some(dir.to_path_buf());
        s.file = None;
    }
}

/// The smallest payload, in bytes, that [`spill`] moves to the file.
pub fn threshold() -> u64 {
    store().threshold
}

/// Sets [`threshold`] (`u64::MAX`: nothing is spilled); returns the previous value.
pub fn set_threshold(bytes: u64) -> u64 {
    std::mem::replace(&mut store().threshold, bytes)
}

/// `data`, moved to the spill file when it is at least [`threshold`] bytes and owned by no one
/// else on the heap (a slice of a mapped input, or bytes shared with another tensor, are given
/// back as they are: spilling them would free nothing).
pub fn spill(data: Bytes) -> Bytes {
    if (data.len() as u64) < threshold() || data.is_empty() {
        return data;
    }
    let owned = match data.try_into_mut() {
        Ok(m) => m,
        Err(shared) => return shared,
    };
    match write_and_map(&owned) {
        Some(b) => b,
        None => owned.freeze(),
    }
}

#[cfg(unix)]
fn write_and_map(data: &[u8]) -> Option<Bytes> {
    use std::os::unix::fs::FileExt;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
    let (file, offset) = {
        let mut s = store();
        if s.file.is_none() {
            let dir = s.dir.clone().unwrap_or_else(std::env::temp_dir);
            let f = tempfile::tempfile_in(&dir).ok()?;
            s.file = Some((dir, Arc::new(f)));
            s.end = 0;
        }
        let file = s.file.as_ref()?.1.clone();
        let offset = s.end.div_ceil(page) * page;
        s.end = offset + data.len() as u64;
        (file, offset)
    };
    file.write_all_at(data, offset).ok()?;
    // SAFETY: the file is unnamed (no other process can open it) and this range of it is written
    // once, above, and never again: nothing changes the mapped bytes while the map lives.
    let map = unsafe {
        memmap2::MmapOptions::new()
            .offset(offset)
            .len(data.len())
            .map(&*file)
    }
    .ok()?;
    Some(Bytes::from_owner(Spilled { map, file, offset }))
}

#[cfg(not(unix))]
fn write_and_map(_: &[u8]) -> Option<Bytes> {
    None
}

/// One spilled payload: its map, and the file range to free when it is dropped.
#[cfg(unix)]
struct Spilled {
    map: memmap2::Mmap,
    file: Arc<std::fs::File>,
    offset: u64,
}

#[cfg(unix)]
impl AsRef<[u8]> for Spilled {
    fn as_ref(&self) -> &[u8] {
        &self.map
    }
}

#[cfg(unix)]
impl Drop for Spilled {
    fn drop(&mut self) {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            // SAFETY: plain syscall on a file this struct keeps open; the range is this
            // payload's own, which nothing reads once its last slice is dropped.
            unsafe {
                libc::fallocate(
                    self.file.as_raw_fd(),
                    libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                    self.offset as libc::off_t,
                    self.map.len() as libc::off_t,
                );
            }
        }
    }
}
