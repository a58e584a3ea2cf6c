//! A storage backend that reads the real store file and keeps every write in memory.
//!
//! Opening a redb file may write to it: recovery after a crash rebuilds the allocator
//! state and commits, an integrity check repairs what it can (falling back to the
//! previous commit when the last one fails its checksums), and the schema migration
//! commits. To look at a store with no chance of changing it, redb is given this backend:
//! reads come from the file, writes land in a copy-on-write map of 4 KiB blocks, and the
//! file is never written, truncated or synced. It serves
//! - the check that precedes every open (a damaged file is refused untouched);
//! - handles that only inspect: `serve --check`, `user list`, backups, and restore's
//!   check of a copy, which so see exactly what an open would see, migration included.
//!
//! Locks are the real file's (redb's own `FileBackend` on the same file takes them), so
//! an inspection excludes a server, and a server excludes an inspection, as an open does.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard, PoisonError};

use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};

/// Bytes per copy-on-write block.
const BLOCK: u64 = 4096;

/// The real file underneath, and the writes redb made, kept in memory.
pub(crate) struct Overlay {
    file: FileBackend,
    state: Mutex<State>,
}

struct State {
    /// The storage length redb sees.
    len: u64,
    /// How much of the real file is still visible: its length, lowered by every
    /// truncation redb asked for (bytes past it read as zero unless written).
    visible: u64,
    /// Written blocks by index; each is a full block.
    blocks: BTreeMap<u64, Box<[u8]>>,
}

impl Overlay {
    /// An overlay on `file` (redb's backend on the store file, opened for reading and
    /// writing only so that it can take redb's locks; it is never written).
    pub(crate) fn new(file: FileBackend) -> io::Result<Overlay> {
        let len = file.len()?;
        Ok(Overlay {
            file,
            state: Mutex::new(State {
                len,
                visible: len,
                blocks: BTreeMap::new(),
            }),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Fills `out` with block `index` as the real file has it (zeros past `visible`).
    fn read_base(&self, visible: u64, index: u64, out: &mut [u8]) -> io::Result<()> {
        out.fill(0);
        let start = index * BLOCK;
        if start < visible {
            let n = usize::try_from((visible - start).min(BLOCK)).unwrap_or(out.len());
            self.file.read(start, &mut out[..n])?;
        }
        Ok(())
    }
}

impl fmt::Debug for Overlay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state();
        f.debug_struct("Overlay")
            .field("len", &state.len)
            .field("written_blocks", &state.blocks.len())
            .finish()
    }
}

fn out_of_range() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        "read past the end of the storage",
    )
}

impl StorageBackend for Overlay {
    fn len(&self) -> Result<u64, io::Error> {
        Ok(self.state().len)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        let state = self.state();
        let end = offset
            .checked_add(out.len() as u64)
            .ok_or_else(out_of_range)?;
        if end > state.len {
            return Err(out_of_range());
        }
        let mut block = vec![0u8; BLOCK as usize];
        let mut at = offset;
        while at < end {
            let index = at / BLOCK;
            let within = (at % BLOCK) as usize;
            let n = ((BLOCK - at % BLOCK).min(end - at)) as usize;
            let dst = &mut out[(at - offset) as usize..][..n];
            match state.blocks.get(&index) {
                Some(written) => dst.copy_from_slice(&written[within..within + n]),
                None => {
                    self.read_base(state.visible, index, &mut block)?;
                    dst.copy_from_slice(&block[within..within + n]);
                }
            }
            at += n as u64;
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        let mut state = self.state();
        if len < state.len {
            state.visible = state.visible.min(len);
            // Drop whole blocks past the end; zero the tail of the one the end falls in,
            // so that growing again reads zeros there.
            let first_gone = len.div_ceil(BLOCK);
            state.blocks.split_off(&first_gone);
            if !len.is_multiple_of(BLOCK)
                && let Some(last) = state.blocks.get_mut(&(len / BLOCK))
            {
                last[(len % BLOCK) as usize..].fill(0);
            }
        }
        state.len = len;
        Ok(())
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        // Nothing reaches the file, so there is nothing to sync.
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        let mut state = self.state();
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or_else(out_of_range)?;
        let visible = state.visible;
        let mut at = offset;
        while at < end {
            let index = at / BLOCK;
            let within = (at % BLOCK) as usize;
            let n = ((BLOCK - at % BLOCK).min(end - at)) as usize;
            let block = match state.blocks.entry(index) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(e) => {
                    let mut block = vec![0u8; BLOCK as usize].into_boxed_slice();
                    self.read_base(visible, index, &mut block)?;
                    e.insert(block)
                }
            };
            block[within..within + n].copy_from_slice(&data[(at - offset) as usize..][..n]);
            at += n as u64;
        }
        state.len = state.len.max(end);
        Ok(())
    }

    fn close(&self) -> Result<(), io::Error> {
        self.file.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.file.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.file.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.file.query_lock_range(start, end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn overlay_on(bytes: &[u8]) -> (Overlay, std::path::PathBuf) {
        let path = std::env::temp_dir().join(format!(
            "latchkey-overlay-{}-{}",
            std::process::id(),
            bytes.len()
        ));
        let mut f = std::fs::File::create(&path).expect("create");
        f.write_all(bytes).expect("write");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .expect("open");
        let backend = FileBackend::new(file).expect("backend");
        (Overlay::new(backend).expect("overlay"), path)
    }

    #[test]
    fn writes_stay_in_memory_and_reads_see_them() {
        let original: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let (o, path) = overlay_on(&original);
        assert_eq!(o.len().unwrap(), 10_000);
        o.write(4090, &[9; 20]).unwrap();
        let mut out = vec![0; 40];
        o.read(4080, &mut out).unwrap();
        assert_eq!(&out[..10], &original[4080..4090]);
        assert_eq!(&out[10..30], &[9; 20]);
        assert_eq!(&out[30..], &original[4110..4120]);
        // Shrink, then grow: the cut part reads as zeros, the file is untouched.
        o.set_len(4095).unwrap();
        o.set_len(12_000).unwrap();
        let mut out = vec![1; 12_000];
        o.read(0, &mut out).unwrap();
        assert_eq!(&out[..4090], &original[..4090]);
        assert_eq!(&out[4090..4095], &[9; 5]);
        assert!(out[4095..].iter().all(|&b| b == 0));
        assert!(o.read(11_999, &mut [0; 2]).is_err(), "past the end");
        o.sync_data().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), original, "never written");
        let _ = std::fs::remove_file(path);
    }
}
