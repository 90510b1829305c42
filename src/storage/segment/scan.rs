//! A segment's bytes batch by batch, without indexes: the scan that recovery and index rebuilds
//! run, the header walk from an index entry to the batch of an offset, and the diagnosis of
//! damage (where it is, what is wrong with it, where the next whole batch after it starts).

use super::Segment;
use crate::record::{
    BATCH_HEADER_BYTES, BATCH_MAGIC, BatchHeader, Corruption, Frame, decode_frame,
};
use crate::storage::{Offset, Result, StorageError, index::OffsetEntry};
use std::fs::File;

impl Segment {
    /// The plausible batch header at `pos` (magic and length fit inside `end`), without a CRC
    /// check. `None` if there is none.
    pub(super) fn header_at(&self, pos: u64, end: u64) -> Result<Option<BatchHeader>> {
        let Some(map) = self.mapped()? else {
            return Ok(None);
        };
        let end = end.min(map.len() as u64) as usize;
        Ok(plausible_header(&map[..end], pos as usize))
    }

    /// Tells `f` of every batch header from `pos` to the readable end, by their lengths,
    /// without CRC checks (recovery checked what lies past its checkpoint, and what lies before
    /// it was checked when appended). Stops at the first implausible header.
    pub(crate) fn headers_from(&self, pos: u64, mut f: impl FnMut(&BatchHeader)) -> Result<()> {
        let Some(map) = self.mapped()? else {
            return Ok(());
        };
        let end = (self.readable_end() as usize).min(map.len());
        let mut pos = pos as usize;
        while let Some(h) = plausible_header(&map[..end], pos) {
            f(&h);
            pos += h.length as usize;
        }
        Ok(())
    }

    /// [`Segment::walk`], and a batch found holding `offset` past its base offset must pass its
    /// CRC check: a damaged record count would otherwise claim offsets of the batches after it.
    pub(super) fn walk_checked(
        &self,
        bytes: &[u8],
        offset: Offset,
        entry: Option<OffsetEntry>,
    ) -> Result<(usize, BatchHeader), Broken> {
        let (pos, h) = self.walk(bytes, offset, entry)?;
        if h.base_offset == offset || matches!(decode_frame(&bytes[pos..]), Frame::Batch(_)) {
            Ok((pos, h))
        } else {
            Err(Broken {
                at: pos,
                expected: h.base_offset,
                prev: None,
            })
        }
    }

    /// Walks batch headers from `entry` (or the segment's start) to the one holding `offset`.
    /// Each header must start at the offset after the one before: a header that does not, or
    /// bytes that are no header, break the walk rather than lead it astray.
    fn walk(
        &self,
        bytes: &[u8],
        offset: Offset,
        entry: Option<OffsetEntry>,
    ) -> Result<(usize, BatchHeader), Broken> {
        let (mut pos, mut expected) = entry.map_or((0, self.base_offset), |e| {
            (
                e.position as usize,
                self.base_offset + u64::from(e.rel_offset),
            )
        });
        let mut prev = None;
        loop {
            match plausible_header(bytes, pos) {
                Some(h) if h.base_offset == expected => {
                    if h.next_offset() > offset {
                        return Ok((pos, h));
                    }
                    prev = Some((pos, expected));
                    expected = h.next_offset();
                    pos += h.length as usize;
                }
                _ => {
                    return Err(Broken {
                        at: pos,
                        expected,
                        prev,
                    });
                }
            }
        }
    }

    /// The error for a walk that broke: the batch before the break when that one fails its
    /// checks (its own length or record count sent the walk astray), else the bytes at the break.
    /// The segment holds offsets below `next_offset`.
    pub(super) fn damage(&self, bytes: &[u8], broken: Broken, next_offset: Offset) -> StorageError {
        if let Some((prev, prev_offset)) = broken.prev
            && let Frame::Corrupt(reason) = decode_frame(&bytes[prev..])
        {
            return self.corrupt(bytes, prev, prev_offset, reason, next_offset);
        }
        let reason = match bytes.get(broken.at..).map(decode_frame) {
            Some(Frame::Corrupt(c)) => c,
            Some(Frame::Batch(b)) => Corruption::OutOfSequence {
                expected: broken.expected,
                found: Some(b.header().base_offset),
            },
            Some(Frame::Incomplete { needed }) => {
                Corruption::BadLength(needed.min(u32::MAX as usize) as u32)
            }
            Some(Frame::Zeroed) | None => Corruption::OutOfSequence {
                expected: broken.expected,
                found: None,
            },
        };
        self.corrupt(bytes, broken.at, broken.expected, reason, next_offset)
    }

    /// The error for damage at `pos` of `bytes`, where the batch of `offset` should be. The
    /// damage ends at the next whole batch after it (as a rebuilt index finds it), or else with
    /// the segment, whose offsets end below `next_offset`.
    fn corrupt(
        &self,
        bytes: &[u8],
        pos: usize,
        offset: Offset,
        reason: Corruption,
        next_offset: Offset,
    ) -> StorageError {
        let end = resync(bytes, pos + 1, offset + 1)
            .map_or(next_offset, |(_, h)| h.base_offset)
            .clamp(offset + 1, next_offset.max(offset + 1));
        StorageError::Corrupt {
            segment: self.path.clone(),
            position: pos as u64,
            offset,
            end,
            reason,
        }
    }
}

/// Where a walk of batch headers stopped short of the offset it looked for.
#[derive(Debug, Clone, Copy)]
pub(super) struct Broken {
    /// The position with no batch of the expected offset.
    pub(super) at: usize,
    /// The offset the batch there should start at.
    pub(super) expected: Offset,
    /// The batch walked over before (position, base offset), if any.
    pub(super) prev: Option<(usize, Offset)>,
}

/// What a recovery or rebuild scan found.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scan {
    /// One past the last whole batch indexed.
    pub end: u64,
    /// One past its last offset.
    pub next_offset: Offset,
    /// The scan stopped at zeroes or at the end of the bytes (not at damage).
    pub clean: bool,
}

/// One past the last byte of the first `len` bytes of `file` that is not in a hole (`len` if
/// the filesystem cannot tell). Every byte after it reads as zero.
pub(super) fn data_end(file: &File, len: u64) -> u64 {
    use rustix::fs::{SeekFrom, seek};
    let mut end = 0;
    let mut at = 0;
    while at < len {
        let data = match seek(file, SeekFrom::Data(at)) {
            Ok(data) => data,
            // No data at or after `at`.
            Err(e) if e == rustix::io::Errno::NXIO => break,
            Err(_) => return len,
        };
        let Ok(hole) = seek(file, SeekFrom::Hole(data)) else {
            return len;
        };
        end = hole.min(len);
        at = hole;
    }
    end
}

/// The header at `pos` if its magic is right and its length fits in `bytes`; no CRC check.
pub(super) fn plausible_header(bytes: &[u8], pos: usize) -> Option<BatchHeader> {
    let b = bytes.get(pos..)?;
    let h = BatchHeader::parse(b)?;
    let magic = u32::from_le_bytes([b[8], b[9], b[10], b[11]]);
    let len = h.length as usize;
    (magic == BATCH_MAGIC && len >= BATCH_HEADER_BYTES && len <= b.len() && h.record_count > 0)
        .then_some(h)
}

/// What a scan found, in order.
#[derive(Debug, Clone, Copy)]
pub(super) enum Scanned<'a> {
    /// A whole, CRC-checked batch of `len` bytes at `position`.
    Batch {
        header: &'a BatchHeader,
        position: u64,
        len: u64,
    },
    /// Damaged bytes were skipped; the next batch follows a gap.
    Gap,
}

/// Tells `found` of the whole, CRC-checked batches of `bytes` from `pos`, each at the offset after the
/// one before, starting with `next_offset`. Stops at zeroes, at the end of `bytes`, or at the
/// first byte that is no such batch; with `past_damage`, it skips damage (and zeroes followed by
/// more data) to the next whole batch with a later offset, and indexes on from there.
pub(super) fn scan_batches(
    bytes: &[u8],
    mut pos: usize,
    mut next_offset: Offset,
    past_damage: bool,
    mut found: impl FnMut(Scanned<'_>),
) -> Scan {
    let mut end = pos;
    loop {
        let rest = bytes.get(pos..).unwrap_or_default();
        let stop = match decode_frame(rest) {
            Frame::Batch(b) if b.header().base_offset == next_offset => {
                let len = b.bytes().len();
                found(Scanned::Batch {
                    header: b.header(),
                    position: pos as u64,
                    len: len as u64,
                });
                pos += len;
                end = pos;
                next_offset = b.header().next_offset();
                continue;
            }
            _ if rest.is_empty() => true,
            Frame::Zeroed if !past_damage || rest.iter().all(|&b| b == 0) => true,
            _ => false,
        };
        if stop {
            return Scan {
                end: end as u64,
                next_offset,
                clean: true,
            };
        }
        match past_damage
            .then(|| resync(bytes, pos + 1, next_offset))
            .flatten()
        {
            Some((at, h)) => {
                found(Scanned::Gap);
                pos = at;
                next_offset = h.base_offset;
            }
            None => {
                return Scan {
                    end: end as u64,
                    next_offset,
                    clean: false,
                };
            }
        }
    }
}

/// The first whole batch at or after `from` whose base offset is at least `next_offset`: where
/// a scan carries on after damage.
fn resync(bytes: &[u8], from: usize, next_offset: Offset) -> Option<(usize, BatchHeader)> {
    let magic = BATCH_MAGIC.to_le_bytes();
    let mut at = from;
    loop {
        let found = bytes.get(at + 8..)?.windows(4).position(|w| w == magic)?;
        at += found;
        if let Frame::Batch(b) = decode_frame(&bytes[at..])
            && b.header().base_offset >= next_offset
        {
            return Some((at, *b.header()));
        }
        at += 1;
    }
}
