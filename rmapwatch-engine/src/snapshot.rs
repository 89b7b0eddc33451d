//! A snapshot of every process's VMAs, anon_vmas and AVC chains, decoded
//! from the `iter/task_vma` records. Pure data: no aya, no I/O.
use std::collections::{BTreeMap, HashMap};

use rmapwatch_common::{COMM_LEN, SnapAvc, SnapVma, snap};

use crate::event::Comm;

/// One VMA.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Vma {
    /// Owning process.
    pub tgid: u32,
    /// `vm_mm`.
    pub mm: u64,
    /// The VMA's address.
    pub addr: u64,
    /// `vm_start`.
    pub start: u64,
    /// `vm_end`.
    pub end: u64,
    /// `vm_flags`.
    pub flags: u64,
    /// File-backed.
    pub file: bool,
    /// `anon_vma` (0: none).
    pub anon_vma: u64,
    /// `anon_vma->root`.
    pub av_root: u64,
    /// `anon_vma->parent`.
    pub av_parent: u64,
    /// `anon_vma->num_children` (a root counts itself).
    pub av_num_children: u64,
    /// `anon_vma->refcount`.
    pub av_refcount: u32,
    /// The chain: (AVC address, its anon_vma).
    pub chain: Vec<(u64, u64)>,
    /// The chain was longer than the walk's bound.
    pub chain_truncated: bool,
    /// The process's parent (tgid) as the walk saw it; 0 unknown (a
    /// recording carries it once per process, in `Input::WalkVmas`).
    pub ppid: u32,
    /// `vm_pgoff` (`None`: the walk did not carry it, as in recordings
    /// before stream 1.2).
    pub pgoff: Option<u64>,
    /// Its anonymous pages as `/proc/PID/pagemap` showed them just after
    /// the walk (`None`: not read: no anon_vma, out of the time budget,
    /// unreadable, or a recording before stream 1.2).
    pub anon_pages: Option<AnonPages>,
}

/// A VMA's present anonymous pages, from pagemap (bit 63 present, bit 61
/// clear: not a file or shared-anon page; bit 56 "exclusively mapped").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AnonPages {
    /// Present anonymous pages.
    pub present: u64,
    /// Of those, pages another mapping maps too (bit 56 clear).
    pub shared: u64,
}

/// How a live walk reads `/proc/PID/pagemap` for the anonymous pages of
/// each VMA with an anon_vma (`--pagemap-budget`, `--no-pagemap`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PagemapRead {
    /// Not at all: every `anon_pages` is `None`.
    Off,
    /// Every such VMA, however long it takes.
    Whole,
    /// Until this much time of a walk went to it; the VMAs after stay
    /// `None` (counted as skipped).
    Within(std::time::Duration),
}

impl std::fmt::Display for PagemapRead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Off => f.write_str("off"),
            Self::Whole => f.write_str("whole"),
            Self::Within(d) => write!(f, "{} ms", d.as_millis()),
        }
    }
}

impl Vma {
    /// Whether the VMA's own anon_vma is a root.
    #[must_use]
    pub fn is_root(&self) -> bool {
        self.anon_vma != 0 && self.av_root == self.anon_vma
    }

    /// Whether the VMA's own anon_vma has children (forked copies).
    #[must_use]
    pub fn has_children(&self) -> bool {
        // A root's num_children counts its own self-link.
        let own = u64::from(self.is_root());
        self.av_num_children > own
    }
}

/// One process of the snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Proc {
    /// tgid.
    pub pid: u32,
    /// Name.
    pub comm: String,
    /// `mm_struct` address.
    pub mm: u64,
    /// Indices into [`Snapshot::vmas`].
    pub vmas: Vec<usize>,
}

/// The whole snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Every VMA once (threads and CLONE_VM siblings deduplicated by mm).
    pub vmas: Vec<Vma>,
    /// Processes with an mm, by tgid.
    pub procs: BTreeMap<u32, Proc>,
    /// What the walk counted besides (zero for snapshots built in memory).
    pub counts: WalkCounts,
}

/// A snapshot stream that cannot be decoded.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// Unknown record kind at an offset.
    #[error("snapshot record of unknown kind {kind} at byte {offset}")]
    Kind {
        /// The kind read.
        kind: u32,
        /// Where.
        offset: usize,
    },
    /// The stream ends inside a record.
    #[error("snapshot ends inside a record at byte {0}")]
    Truncated(usize),
    /// AVC records not closed by their VMA's record.
    #[error("snapshot AVC records without their VMA at byte {0}")]
    Orphan(usize),
    /// Reading the iterator failed.
    #[error("reading the snapshot: {0}")]
    Io(String),
}

fn read<T: Copy>(bytes: &[u8], at: usize) -> Option<T> {
    let b = bytes.get(at..at + size_of::<T>())?;
    // SAFETY: length checked; T is a plain-integer repr(C) record.
    Some(unsafe { b.as_ptr().cast::<T>().read_unaligned() })
}

/// What a walk saw besides the VMAs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WalkCounts {
    /// VMAs handed on (one per VMA of each mm).
    pub vmas: u64,
    /// VMA records skipped because their mm was already walked.
    pub duplicate_vmas: u64,
    /// Chains that changed under the walk (fewer AVC records than counted).
    pub short_chains: u64,
    /// Chains longer than the walk's bound.
    pub truncated_chains: u64,
    /// VMAs with an anon_vma whose anonymous pages were read from
    /// `/proc/PID/pagemap` (0 in recordings made before it was read).
    #[serde(default)]
    pub pagemap_vmas: u64,
    /// VMAs with an anon_vma left unread because the walk's pagemap time
    /// budget was spent (their `anon_pages` is `None`).
    #[serde(default)]
    pub pagemap_skipped: u64,
    /// VMAs with an anon_vma whose pagemap could not be read (the process
    /// went away, or access was refused; their `anon_pages` is `None`).
    #[serde(default)]
    pub pagemap_failed: u64,
    /// pagemap entries (pages) read.
    #[serde(default)]
    pub pagemap_pages: u64,
    /// Nanoseconds spent reading pagemap.
    #[serde(default)]
    pub pagemap_ns: u64,
}

/// Bytes read from the iterator at a time.
pub const CHUNK: usize = 64 * 1024;

/// Decodes a walk made of several passes (see [`Decoder::next_pass`]):
/// `next` gives each pass after the first, `None` when the walk is done.
///
/// # Errors
/// As [`decode`], or `next`'s error.
pub fn decode_passes(
    first: impl std::io::Read,
    mut next: impl FnMut() -> Result<Option<Box<dyn std::io::Read>>, SnapshotError>,
    mut f: impl FnMut(&Vma, &[u8; COMM_LEN]),
) -> Result<WalkCounts, SnapshotError> {
    let mut d = Decoder::new();
    for_each_chunk(first, |bytes| d.feed(bytes, &mut f))?;
    while let Some(pass) = next()? {
        d.next_pass()?;
        for_each_chunk(pass, |bytes| d.feed(bytes, &mut f))?;
    }
    d.finish()
}

/// Decodes the iterator's output as it arrives, in pieces of any size:
/// each VMA (with its chain) is handed on with the iterated task's comm,
/// and nothing of the stream is kept beyond a partial record, so memory
/// does not grow with the number of VMAs. Threads and CLONE_VM siblings
/// are deduplicated by mm and charged to the first tgid seen with it.
///
/// An mm is not always walked whole in one visit: `iter/task_vma` lets go
/// of the task between two reads and looks its tid up again, and a leader
/// that exited alone meanwhile (no mm) is skipped: the iterator goes on to
/// the next tids, and the process's surviving thread walks the mm again
/// from its first VMA. So a visit of an mm walked already hands on the
/// VMAs above the highest one handed on (the iterator gives a task's VMAs
/// in address order), not nothing.
#[derive(Debug, Default)]
pub struct Decoder {
    counts: WalkCounts,
    // The iterator walks one task's VMAs one after the other: decide once
    // per visit (a change of tgid or mm) whether it is the mm's first.
    // mm -> the highest `vm_end` handed on (0 for none yet).
    walked: HashMap<u64, u64>,
    visit: Option<(u32, u64, bool)>, // (tgid, mm, the mm's first visit)
    owner_of: HashMap<u64, u32>,
    // The VMA being assembled: its AVC records come first.
    cur: Vma,
    pending_vma: u64,
    pending_at: usize,
    // Bytes of a record cut by the end of the last piece.
    partial: Vec<u8>,
    // Stream offset of the next byte.
    offset: usize,
}

impl Decoder {
    /// A decoder at the start of a walk.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Decodes the next piece of the stream.
    ///
    /// # Errors
    /// [`SnapshotError`] for a corrupt stream (its offset).
    pub fn feed(
        &mut self,
        mut bytes: &[u8],
        mut f: impl FnMut(&Vma, &[u8; COMM_LEN]),
    ) -> Result<(), SnapshotError> {
        // Complete a record cut by the last piece first.
        if !self.partial.is_empty() {
            if self.partial.len() < 4 {
                let take = (4 - self.partial.len()).min(bytes.len());
                self.partial.extend_from_slice(&bytes[..take]);
                bytes = &bytes[take..];
                if self.partial.len() < 4 {
                    return Ok(());
                }
            }
            let want = self.record_len(&self.partial)?;
            let take = want.saturating_sub(self.partial.len()).min(bytes.len());
            self.partial.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.partial.len() < want {
                return Ok(());
            }
            let rec = std::mem::take(&mut self.partial);
            self.record(&rec, &mut f)?;
        }
        while !bytes.is_empty() {
            let want = match self.record_len(bytes) {
                Ok(n) => n,
                Err(SnapshotError::Truncated(_)) => {
                    self.partial.extend_from_slice(bytes);
                    return Ok(());
                }
                Err(e) => return Err(e),
            };
            if bytes.len() < want {
                self.partial.extend_from_slice(bytes);
                return Ok(());
            }
            self.record(&bytes[..want], &mut f)?;
            bytes = &bytes[want..];
        }
        Ok(())
    }

    /// The length of the record `bytes` starts with.
    fn record_len(&self, bytes: &[u8]) -> Result<usize, SnapshotError> {
        let kind: u32 = read(bytes, 0).ok_or(SnapshotError::Truncated(self.offset))?;
        match kind {
            snap::AVC => Ok(size_of::<SnapAvc>()),
            snap::VMA => Ok(size_of::<SnapVma>()),
            kind => Err(SnapshotError::Kind {
                kind,
                offset: self.offset,
            }),
        }
    }

    /// One whole record.
    fn record(
        &mut self,
        bytes: &[u8],
        f: &mut impl FnMut(&Vma, &[u8; COMM_LEN]),
    ) -> Result<(), SnapshotError> {
        let at = self.offset;
        self.offset += bytes.len();
        let kind: u32 = read(bytes, 0).ok_or(SnapshotError::Truncated(at))?;
        if kind == snap::AVC {
            let r: SnapAvc = read(bytes, 0).ok_or(SnapshotError::Truncated(at))?;
            if self.cur.chain.is_empty() {
                self.pending_vma = r.vma;
                self.pending_at = at;
            } else if r.vma != self.pending_vma {
                return Err(SnapshotError::Orphan(self.pending_at));
            }
            self.cur.chain.push((r.avc, r.anon_vma));
            return Ok(());
        }
        let r: SnapVma = read(bytes, 0).ok_or(SnapshotError::Truncated(at))?;
        if !self.cur.chain.is_empty() && self.pending_vma != r.vma {
            return Err(SnapshotError::Orphan(self.pending_at));
        }
        if (self.cur.chain.len() as u64) < u64::from(r.chain_len) {
            self.counts.short_chains += 1;
        }
        let first = match self.visit {
            Some((tgid, mm, first)) if tgid == r.tgid && mm == r.mm => first,
            _ => {
                let first = r.mm != 0 && !self.walked.contains_key(&r.mm);
                self.visit = Some((r.tgid, r.mm, first));
                first
            }
        };
        let mark = self.walked.get(&r.mm).copied();
        let keep = r.mm != 0
            && if first {
                // Every VMA of the mm's first visit, but one below what it
                // handed on: the iterator walking the mm again from its
                // first VMA with no other task's visit in between (the
                // leader gone between two reads, its thread next).
                !(r.start < r.end && mark.is_some_and(|m| r.start < m))
            } else {
                // A thread with its own files table walks it all again:
                // the thread of a leader gone between two reads walks on
                // past what the leader's visit gave. Another process on the
                // same mm address (a CLONE_VM sibling, or a new process
                // whose mm reuses a dead one's address during the walk)
                // is not walked on: its VMAs are not the first owner's.
                self.owner_of.get(&r.mm) == Some(&r.tgid)
                    && mark.is_some_and(|m| r.start >= m && r.end > m)
            };
        if keep {
            let m = self.walked.entry(r.mm).or_insert(0);
            *m = (*m).max(r.end);
            self.counts.vmas += 1;
            self.counts.truncated_chains += u64::from(r.chain_truncated != 0);
            let chain = std::mem::take(&mut self.cur.chain);
            self.cur = Vma {
                tgid: *self.owner_of.entry(r.mm).or_insert(r.tgid),
                mm: r.mm,
                addr: r.vma,
                start: r.start,
                end: r.end,
                flags: r.flags,
                file: r.file != 0,
                anon_vma: r.anon_vma,
                av_root: r.av_root,
                av_parent: r.av_parent,
                av_num_children: r.av_num_children,
                av_refcount: r.av_refcount,
                chain,
                chain_truncated: r.chain_truncated != 0,
                ppid: r.ppid,
                pgoff: Some(r.pgoff),
                anon_pages: None,
            };
            f(&self.cur, &r.comm);
        } else {
            self.counts.duplicate_vmas += 1;
        }
        self.cur.chain.clear();
        Ok(())
    }

    /// The end of the stream.
    ///
    /// # Errors
    /// [`SnapshotError`] when it ends inside a record or a VMA's chain.
    /// The start of another pass of the same walk (the `iter/task` walk of
    /// kernels before 5.12 visits each process again where the last pass
    /// stopped): its mms are walked again, their next VMAs.
    ///
    /// # Errors
    /// The last pass ended inside a record or a chain.
    pub fn next_pass(&mut self) -> Result<(), SnapshotError> {
        if !self.partial.is_empty() {
            return Err(SnapshotError::Truncated(self.offset));
        }
        if !self.cur.chain.is_empty() {
            return Err(SnapshotError::Orphan(self.pending_at));
        }
        self.walked.clear();
        self.visit = None;
        Ok(())
    }

    pub fn finish(self) -> Result<WalkCounts, SnapshotError> {
        if !self.partial.is_empty() {
            return Err(SnapshotError::Truncated(self.offset));
        }
        if self.cur.chain.is_empty() {
            Ok(self.counts)
        } else {
            Err(SnapshotError::Orphan(self.pending_at))
        }
    }
}

/// Reads `input` to its end in chunks of [`CHUNK`] bytes, handing each to
/// `f` (which may stop it with an error).
///
/// # Errors
/// [`SnapshotError::Io`] when a read fails, or `f`'s error.
pub fn for_each_chunk(
    mut input: impl std::io::Read,
    mut f: impl FnMut(&[u8]) -> Result<(), SnapshotError>,
) -> Result<(), SnapshotError> {
    let mut buf = vec![0u8; CHUNK];
    loop {
        match input.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => f(&buf[..n])?,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(SnapshotError::Io(e.to_string())),
        }
    }
}

/// Decodes a whole stream from a reader (see [`Decoder`]).
///
/// # Errors
/// [`SnapshotError`] for a corrupt stream or a failed read.
pub fn decode(
    input: impl std::io::Read,
    mut f: impl FnMut(&Vma, &[u8; COMM_LEN]),
) -> Result<WalkCounts, SnapshotError> {
    let mut d = Decoder::new();
    for_each_chunk(input, |bytes| d.feed(bytes, &mut f))?;
    d.finish()
}

/// Encodes a VMA as the iterator writes it: its AVC records, then its own
/// (tests and benchmarks).
pub fn encode(v: &Vma, comm: &[u8; COMM_LEN], out: &mut Vec<u8>) {
    fn bytes<T>(r: &T) -> &[u8] {
        // SAFETY: plain repr(C) records without padding bytes.
        unsafe { std::slice::from_raw_parts((r as *const T).cast::<u8>(), size_of::<T>()) }
    }
    for &(avc, anon_vma) in &v.chain {
        out.extend_from_slice(bytes(&SnapAvc {
            kind: snap::AVC,
            tgid: v.tgid,
            vma: v.addr,
            avc,
            anon_vma,
        }));
    }
    out.extend_from_slice(bytes(&SnapVma {
        kind: snap::VMA,
        tgid: v.tgid,
        mm: v.mm,
        vma: v.addr,
        start: v.start,
        end: v.end,
        flags: v.flags,
        file: u64::from(v.file),
        anon_vma: v.anon_vma,
        av_root: v.av_root,
        av_parent: v.av_parent,
        av_num_children: v.av_num_children,
        av_refcount: v.av_refcount,
        chain_len: u32::try_from(v.chain.len()).unwrap_or(u32::MAX),
        chain_truncated: u32::from(v.chain_truncated),
        ppid: v.ppid,
        pgoff: v.pgoff.unwrap_or(0),
        comm: *comm,
        ..SnapVma::default()
    }));
}

impl Snapshot {
    /// Decodes the iterator's output into memory (tests, offline use; the
    /// daemon streams with [`decode`]).
    ///
    /// # Errors
    /// [`SnapshotError`] for a corrupt stream.
    pub fn parse(bytes: &[u8]) -> Result<Self, SnapshotError> {
        let mut s = Self::default();
        s.counts = decode(bytes, |v, comm| s.push(v, comm))?;
        Ok(s)
    }

    /// Adds a decoded VMA.
    pub fn push(&mut self, v: &Vma, comm: &[u8; COMM_LEN]) {
        let idx = self.vmas.len();
        self.vmas.push(v.clone());
        let p = self.procs.entry(v.tgid).or_insert_with(|| Proc {
            pid: v.tgid,
            mm: v.mm,
            ..Proc::default()
        });
        if p.comm.is_empty() {
            p.comm = Comm(*comm).text();
        }
        p.vmas.push(idx);
    }

    /// Actual objects: distinct anon_vmas referenced by any VMA or chain,
    /// and AVCs (sum of chain lengths). A test oracle for the streamed model.
    #[cfg(test)]
    #[must_use]
    pub fn actual_objects(&self) -> (u64, u64) {
        let mut avs: std::collections::HashSet<u64> = std::collections::HashSet::new();
        let mut avcs = 0u64;
        for v in &self.vmas {
            if v.anon_vma != 0 {
                avs.insert(v.anon_vma);
            }
            for &(_, av) in &v.chain {
                if av != 0 {
                    avs.insert(av);
                }
            }
            avcs += v.chain.len() as u64;
        }
        (avs.len() as u64, avcs)
    }

    /// Who owns each live object: AVCs belong to the process whose VMA's
    /// chain holds them; an anon_vma to the first process that has it as a
    /// VMA's own anon_vma, else the first whose chain references it. A test
    /// oracle for the streamed owners (`walk::Digest`).
    #[cfg(test)]
    #[must_use]
    pub fn owners(&self) -> (HashMap<u64, u32>, HashMap<u64, u32>) {
        let mut av_owner: HashMap<u64, u32> = HashMap::new();
        let mut avc_owner: HashMap<u64, u32> = HashMap::new();
        for v in &self.vmas {
            if v.anon_vma != 0 {
                av_owner.entry(v.anon_vma).or_insert(v.tgid);
            }
        }
        for v in &self.vmas {
            for &(avc, av) in &v.chain {
                avc_owner.insert(avc, v.tgid);
                if av != 0 {
                    av_owner.entry(av).or_insert(v.tgid);
                }
            }
        }
        (av_owner, avc_owner)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn bytes_of<T>(r: &T) -> Vec<u8> {
        // SAFETY: plain repr(C) records.
        unsafe { std::slice::from_raw_parts((r as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
    }

    fn vma(tgid: u32, mm: u64, addr: u64, av: u64, chain: u32) -> Vec<u8> {
        bytes_of(&SnapVma {
            kind: snap::VMA,
            tgid,
            mm,
            vma: addr,
            anon_vma: av,
            av_root: av,
            av_num_children: 1,
            chain_len: chain,
            ..SnapVma::default()
        })
    }

    fn avc(tgid: u32, addr: u64, avc: u64, av: u64) -> Vec<u8> {
        bytes_of(&SnapAvc {
            kind: snap::AVC,
            tgid,
            vma: addr,
            avc,
            anon_vma: av,
        })
    }

    #[test]
    fn threads_are_deduplicated_by_mm_and_short_chains_counted() {
        // The kernel visits each task's VMAs one after the other.
        let mut b = avc(10, 0xa, 0x500, 0x100);
        b.extend(vma(10, 0x1000, 0xa, 0x100, 1));
        // a record that announces more AVCs than were written
        b.extend(avc(10, 0xb, 0x600, 0x200));
        b.extend(vma(10, 0x1000, 0xb, 0x200, 2));
        // the same mm walked again through a thread with its own files
        b.extend(avc(11, 0xa, 0x500, 0x100));
        b.extend(vma(11, 0x1000, 0xa, 0x100, 1));
        b.extend(vma(11, 0x1000, 0xb, 0x200, 0));
        let s = Snapshot::parse(&b).unwrap();
        assert_eq!(s.vmas.len(), 2);
        assert_eq!(s.counts.duplicate_vmas, 2);
        assert_eq!(s.counts.short_chains, 1);
        assert_eq!(s.procs.len(), 1);
        assert_eq!(s.actual_objects(), (2, 2));
    }

    /// A VMA record at `start` (one page), as the kernel writes it.
    fn vma_at(tgid: u32, mm: u64, start: u64, av: u64, chain: u32) -> Vec<u8> {
        bytes_of(&SnapVma {
            kind: snap::VMA,
            tgid,
            mm,
            vma: 0xffff_0000_0000 + start,
            start,
            end: start + 0x1000,
            anon_vma: av,
            av_root: av,
            av_num_children: 1,
            chain_len: chain,
            ..SnapVma::default()
        })
    }

    #[test]
    fn a_leader_that_exits_between_reads_is_walked_on_through_its_thread() {
        // `iter/task_vma` drops the task between two reads of the
        // iterator and finds it again by tid. A leader that exited alone
        // in between (`pthread_exit` from main) has no mm any more: the
        // iterator goes on to the next tids (its children), then to the
        // surviving thread (its files no longer the leader's), which walks
        // the same mm again from its first VMA. Seen before the fix: that
        // visit was dropped as a thread's duplicate, and the VMAs above
        // the cut were missing from the walk.
        let mm = 0x1000;
        // Process 10's VMAs from the first, each with its anon_vma's AVC.
        let visit = |b: &mut Vec<u8>, starts: &[u64]| {
            for (i, &start) in starts.iter().enumerate() {
                let av = 0x100 + i as u64;
                b.extend(avc(10, 0xffff_0000_0000 + start, 0x500 + i as u64, av));
                b.extend(vma_at(10, mm, start, av, 1));
            }
        };
        let mut b = Vec::new();
        visit(&mut b, &[0x10_000, 0x20_000]);
        // (the cut) a child's visit
        b.extend(avc(11, 0xffff_0000_0000 + 0x10_000, 0x900, 0x400));
        b.extend(vma_at(11, 0x2000, 0x10_000, 0x400, 1));
        // the thread, on the leader's mm, from the first VMA
        visit(&mut b, &[0x10_000, 0x20_000, 0x30_000, 0x40_000]);
        let s = Snapshot::parse(&b).unwrap();
        let seen: Vec<(u32, u64)> = s.vmas.iter().map(|v| (v.tgid, v.start)).collect();
        assert_eq!(
            seen,
            [
                (10, 0x10_000),
                (10, 0x20_000),
                (11, 0x10_000),
                (10, 0x30_000),
                (10, 0x40_000)
            ]
        );
        assert_eq!(s.counts.duplicate_vmas, 2);
        assert_eq!(s.actual_objects(), (5, 5));
        // Without a child in between: the same visit as far as the records
        // tell, walked again from its first VMA; each VMA still once.
        let mut b = Vec::new();
        for start in [0x10_000u64, 0x20_000, 0x10_000, 0x20_000, 0x30_000] {
            b.extend(vma_at(10, mm, start, 0, 0));
        }
        let s = Snapshot::parse(&b).unwrap();
        let seen: Vec<u64> = s.vmas.iter().map(|v| v.start).collect();
        assert_eq!(seen, [0x10_000, 0x20_000, 0x30_000]);
        assert_eq!(s.counts.duplicate_vmas, 2);
    }

    #[test]
    fn another_process_on_a_walked_mm_address_is_not_walked_on() {
        // Process 10 is walked and exits; process 30 gets an mm at the
        // same address during the walk (or is a CLONE_VM sibling of 10):
        // none of its VMAs is 10's, not even those above 10's last.
        let mm = 0x1000;
        let mut b = Vec::new();
        b.extend(vma_at(10, mm, 0x10_000, 0, 0));
        b.extend(vma_at(20, 0x2000, 0x10_000, 0, 0));
        for start in [0x10_000u64, 0x50_000] {
            b.extend(vma_at(30, mm, start, 0, 0));
        }
        let s = Snapshot::parse(&b).unwrap();
        let seen: Vec<(u32, u64)> = s.vmas.iter().map(|v| (v.tgid, v.start)).collect();
        assert_eq!(seen, [(10, 0x10_000), (20, 0x10_000)]);
        assert_eq!(s.counts.duplicate_vmas, 2);
    }

    #[test]
    fn corrupt_streams_are_errors_not_panics() {
        let mut b = vma(10, 0x1000, 0xa, 0x100, 1);
        assert!(matches!(
            Snapshot::parse(&b[..10]),
            Err(SnapshotError::Truncated(0))
        ));
        b.extend([7, 0, 0, 0]);
        assert!(matches!(
            Snapshot::parse(&b),
            Err(SnapshotError::Kind { kind: 7, .. })
        ));
        let orphan = avc(10, 0xa, 0x500, 0x100);
        assert!(matches!(
            Snapshot::parse(&orphan),
            Err(SnapshotError::Orphan(0))
        ));
        assert_eq!(Snapshot::parse(&[]), Ok(Snapshot::default()));
    }

    #[test]
    fn a_walk_in_passes_continues_each_mm_where_the_last_pass_stopped() {
        // Pass 1: process 10's first VMA, and a CLONE_VM sibling (11) of
        // the same mm, deduplicated; pass 2: process 10's next VMA (the same
        // mm again, not a duplicate), the sibling's copy deduplicated again.
        let mut p1 = avc(10, 0xa, 0x500, 0x100);
        p1.extend(vma(10, 0x1000, 0xa, 0x100, 1));
        p1.extend(vma(11, 0x1000, 0xa, 0x100, 0));
        let mut p2 = avc(10, 0xb, 0x600, 0x200);
        p2.extend(vma(10, 0x1000, 0xb, 0x200, 1));
        p2.extend(vma(11, 0x1000, 0xb, 0x200, 0));
        let mut passes = vec![p2];
        let mut seen = Vec::new();
        let counts = decode_passes(
            std::io::Cursor::new(p1),
            || {
                Ok(passes
                    .pop()
                    .map(|p| Box::new(std::io::Cursor::new(p)) as Box<dyn std::io::Read>))
            },
            |v, _| seen.push((v.tgid, v.addr)),
        )
        .unwrap();
        assert_eq!(seen, vec![(10, 0xa), (10, 0xb)]);
        assert_eq!(counts.vmas, 2);
        assert_eq!(counts.duplicate_vmas, 2);
        // A pass that ends inside a chain is an error, not a silent join.
        let cut = avc(10, 0xa, 0x500, 0x100);
        let mut once = Some(vma(10, 0x1000, 0xa, 0x100, 1));
        let r = decode_passes(
            std::io::Cursor::new(cut),
            || {
                Ok(once
                    .take()
                    .map(|p| Box::new(std::io::Cursor::new(p)) as Box<dyn std::io::Read>))
            },
            |_, _| {},
        );
        assert!(matches!(r, Err(SnapshotError::Orphan(0))), "{r:?}");
    }

    #[test]
    fn walk_counts_of_recordings_before_pagemap_read_as_zero() {
        let old = r#"{"vmas":11,"duplicate_vmas":2,"short_chains":1,"truncated_chains":0}"#;
        let c: WalkCounts = serde_json::from_str(old).unwrap();
        assert_eq!(
            c,
            WalkCounts {
                vmas: 11,
                duplicate_vmas: 2,
                short_chains: 1,
                ..WalkCounts::default()
            }
        );
    }
}
