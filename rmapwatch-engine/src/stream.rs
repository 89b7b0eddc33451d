//! `rmapwatch.stream/1`: the engine's inputs as bytes, for recordings and
//! for the live link to a remote agent (a phone over adb). Specified in
//! `docs/stream-format.md`; in short:
//!
//! - a header: magic, version, length, CRC-32, then JSON (tool, ABI
//!   version, endianness, the measured machine's facts and clocks);
//! - blocks: magic, compressed and raw lengths, codec, CRC-32, then the
//!   LZ4-compressed messages. Every block decodes on its own (delta state
//!   restarts), so a damaged or truncated stream replays up to the damage,
//!   and the error says at which byte offset;
//! - the last block holds the [`Input::End`] message.
//!
//! Everything hostile input could make large is bounded before it is
//! allocated: header and block lengths, element counts (by the bytes
//! left), strings.
use std::io::{Read, Write};

use rmapwatch_common::{COMM_LEN, object, site};
use serde::{Deserialize, Serialize};

use crate::{
    event::{Comm, Event, Slab},
    facts::Facts,
    input::{Input, Nanos, Request},
    snapshot::Vma,
};

/// The first eight bytes of every stream.
pub const MAGIC: &[u8; 8] = b"RMAPWTCH";
/// The first four bytes of every block.
pub const BLOCK_MAGIC: &[u8; 4] = b"RMWB";
/// The format this module writes (major, minor). Readers refuse another
/// major version; a newer minor version only adds message kinds, which
/// older readers skip, and facts at the end of a VMA's facts, which older
/// readers skip too. 1.1: parents in walks; 1.2: each VMA's `vm_pgoff` and
/// pagemap's anonymous pages; 1.3: timing events (lock waits, fork times,
/// rmap walks) in messages of their own.
pub const VERSION: (u16, u16) = (1, 3);
/// The format's name, in the header.
pub const FORMAT: &str = "rmapwatch.stream/1";
/// Largest header.
pub const MAX_HEADER: u32 = 1 << 20;
/// Largest compressed block payload.
pub const MAX_BLOCK: u32 = 8 << 20;
/// Largest uncompressed block payload (writers close blocks at 256 KiB and
/// a message is at most a batch of 1,024 VMAs).
pub const MAX_RAW: u32 = 8 << 20;
/// Elements reserved ahead of decoding them: more grow as they come (a
/// count is only checked against the bytes left, which would let a hostile
/// block reserve ten times its size).
const PREALLOC: usize = 4096;
/// A block is written once this many raw bytes are buffered (or when the
/// writer is flushed).
pub const BLOCK_BYTES: usize = 256 << 10;

const HEADER_FIXED: usize = 8 + 2 + 2 + 4 + 4;
const BLOCK_HEADER: usize = 4 + 4 + 4 + 1 + 3 + 4;

/// What a stream carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A source's inputs (a recording, or an agent's stdout).
    Inputs,
    /// Requests to a source (an agent's stdin).
    Requests,
}

/// The header's JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Header {
    /// [`FORMAT`].
    pub format: String,
    /// What follows.
    pub kind: Kind,
    /// The tool that wrote it.
    pub tool: String,
    /// `rmapwatch_common::ABI_VERSION` of the programs that measured.
    pub abi: u32,
    /// The measured machine (inputs streams only).
    pub facts: Option<Facts>,
}

/// Why a stream cannot be read (further).
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// Nothing at all.
    #[error("the file is empty: not a rmapwatch recording")]
    Empty,
    /// Not a rmapwatch stream.
    #[error("not a rmapwatch recording (no rmapwatch.stream header at byte 0)")]
    NotOurs,
    /// Another major version.
    #[error(
        "a rmapwatch.stream/{0}.{1} recording: this rmapwatch reads version 1 (use the \
         rmapwatch that wrote it)"
    )]
    Version(u16, u16),
    /// A stream of another kind than expected.
    #[error("a stream of {0:?}, expected {1:?}")]
    WrongKind(Kind, Kind),
    /// The data ends inside a header or block.
    #[error("truncated at byte {0}: the data ends inside a block (the writer was stopped?)")]
    Truncated(u64),
    /// The data ends between blocks without the end message.
    #[error(
        "cut short at byte {0}: the stream ends without its end message (the recorder was \
         killed, or the link dropped)"
    )]
    NoEnd(u64),
    /// A header or block is damaged.
    #[error("damaged at byte {offset}: {what}")]
    Corrupt {
        /// Where the damaged header or block starts.
        offset: u64,
        /// What is wrong.
        what: String,
    },
    /// Reading failed.
    #[error("reading at byte {offset}: {source}")]
    Io {
        /// Where.
        offset: u64,
        /// The error.
        source: std::io::Error,
    },
}

impl StreamError {
    /// The byte offset of the damage, if the error has one.
    #[must_use]
    pub fn offset(&self) -> Option<u64> {
        match self {
            Self::Truncated(o) | Self::NoEnd(o) => Some(*o),
            Self::Corrupt { offset, .. } | Self::Io { offset, .. } => Some(*offset),
            _ => None,
        }
    }
}

mod tag {
    pub const EVENTS: u8 = 1;
    pub const WALK_BEGIN: u8 = 2;
    pub const WALK_VMAS: u8 = 3;
    pub const WALK_END: u8 = 4;
    pub const COUNTERS: u8 = 5;
    pub const RMAP: u8 = 6;
    pub const NAMES: u8 = 7;
    pub const MAP_PATHS: u8 = 8;
    pub const SLAB: u8 = 9;
    pub const NOTICE: u8 = 10;
    pub const TICK: u8 = 11;
    pub const END: u8 = 12;
    pub const REQUEST: u8 = 20;
    /// Messages from tag 64 on carry a length: a reader that does not
    /// know one skips it (newer minor versions).
    pub const FIRST_SKIPPABLE: u8 = 64;
    /// 1.1: a walk's VMAs with each new process's parent, and room after
    /// each VMA for more of its facts (`WALK_VMAS` stays readable).
    pub const WALK_VMAS_EXT: u8 = 64;
    /// 1.3: timing events, in order with the `EVENTS` around them.
    pub const TIMES: u8 = 65;
}

/// Delta state, restarted at every block.
#[derive(Clone, Copy, Debug, Default)]
struct Deltas {
    tgid: u32,
    ptr: [u64; object::COUNT],
    vma_tgid: u32,
    mm: u64,
    addr: u64,
    start: u64,
    anon_vma: u64,
    avc: u64,
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)).cast_unsigned()
}

fn unzigzag(v: u64) -> i64 {
    (v >> 1).cast_signed() ^ -((v & 1).cast_signed())
}

fn put_delta(out: &mut Vec<u8>, prev: &mut u64, v: u64) {
    put_varint(out, zigzag(v.wrapping_sub(*prev).cast_signed()));
    *prev = v;
}

fn put_delta32(out: &mut Vec<u8>, prev: &mut u32, v: u32) {
    put_varint(out, zigzag(i64::from(v) - i64::from(*prev)));
    *prev = v;
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// Messages into a block's raw bytes.
#[derive(Debug, Default)]
struct Encoder {
    raw: Vec<u8>,
    d: Deltas,
}

impl Encoder {
    fn json<T: Serialize>(&mut self, tag: u8, v: &T) {
        self.raw.push(tag);
        let body = serde_json::to_vec(v).unwrap_or_default();
        put_bytes(&mut self.raw, &body);
    }

    fn event(&mut self, e: &Event) {
        let out = &mut self.raw;
        let d = &mut self.d;
        match e {
            Event::Alloc(s) | Event::Free(s) => {
                let kind = if matches!(e, Event::Alloc(_)) { 1 } else { 2 };
                out.push(
                    kind | ((s.object as u8 & 1) << 3)
                        | ((s.site as u8 & 7) << 4)
                        | (u8::from(s.in_fork) << 7),
                );
                put_delta32(out, &mut d.tgid, s.tgid);
                put_varint(out, zigzag(i64::from(s.tid) - i64::from(s.tgid)));
                put_delta(out, &mut d.ptr[s.object as usize & 1], s.ptr);
            }
            Event::Fork {
                tid,
                tgid,
                child_tid,
                child_tgid,
                comm,
            } => {
                out.push(3);
                put_delta32(out, &mut d.tgid, *tgid);
                put_varint(out, zigzag(i64::from(*tid) - i64::from(*tgid)));
                put_varint(out, zigzag(i64::from(*child_tgid) - i64::from(*tgid)));
                put_varint(out, zigzag(i64::from(*child_tid) - i64::from(*child_tgid)));
                put_bytes(out, comm.bytes());
            }
            Event::Exec { tid, tgid, comm } | Event::Exit { tid, tgid, comm } => {
                out.push(if matches!(e, Event::Exec { .. }) {
                    4
                } else {
                    5
                });
                put_delta32(out, &mut d.tgid, *tgid);
                put_varint(out, zigzag(i64::from(*tid) - i64::from(*tgid)));
                put_bytes(out, comm.bytes());
            }
            // In `TIMES` messages (see `input`).
            Event::LockWait(_)
            | Event::ForkTime { .. }
            | Event::ForkWork { .. }
            | Event::RmapWalk { .. } => {}
        }
    }

    /// A run of timing events: `TIMES`, its length, then the time, the
    /// count and each (a kind byte, the ids, then its numbers).
    fn times(&mut self, t: Nanos, run: &[Event]) {
        let mut body = Vec::with_capacity(8 + run.len() * 12);
        put_varint(&mut body, t);
        put_varint(&mut body, run.len() as u64);
        for e in run {
            let (kind, tid, tgid, nums): (u8, u32, u32, [u64; 4]) = match *e {
                Event::LockWait(w) => (
                    6,
                    w.tid,
                    w.tgid,
                    [
                        w.anon_vma,
                        u64::from(w.flags),
                        w.wait_ns,
                        u64::from(w.holder),
                    ],
                ),
                Event::ForkTime {
                    tid,
                    tgid,
                    child,
                    ns,
                } => (7, tid, tgid, [u64::from(child), ns, 0, 0]),
                Event::ForkWork {
                    tid,
                    tgid,
                    dup_mmap_ns,
                    anon_ns,
                    anon_calls,
                } => (
                    8,
                    tid,
                    tgid,
                    [dup_mmap_ns, anon_ns, u64::from(anon_calls), 0],
                ),
                Event::RmapWalk {
                    tid,
                    tgid,
                    anon_vma,
                    rmap_one,
                } => (9, tid, tgid, [anon_vma, rmap_one, 0, 0]),
                _ => continue,
            };
            body.push(kind);
            put_varint(&mut body, u64::from(tgid));
            put_varint(&mut body, zigzag(i64::from(tid) - i64::from(tgid)));
            for n in nums {
                put_varint(&mut body, n);
            }
        }
        self.raw.push(tag::TIMES);
        put_bytes(&mut self.raw, &body);
    }

    fn vma(&mut self, v: &Vma) {
        let out = &mut self.raw;
        let d = &mut self.d;
        put_delta32(out, &mut d.vma_tgid, v.tgid);
        put_delta(out, &mut d.mm, v.mm);
        put_delta(out, &mut d.addr, v.addr);
        put_delta(out, &mut d.start, v.start);
        put_varint(out, v.end.wrapping_sub(v.start));
        put_varint(out, v.flags);
        out.push(u8::from(v.file) | (u8::from(v.chain_truncated) << 1));
        put_delta(out, &mut d.anon_vma, v.anon_vma);
        put_varint(
            out,
            zigzag(v.av_root.wrapping_sub(v.anon_vma).cast_signed()),
        );
        put_varint(
            out,
            zigzag(v.av_parent.wrapping_sub(v.anon_vma).cast_signed()),
        );
        put_varint(out, v.av_num_children);
        put_varint(out, u64::from(v.av_refcount));
        put_varint(out, v.chain.len() as u64);
        for &(avc, av) in &v.chain {
            put_delta(out, &mut d.avc, avc);
            put_varint(out, zigzag(av.wrapping_sub(v.anon_vma).cast_signed()));
        }
    }

    fn input(&mut self, input: &Input) {
        match input {
            Input::Facts(_) => {} // in the header
            Input::Events { t, events } => {
                // Runs of timing events go in messages older readers skip.
                let mut rest: &[Event] = events;
                loop {
                    let timing = rest.first().is_some_and(Event::is_timing);
                    let n = rest
                        .iter()
                        .position(|e| e.is_timing() != timing)
                        .unwrap_or(rest.len());
                    let (run, after) = rest.split_at(n);
                    if timing {
                        self.times(*t, run);
                    } else {
                        self.raw.push(tag::EVENTS);
                        put_varint(&mut self.raw, *t);
                        put_varint(&mut self.raw, run.len() as u64);
                        for e in run {
                            self.event(e);
                        }
                    }
                    rest = after;
                    if rest.is_empty() {
                        break;
                    }
                }
            }
            Input::WalkBegin { t } => {
                self.raw.push(tag::WALK_BEGIN);
                put_varint(&mut self.raw, *t);
            }
            Input::WalkVmas {
                comms,
                parents,
                vmas,
            } => {
                // The body after its length, built in place: the delta
                // state runs on through it as through any message.
                self.raw.push(tag::WALK_VMAS_EXT);
                let outer = std::mem::take(&mut self.raw);
                put_varint(&mut self.raw, comms.len() as u64);
                for (pid, comm) in comms {
                    put_varint(&mut self.raw, u64::from(*pid));
                    put_bytes(&mut self.raw, comm.as_bytes());
                    let ppid = parents
                        .iter()
                        .find(|(p, _)| p == pid)
                        .map_or(0, |&(_, pp)| pp);
                    put_varint(&mut self.raw, u64::from(ppid));
                }
                put_varint(&mut self.raw, vmas.len() as u64);
                for v in vmas {
                    self.vma(v);
                    let mut facts = Vec::new();
                    put_vma_facts(&mut facts, v);
                    put_bytes(&mut self.raw, &facts);
                }
                let body = std::mem::replace(&mut self.raw, outer);
                put_bytes(&mut self.raw, &body);
            }
            Input::WalkEnd { t, counts, error } => self.json(
                tag::WALK_END,
                &WalkEndJson {
                    t: *t,
                    counts: *counts,
                    error: error.clone(),
                },
            ),
            Input::Counters { t, counters } => {
                self.json(tag::COUNTERS, &TimedJson { t: *t, v: counters })
            }
            Input::Rmap(u) => self.json(tag::RMAP, u),
            Input::Names(n) => self.json(tag::NAMES, n),
            Input::MapPaths { pid, paths } => self.json(
                tag::MAP_PATHS,
                &MapPathsJson {
                    pid: *pid,
                    paths: paths.clone(),
                },
            ),
            Input::Slab(s) => self.json(tag::SLAB, s),
            Input::Notice(n) => self.json(tag::NOTICE, n),
            Input::Tick { t } => {
                self.raw.push(tag::TICK);
                put_varint(&mut self.raw, *t);
            }
            Input::End { t, reason } => self.json(tag::END, &TimedJson { t: *t, v: reason }),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct WalkEndJson {
    t: Nanos,
    counts: crate::snapshot::WalkCounts,
    error: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct TimedJson<T> {
    t: Nanos,
    v: T,
}

#[derive(Serialize, Deserialize)]
struct MapPathsJson {
    pid: u32,
    paths: Vec<(u64, String)>,
}

/// Writes a stream: the header at once, then inputs (or requests) in
/// blocks.
pub struct Writer<W: Write> {
    out: W,
    enc: Encoder,
    block_bytes: usize,
    compress: bool,
    /// Bytes written so far.
    pub written: u64,
    /// Inputs (or requests) written so far.
    pub messages: u64,
}

impl<W: Write> Writer<W> {
    /// A stream of `kind` into `out`; `facts` for an inputs stream.
    ///
    /// # Errors
    /// Writing the header fails.
    pub fn new(mut out: W, kind: Kind, tool: &str, facts: Option<&Facts>) -> std::io::Result<Self> {
        let header = Header {
            format: FORMAT.to_owned(),
            kind,
            tool: tool.to_owned(),
            abi: rmapwatch_common::ABI_VERSION,
            facts: facts.cloned(),
        };
        let json = serde_json::to_vec(&header).map_err(std::io::Error::other)?;
        let mut h = Vec::with_capacity(HEADER_FIXED + json.len());
        h.extend_from_slice(MAGIC);
        h.extend_from_slice(&VERSION.0.to_le_bytes());
        h.extend_from_slice(&VERSION.1.to_le_bytes());
        h.extend_from_slice(&u32::try_from(json.len()).unwrap_or(u32::MAX).to_le_bytes());
        h.extend_from_slice(&crc32fast::hash(&json).to_le_bytes());
        h.extend_from_slice(&json);
        out.write_all(&h)?;
        Ok(Self {
            out,
            enc: Encoder::default(),
            block_bytes: BLOCK_BYTES,
            compress: true,
            written: h.len() as u64,
            messages: 0,
        })
    }

    /// Writes a block once this many raw bytes are buffered.
    #[must_use]
    pub fn with_block_bytes(mut self, n: usize) -> Self {
        self.block_bytes = n.clamp(1, MAX_RAW as usize / 2);
        self
    }

    /// Writes blocks uncompressed (codec 0): for reading them with a hex
    /// dump, and for fuzzing seeds.
    #[must_use]
    pub fn uncompressed(mut self) -> Self {
        self.compress = false;
        self
    }

    /// Buffers one input; writes a block when enough is buffered, and
    /// after the end message.
    ///
    /// # Errors
    /// Writing a block fails.
    pub fn input(&mut self, input: &Input) -> std::io::Result<()> {
        self.enc.input(input);
        self.messages += 1;
        if self.enc.raw.len() >= self.block_bytes || matches!(input, Input::End { .. }) {
            self.flush()?;
        }
        Ok(())
    }

    /// Buffers one request.
    ///
    /// # Errors
    /// Writing a block fails.
    pub fn request(&mut self, r: &Request) -> std::io::Result<()> {
        self.enc.json(tag::REQUEST, r);
        self.messages += 1;
        if self.enc.raw.len() >= self.block_bytes {
            self.flush()?;
        }
        Ok(())
    }

    /// Raw bytes waiting for the next block.
    #[must_use]
    pub fn buffered(&self) -> usize {
        self.enc.raw.len()
    }

    /// Writes what is buffered as a block, and flushes the output.
    ///
    /// # Errors
    /// Writing fails.
    pub fn flush(&mut self) -> std::io::Result<()> {
        if !self.enc.raw.is_empty() {
            let payload = if self.compress {
                lz4_flex::block::compress(&self.enc.raw)
            } else {
                self.enc.raw.clone()
            };
            let mut h = [0u8; BLOCK_HEADER];
            h[..4].copy_from_slice(BLOCK_MAGIC);
            h[4..8].copy_from_slice(
                &u32::try_from(payload.len())
                    .unwrap_or(u32::MAX)
                    .to_le_bytes(),
            );
            h[8..12].copy_from_slice(
                &u32::try_from(self.enc.raw.len())
                    .unwrap_or(u32::MAX)
                    .to_le_bytes(),
            );
            h[12] = u8::from(self.compress); // 1: LZ4 block, 0: none
            let mut crc = crc32fast::Hasher::new();
            crc.update(&h[4..16]);
            crc.update(&payload);
            h[16..20].copy_from_slice(&crc.finalize().to_le_bytes());
            self.out.write_all(&h)?;
            self.out.write_all(&payload)?;
            self.written += (h.len() + payload.len()) as u64;
            self.enc.raw.clear();
            self.enc.d = Deltas::default();
        }
        self.out.flush()
    }

    /// The output back.
    pub fn into_inner(self) -> W {
        self.out
    }
}

/// Reads bytes of a block's payload, bounded.
struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn left(&self) -> usize {
        self.b.len() - self.at
    }

    fn u8(&mut self) -> Result<u8, String> {
        let v = *self.b.get(self.at).ok_or("a message runs past its block")?;
        self.at += 1;
        Ok(v)
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("a number longer than 64 bits".into())
    }

    fn u32(&mut self) -> Result<u32, String> {
        u32::try_from(self.varint()?).map_err(|_| "a 32-bit field out of range".to_owned())
    }

    fn delta(&mut self, prev: &mut u64) -> Result<u64, String> {
        let v = prev.wrapping_add(unzigzag(self.varint()?).cast_unsigned());
        *prev = v;
        Ok(v)
    }

    fn delta32(&mut self, prev: &mut u32) -> Result<u32, String> {
        let v = self.rel32(*prev)?;
        *prev = v;
        Ok(v)
    }

    fn rel32(&mut self, base: u32) -> Result<u32, String> {
        i64::from(base)
            .checked_add(unzigzag(self.varint()?))
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| "a pid out of range".to_owned())
    }

    fn bytes(&mut self) -> Result<&[u8], String> {
        let n = usize::try_from(self.varint()?).map_err(|_| "a length out of range")?;
        if n > self.left() {
            return Err("a string runs past its block".into());
        }
        let s = &self.b[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }

    /// A count of elements of at least `min` bytes each: never more than
    /// the bytes left allow (so that no hostile count allocates).
    fn count(&mut self, min: usize) -> Result<usize, String> {
        let n = usize::try_from(self.varint()?).map_err(|_| "a count out of range")?;
        if n.saturating_mul(min) > self.left() {
            return Err(format!("a count of {n} that the block cannot hold"));
        }
        Ok(n)
    }

    fn comm(&mut self) -> Result<Comm, String> {
        let b = self.bytes()?;
        if b.len() > COMM_LEN {
            return Err("a process name longer than 16 bytes".into());
        }
        let mut c = [0u8; COMM_LEN];
        c[..b.len()].copy_from_slice(b);
        Ok(Comm(c))
    }

    fn json<T: for<'de> Deserialize<'de>>(&mut self) -> Result<T, String> {
        let b = self.bytes()?;
        serde_json::from_slice(b).map_err(|e| format!("a malformed message: {e}"))
    }
}

fn decode_event(c: &mut Cursor<'_>, d: &mut Deltas) -> Result<Event, String> {
    let head = c.u8()?;
    Ok(match head & 7 {
        k @ (1 | 2) => {
            let object = u32::from((head >> 3) & 1);
            let site_id = u32::from((head >> 4) & 7);
            if site_id as usize >= site::COUNT {
                return Err(format!("an event at unknown site {site_id}"));
            }
            let tgid = c.delta32(&mut d.tgid)?;
            let tid = c.rel32(tgid)?;
            let ptr = c.delta(&mut d.ptr[object as usize])?;
            let s = Slab {
                object,
                site: site_id,
                in_fork: head & 0x80 != 0,
                tid,
                tgid,
                ptr,
            };
            if k == 1 {
                Event::Alloc(s)
            } else {
                Event::Free(s)
            }
        }
        3 => {
            let tgid = c.delta32(&mut d.tgid)?;
            let tid = c.rel32(tgid)?;
            let child_tgid = c.rel32(tgid)?;
            let child_tid = c.rel32(child_tgid)?;
            Event::Fork {
                tid,
                tgid,
                child_tid,
                child_tgid,
                comm: c.comm()?,
            }
        }
        k @ (4 | 5) => {
            let tgid = c.delta32(&mut d.tgid)?;
            let tid = c.rel32(tgid)?;
            let comm = c.comm()?;
            if k == 4 {
                Event::Exec { tid, tgid, comm }
            } else {
                Event::Exit { tid, tgid, comm }
            }
        }
        k => return Err(format!("an event of unknown kind {k}")),
    })
}

fn decode_times(c: &mut Cursor<'_>) -> Result<Input, String> {
    let t = c.varint()?;
    let n = c.count(7)?;
    let mut events = Vec::with_capacity(n.min(PREALLOC));
    for _ in 0..n {
        let kind = c.u8()?;
        let tgid = c.u32()?;
        let tid = c.rel32(tgid)?;
        let mut nums = [0u64; 4];
        for v in &mut nums {
            *v = c.varint()?;
        }
        let u32_of = |v: u64| u32::try_from(v).map_err(|_| "a 32-bit field out of range");
        events.push(match kind {
            6 => Event::LockWait(crate::event::LockWait {
                tid,
                tgid,
                anon_vma: nums[0],
                flags: u32_of(nums[1])?,
                wait_ns: nums[2],
                // 0 (unknown) in streams before ABI 7.
                holder: u32_of(nums[3])?,
            }),
            7 => Event::ForkTime {
                tid,
                tgid,
                child: u32_of(nums[0])?,
                ns: nums[1],
            },
            8 => Event::ForkWork {
                tid,
                tgid,
                dup_mmap_ns: nums[0],
                anon_ns: nums[1],
                anon_calls: u32_of(nums[2])?,
            },
            9 => Event::RmapWalk {
                tid,
                tgid,
                anon_vma: nums[0],
                rmap_one: nums[1],
            },
            k => return Err(format!("a timing event of unknown kind {k}")),
        });
    }
    Ok(Input::Events { t, events })
}

fn decode_vma(c: &mut Cursor<'_>, d: &mut Deltas) -> Result<Vma, String> {
    let tgid = c.delta32(&mut d.vma_tgid)?;
    let mm = c.delta(&mut d.mm)?;
    let addr = c.delta(&mut d.addr)?;
    let start = c.delta(&mut d.start)?;
    let end = start.wrapping_add(c.varint()?);
    let flags = c.varint()?;
    let bits = c.u8()?;
    let anon_vma = c.delta(&mut d.anon_vma)?;
    let av_root = anon_vma.wrapping_add(unzigzag(c.varint()?).cast_unsigned());
    let av_parent = anon_vma.wrapping_add(unzigzag(c.varint()?).cast_unsigned());
    let av_num_children = c.varint()?;
    let av_refcount = c.u32()?;
    let n = c.count(2)?;
    let mut chain = Vec::with_capacity(n.min(PREALLOC));
    for _ in 0..n {
        let avc = c.delta(&mut d.avc)?;
        let av = anon_vma.wrapping_add(unzigzag(c.varint()?).cast_unsigned());
        chain.push((avc, av));
    }
    Ok(Vma {
        tgid,
        mm,
        addr,
        start,
        end,
        flags,
        file: bits & 1 != 0,
        anon_vma,
        av_root,
        av_parent,
        av_num_children,
        av_refcount,
        chain,
        chain_truncated: bits & 2 != 0,
        ppid: 0,
        pgoff: None,
        anon_pages: None,
    })
}

mod fact {
    /// `vm_pgoff` follows, as a zigzag delta from `vm_start >> 12`.
    pub const PGOFF: u8 = 1;
    /// pagemap's anonymous pages follow: present, shared.
    pub const ANON_PAGES: u8 = 2;
}

/// A VMA's facts of 1.2: a byte of which follow, then each. Facts a later
/// minor version adds come after these.
fn put_vma_facts(out: &mut Vec<u8>, v: &Vma) {
    let bits = v.pgoff.map_or(0, |_| fact::PGOFF) | v.anon_pages.map_or(0, |_| fact::ANON_PAGES);
    if bits == 0 {
        return;
    }
    out.push(bits);
    if let Some(p) = v.pgoff {
        put_varint(out, zigzag(p.wrapping_sub(v.start >> 12).cast_signed()));
    }
    if let Some(a) = v.anon_pages {
        put_varint(out, a.present);
        put_varint(out, a.shared);
    }
}

/// Reads the facts [`put_vma_facts`] wrote (an empty body: none); what
/// follows them is a newer minor version's and is left.
fn read_vma_facts(body: &[u8], v: &mut Vma) -> Result<(), String> {
    let mut c = Cursor { b: body, at: 0 };
    if c.left() == 0 {
        return Ok(());
    }
    let bits = c.u8()?;
    if bits & fact::PGOFF != 0 {
        let d = unzigzag(c.varint()?).cast_unsigned();
        v.pgoff = Some((v.start >> 12).wrapping_add(d));
    }
    if bits & fact::ANON_PAGES != 0 {
        let present = c.varint()?;
        let shared = c.varint()?;
        if shared > present {
            return Err(format!(
                "a VMA with {shared} shared of {present} anonymous pages"
            ));
        }
        v.anon_pages = Some(crate::snapshot::AnonPages { present, shared });
    }
    Ok(())
}

/// The body of a `WALK_VMAS` (1.0) or `WALK_VMAS_EXT` (1.1) message.
fn decode_walk_vmas(c: &mut Cursor<'_>, d: &mut Deltas, ext: bool) -> Result<Input, String> {
    let n = c.count(2)?;
    let mut comms = Vec::with_capacity(n.min(PREALLOC));
    let mut parents = Vec::new();
    for _ in 0..n {
        let pid = c.u32()?;
        let name = String::from_utf8_lossy(c.bytes()?).into_owned();
        if ext {
            let ppid = c.u32()?;
            if ppid != 0 {
                parents.push((pid, ppid));
            }
        }
        comms.push((pid, name));
    }
    // A VMA takes at least 13 bytes.
    let n = c.count(13)?;
    let mut vmas = Vec::with_capacity(n.min(PREALLOC));
    for _ in 0..n {
        let mut v = decode_vma(c, d)?;
        if ext {
            read_vma_facts(c.bytes()?, &mut v)?;
        }
        vmas.push(v);
    }
    Ok(Input::WalkVmas {
        comms,
        parents,
        vmas,
    })
}

/// One decoded message.
enum Message {
    Input(Input),
    Request(Request),
    Skipped,
}

fn decode_message(c: &mut Cursor<'_>, d: &mut Deltas) -> Result<Message, String> {
    let t = c.u8()?;
    Ok(Message::Input(match t {
        tag::EVENTS => {
            let at = c.varint()?;
            let n = c.count(4)?;
            let mut events = Vec::with_capacity(n.min(PREALLOC));
            for _ in 0..n {
                events.push(decode_event(c, d)?);
            }
            Input::Events { t: at, events }
        }
        tag::WALK_BEGIN => Input::WalkBegin { t: c.varint()? },
        tag::WALK_VMAS => decode_walk_vmas(c, d, false)?,
        tag::WALK_VMAS_EXT => {
            let body = c.bytes()?;
            let mut inner = Cursor { b: body, at: 0 };
            let input = decode_walk_vmas(&mut inner, d, true)?;
            if inner.left() != 0 {
                return Err("bytes left after a walk's VMAs".into());
            }
            input
        }
        tag::WALK_END => {
            let j: WalkEndJson = c.json()?;
            Input::WalkEnd {
                t: j.t,
                counts: j.counts,
                error: j.error,
            }
        }
        tag::COUNTERS => {
            let j: TimedJson<crate::input::Counters> = c.json()?;
            Input::Counters {
                t: j.t,
                counters: j.v,
            }
        }
        tag::RMAP => Input::Rmap(c.json()?),
        tag::NAMES => Input::Names(c.json()?),
        tag::MAP_PATHS => {
            let j: MapPathsJson = c.json()?;
            Input::MapPaths {
                pid: j.pid,
                paths: j.paths,
            }
        }
        tag::SLAB => Input::Slab(c.json()?),
        tag::NOTICE => Input::Notice(c.json()?),
        tag::TICK => Input::Tick { t: c.varint()? },
        tag::END => {
            let j: TimedJson<String> = c.json()?;
            Input::End {
                t: j.t,
                reason: j.v,
            }
        }
        tag::REQUEST => return Ok(Message::Request(c.json()?)),
        tag::TIMES => {
            let mut body = Cursor {
                b: c.bytes()?,
                at: 0,
            };
            decode_times(&mut body)?
        }
        t if t >= tag::FIRST_SKIPPABLE => {
            c.bytes()?;
            return Ok(Message::Skipped);
        }
        t => return Err(format!("a message of unknown kind {t}")),
    }))
}

/// Reads a stream: the header, then inputs (or requests) block by block.
pub struct Reader<R: Read> {
    input: R,
    offset: u64,
    header: Header,
    /// The facts of the header, until they are read as the first input.
    facts: Option<Message>,
    ended: bool,
    /// The current block, raw; the next message starts at `at`.
    raw: Vec<u8>,
    at: usize,
    deltas: Deltas,
    /// Where the current block starts.
    block_at: u64,
    payload: Vec<u8>,
    /// Blocks read so far.
    pub blocks: u64,
}

/// Reads exactly `buf.len()` bytes, or as many as there are (returns how
/// many).
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
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

impl<R: Read> Reader<R> {
    /// Reads the header of a stream of `kind`.
    ///
    /// # Errors
    /// [`StreamError`]: empty, not ours, another version, damaged header.
    pub fn open(mut input: R, kind: Kind) -> Result<Self, StreamError> {
        let mut fixed = [0u8; HEADER_FIXED];
        let n = read_full(&mut input, &mut fixed)
            .map_err(|source| StreamError::Io { offset: 0, source })?;
        if n == 0 {
            return Err(StreamError::Empty);
        }
        if n < MAGIC.len() || &fixed[..8] != MAGIC {
            return Err(StreamError::NotOurs);
        }
        if n < HEADER_FIXED {
            return Err(StreamError::Truncated(0));
        }
        let major = u16::from_le_bytes([fixed[8], fixed[9]]);
        let minor = u16::from_le_bytes([fixed[10], fixed[11]]);
        if major != VERSION.0 {
            return Err(StreamError::Version(major, minor));
        }
        let len = u32::from_le_bytes([fixed[12], fixed[13], fixed[14], fixed[15]]);
        let crc = u32::from_le_bytes([fixed[16], fixed[17], fixed[18], fixed[19]]);
        if len > MAX_HEADER {
            return Err(StreamError::Corrupt {
                offset: 0,
                what: format!("a header of {len} bytes (at most {MAX_HEADER})"),
            });
        }
        let mut json = vec![0u8; len as usize];
        let got = read_full(&mut input, &mut json).map_err(|source| StreamError::Io {
            offset: HEADER_FIXED as u64,
            source,
        })?;
        if got < json.len() {
            return Err(StreamError::Truncated(0));
        }
        if crc32fast::hash(&json) != crc && !cfg!(fuzzing) {
            return Err(StreamError::Corrupt {
                offset: 0,
                what: "the header's checksum does not match".into(),
            });
        }
        let header: Header = serde_json::from_slice(&json).map_err(|e| StreamError::Corrupt {
            offset: 0,
            what: format!("a malformed header: {e}"),
        })?;
        if header.kind != kind {
            return Err(StreamError::WrongKind(header.kind, kind));
        }
        if kind == Kind::Inputs && header.facts.is_none() {
            return Err(StreamError::Corrupt {
                offset: 0,
                what: "the header has no facts".into(),
            });
        }
        let facts = header
            .facts
            .as_ref()
            .map(|f| Message::Input(Input::Facts(Box::new(f.clone()))));
        Ok(Self {
            input,
            offset: (HEADER_FIXED + json.len()) as u64,
            header,
            facts,
            ended: false,
            raw: Vec::new(),
            at: 0,
            deltas: Deltas::default(),
            block_at: 0,
            payload: Vec::new(),
            blocks: 0,
        })
    }

    /// The header.
    #[must_use]
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Bytes consumed so far (the end of the last whole block).
    #[must_use]
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Reads the next block into the queue; `false` at a clean end.
    fn block(&mut self) -> Result<bool, StreamError> {
        let at = self.offset;
        let mut h = [0u8; BLOCK_HEADER];
        let n = read_full(&mut self.input, &mut h)
            .map_err(|source| StreamError::Io { offset: at, source })?;
        if n == 0 {
            return Ok(false);
        }
        if n < BLOCK_HEADER {
            return Err(StreamError::Truncated(at));
        }
        let corrupt = |what: String| StreamError::Corrupt { offset: at, what };
        if &h[..4] != BLOCK_MAGIC {
            return Err(corrupt("no block starts here".into()));
        }
        let len = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
        let raw_len = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
        let codec = h[12];
        let crc = u32::from_le_bytes([h[16], h[17], h[18], h[19]]);
        if len > MAX_BLOCK || raw_len > MAX_RAW {
            return Err(corrupt(format!(
                "a block of {len} bytes ({raw_len} raw): at most {MAX_BLOCK} ({MAX_RAW})"
            )));
        }
        self.payload.resize(len as usize, 0);
        let got =
            read_full(&mut self.input, &mut self.payload).map_err(|source| StreamError::Io {
                offset: at + BLOCK_HEADER as u64,
                source,
            })?;
        if got < self.payload.len() {
            return Err(StreamError::Truncated(at));
        }
        let mut sum = crc32fast::Hasher::new();
        sum.update(&h[4..16]);
        sum.update(&self.payload);
        // Fuzzing builds skip the checksum, so that mutations reach the
        // decoding behind it.
        if sum.finalize() != crc && !cfg!(fuzzing) {
            return Err(corrupt("the block's checksum does not match".into()));
        }
        match codec {
            0 => {
                if len != raw_len {
                    return Err(corrupt("an uncompressed block of two lengths".into()));
                }
                std::mem::swap(&mut self.raw, &mut self.payload);
            }
            1 => {
                self.raw.resize(raw_len as usize, 0);
                let n = lz4_flex::block::decompress_into(&self.payload, &mut self.raw)
                    .map_err(|e| corrupt(format!("the block does not decompress: {e}")))?;
                if n != raw_len as usize {
                    return Err(corrupt("the block decompresses to another length".into()));
                }
            }
            c => return Err(corrupt(format!("a block of unknown codec {c}"))),
        }
        self.at = 0;
        self.deltas = Deltas::default();
        self.block_at = at;
        self.offset = at + (BLOCK_HEADER + len as usize) as u64;
        self.blocks += 1;
        Ok(true)
    }

    /// The next message of the current block, decoded now (a block of many
    /// small messages is never held decoded).
    fn block_message(&mut self) -> Result<Option<Message>, StreamError> {
        if self.at >= self.raw.len() {
            return Ok(None);
        }
        let mut c = Cursor {
            b: &self.raw,
            at: self.at,
        };
        let m = decode_message(&mut c, &mut self.deltas).map_err(|what| StreamError::Corrupt {
            offset: self.block_at,
            what,
        })?;
        self.at = c.at;
        Ok(Some(m))
    }

    fn next_message(&mut self) -> Result<Option<Message>, StreamError> {
        if let Some(m) = self.facts.take() {
            return Ok(Some(m));
        }
        loop {
            if self.ended {
                return Ok(None);
            }
            if let Some(m) = self.block_message()? {
                return Ok(Some(m));
            }
            if !self.block()? {
                return Ok(None);
            }
        }
    }

    /// The next input; `Ok(None)` after the end message.
    ///
    /// # Errors
    /// [`StreamError`]: the stream is damaged here, or ends without its end
    /// message ([`StreamError::NoEnd`]). Everything before was returned.
    pub fn next_input(&mut self) -> Result<Option<Input>, StreamError> {
        loop {
            match self.next_message()? {
                Some(Message::Input(i)) => {
                    if matches!(i, Input::End { .. }) {
                        self.ended = true;
                    }
                    return Ok(Some(i));
                }
                Some(Message::Request(_) | Message::Skipped) => {}
                None if self.ended => return Ok(None),
                None => return Err(StreamError::NoEnd(self.offset)),
            }
        }
    }

    /// The next request; `Ok(None)` at the end of the stream.
    ///
    /// # Errors
    /// [`StreamError`]: the stream is damaged here.
    pub fn next_request(&mut self) -> Result<Option<Request>, StreamError> {
        loop {
            match self.next_message()? {
                Some(Message::Request(r)) => return Ok(Some(r)),
                Some(_) => {}
                None => return Ok(None),
            }
        }
    }
}

/// Decodes a whole stream of inputs from bytes, up to the first error
/// (the fuzz target, and tests).
///
/// # Errors
/// The first [`StreamError`], with the inputs read before it.
pub fn decode_all(bytes: &[u8]) -> Result<Vec<Input>, (Vec<Input>, StreamError)> {
    let mut out = Vec::new();
    let mut r = match Reader::open(bytes, Kind::Inputs) {
        Ok(r) => r,
        Err(e) => return Err((out, e)),
    };
    loop {
        match r.next_input() {
            Ok(Some(i)) => out.push(i),
            Ok(None) => return Ok(out),
            Err(e) => return Err((out, e)),
        }
    }
}

#[cfg(test)]
mod tests;
