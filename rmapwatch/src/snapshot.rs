//! A snapshot of every process's VMAs, anon_vmas and AVC chains, decoded
//! from the `iter/task_vma` records. Pure data: no aya, no I/O.
use std::collections::{BTreeMap, HashMap, HashSet};

use rmapwatch_common::{SnapAvc, SnapVma, snap};

use crate::decode::comm_str;

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
    /// VMA records skipped because their mm was already walked.
    pub duplicate_vmas: u64,
    /// Chains that changed under the walk (fewer AVC records than counted).
    pub short_chains: u64,
    /// Chains longer than the walk's bound.
    pub truncated_chains: u64,
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
}

fn read<T: Copy>(bytes: &[u8], at: usize) -> Option<T> {
    let b = bytes.get(at..at + size_of::<T>())?;
    // SAFETY: length checked; T is a plain-integer repr(C) record.
    Some(unsafe { b.as_ptr().cast::<T>().read_unaligned() })
}

impl Snapshot {
    /// Decodes the iterator's output.
    ///
    /// # Errors
    /// [`SnapshotError`] for a corrupt stream.
    pub fn parse(bytes: &[u8]) -> Result<Self, SnapshotError> {
        let mut s = Self::default();
        // The iterator walks one task's VMAs one after the other: decide once
        // per visit (a change of tgid or mm) whether the mm was walked already
        // (a thread with its own files table, or a CLONE_VM sibling).
        let mut walked: HashSet<u64> = HashSet::new();
        let mut visit: Option<(u32, u64, bool)> = None; // (tgid, mm, keep)
        let mut owner_of: HashMap<u64, u32> = HashMap::new();
        // AVC records of the VMA whose record comes next.
        let mut pending: Vec<(u64, u64)> = Vec::new();
        let mut pending_vma = 0;
        let mut pending_at = 0;
        let mut at = 0;
        while at < bytes.len() {
            let kind: u32 = read(bytes, at).ok_or(SnapshotError::Truncated(at))?;
            match kind {
                snap::AVC => {
                    let r: SnapAvc = read(bytes, at).ok_or(SnapshotError::Truncated(at))?;
                    if pending.is_empty() {
                        pending_vma = r.vma;
                        pending_at = at;
                    } else if r.vma != pending_vma {
                        return Err(SnapshotError::Orphan(pending_at));
                    }
                    pending.push((r.avc, r.anon_vma));
                    at += size_of::<SnapAvc>();
                }
                snap::VMA => {
                    let r: SnapVma = read(bytes, at).ok_or(SnapshotError::Truncated(at))?;
                    if !pending.is_empty() && pending_vma != r.vma {
                        return Err(SnapshotError::Orphan(pending_at));
                    }
                    let chain = std::mem::take(&mut pending);
                    if (chain.len() as u64) < u64::from(r.chain_len) {
                        s.short_chains += 1;
                    }
                    let keep = match visit {
                        Some((tgid, mm, keep)) if tgid == r.tgid && mm == r.mm => keep,
                        _ => {
                            let keep = r.mm != 0 && walked.insert(r.mm);
                            visit = Some((r.tgid, r.mm, keep));
                            keep
                        }
                    };
                    if keep {
                        let owner = *owner_of.entry(r.mm).or_insert(r.tgid);
                        let idx = s.vmas.len();
                        s.truncated_chains += u64::from(r.chain_truncated != 0);
                        s.vmas.push(Vma {
                            tgid: owner,
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
                        });
                        let p = s.procs.entry(owner).or_insert_with(|| Proc {
                            pid: owner,
                            mm: r.mm,
                            ..Proc::default()
                        });
                        if p.comm.is_empty() {
                            p.comm = comm_str(&r.comm);
                        }
                        p.vmas.push(idx);
                    } else {
                        s.duplicate_vmas += 1;
                    }
                    at += size_of::<SnapVma>();
                }
                kind => return Err(SnapshotError::Kind { kind, offset: at }),
            }
        }
        if pending.is_empty() {
            Ok(s)
        } else {
            Err(SnapshotError::Orphan(pending_at))
        }
    }

    /// Actual objects: distinct anon_vmas referenced by any VMA or chain,
    /// and AVCs (sum of chain lengths).
    #[must_use]
    pub fn actual_objects(&self) -> (u64, u64) {
        let mut avs: HashSet<u64> = HashSet::new();
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
    /// VMA's own anon_vma, else the first whose chain references it.
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
        assert_eq!(s.duplicate_vmas, 2);
        assert_eq!(s.short_chains, 1);
        assert_eq!(s.procs.len(), 1);
        assert_eq!(s.actual_objects(), (2, 2));
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
}
