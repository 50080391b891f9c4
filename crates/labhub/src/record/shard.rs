//! Shards of the frames array, in the Zarr sharding codec's format with the index first:
//! `frames` pairs of little-endian u64 `(offset, nbytes)` (`u64::MAX` twice for an empty
//! chunk), the CRC32C of those bytes (little-endian u32), then the chunks. The recorder starts
//! the first chunk at [`DATA_START`] and every chunk at a multiple of [`CHUNK_ALIGN`] (the
//! format allows any offsets), so every frame starts aligned in the file as in a slot.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::{RecordingError, io};

/// Offset of the first chunk the recorder writes (one page: the index fits before it).
pub(crate) const DATA_START: u64 = 4096;
/// Alignment of every chunk the recorder writes.
pub(crate) const CHUNK_ALIGN: u64 = 64;

/// Bytes of the index of a shard of `frames` chunks.
pub(crate) fn index_len(frames: u64) -> u64 {
    frames * 16 + 4
}

/// The index bytes for `chunks` (`(offset, nbytes)`, `None` for an empty chunk) of a shard of
/// `frames` chunks.
pub(crate) fn encode_index(chunks: &[(u64, u64)], frames: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(index_len(frames) as usize);
    for i in 0..frames as usize {
        let (o, n) = chunks.get(i).copied().unwrap_or((u64::MAX, u64::MAX));
        v.extend_from_slice(&o.to_le_bytes());
        v.extend_from_slice(&n.to_le_bytes());
    }
    let crc = crc32c::crc32c(&v);
    v.extend_from_slice(&crc.to_le_bytes());
    v
}

/// Reads and checks the index of shard file `file` (of `file_len` bytes) holding `frames`
/// chunks of exactly `chunk_bytes` each: `None` for an empty chunk, else its offset. Every
/// offset lies inside the file.
pub(crate) fn read_index(
    file: &File,
    path: &Path,
    file_len: u64,
    frames: u64,
    chunk_bytes: u64,
) -> Result<Vec<Option<u64>>, RecordingError> {
    let invalid = |problem: String| RecordingError::Invalid {
        path: path.to_owned(),
        field: "shard index",
        problem,
    };
    let len = index_len(frames);
    if file_len < len {
        return Err(invalid(format!(
            "the file has {file_len} bytes, its index needs {len}"
        )));
    }
    let mut buf = vec![0u8; len as usize];
    file.read_exact_at(&mut buf, 0).map_err(io(path, "read"))?;
    let (pairs, crc) = buf.split_at(len as usize - 4);
    let stored = u32::from_le_bytes(crc.try_into().unwrap_or_default());
    if crc32c::crc32c(pairs) != stored {
        return Err(invalid("its CRC32C does not match".into()));
    }
    pairs
        .chunks_exact(16)
        .enumerate()
        .map(|(i, p)| {
            let offset = u64::from_le_bytes(p[..8].try_into().unwrap_or_default());
            let nbytes = u64::from_le_bytes(p[8..].try_into().unwrap_or_default());
            if offset == u64::MAX && nbytes == u64::MAX {
                return Ok(None);
            }
            if nbytes != chunk_bytes {
                return Err(invalid(format!(
                    "chunk {i} has {nbytes} bytes, a frame {chunk_bytes}"
                )));
            }
            match offset.checked_add(nbytes) {
                Some(end) if offset >= len && end <= file_len => Ok(Some(offset)),
                _ => Err(invalid(format!(
                    "chunk {i} at {offset}+{nbytes} lies outside the file of {file_len} bytes"
                ))),
            }
        })
        .collect()
}

/// The shard being written: chunks appended through a buffer, the index rewritten in place.
pub(crate) struct ShardWriter {
    path: PathBuf,
    out: BufWriter<File>,
    frames: u64,
    chunks: Vec<(u64, u64)>,
    end: u64,
}

impl ShardWriter {
    /// Creates shard file `path` for `frames` chunks, with an empty index.
    pub(crate) fn create(path: PathBuf, frames: u64) -> Result<Self, RecordingError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io(dir, "create"))?;
        }
        let file = File::create(&path).map_err(io(&path, "create"))?;
        let index = encode_index(&[], frames);
        file.write_all_at(&index, 0).map_err(io(&path, "write"))?;
        let end = DATA_START;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        // Chunks start one page in (the bytes between the index and it are a hole).
        std::io::Seek::seek(&mut out, std::io::SeekFrom::Start(end)).map_err(io(&path, "seek"))?;
        Ok(Self {
            path,
            out,
            frames,
            chunks: Vec::with_capacity(frames as usize),
            end,
        })
    }

    /// Chunks written.
    pub(crate) fn len(&self) -> u64 {
        self.chunks.len() as u64
    }

    /// Whether every chunk of the shard is written.
    pub(crate) fn is_full(&self) -> bool {
        self.len() >= self.frames
    }

    /// Appends one chunk (one frame, padded to the largest shape).
    pub(crate) fn append(&mut self, bytes: &[u8]) -> Result<(), RecordingError> {
        let pad = self.end.next_multiple_of(CHUNK_ALIGN) - self.end;
        if pad > 0 {
            self.out
                .write_all(&[0u8; CHUNK_ALIGN as usize][..pad as usize])
                .map_err(io(&self.path, "write"))?;
            self.end += pad;
        }
        self.out.write_all(bytes).map_err(io(&self.path, "write"))?;
        self.chunks.push((self.end, bytes.len() as u64));
        self.end += bytes.len() as u64;
        Ok(())
    }

    /// Writes the buffered chunks, then the index naming them (one `pwrite` of at most one
    /// page, never cut short by a signal).
    pub(crate) fn flush(&mut self) -> Result<(), RecordingError> {
        self.out.flush().map_err(io(&self.path, "write"))?;
        let index = encode_index(&self.chunks, self.frames);
        self.out
            .get_ref()
            .write_all_at(&index, 0)
            .map_err(io(&self.path, "write"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_index_fits_one_page_and_round_trips() {
        assert!(index_len(super::super::MAX_FRAMES_PER_SHARD) <= 4096);
        let dir = std::env::temp_dir().join(format!("labhub-shard-{}", std::process::id()));
        let path = dir.join("c/0/0");
        let mut w = ShardWriter::create(path.clone(), 3).unwrap();
        w.append(&[1, 2, 3, 4]).unwrap();
        w.append(&[5, 6, 7, 8]).unwrap();
        w.flush().unwrap();
        let f = File::open(&path).unwrap();
        let len = f.metadata().unwrap().len();
        let index = read_index(&f, &path, len, 3, 4).unwrap();
        assert_eq!(index, [Some(4096), Some(4160), None]);
        // A flipped byte is caught by the checksum.
        let rw = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        rw.write_all_at(&[9], 3).unwrap();
        assert!(read_index(&f, &path, len, 3, 4).is_err());
        let _ = std::fs::remove_dir_all(dir);
    }
}
