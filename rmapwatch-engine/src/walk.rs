//! One pass over a snapshot: the model, the owner of every object (to seed
//! the accounting), per-process counts, and the VMAs of the one process in
//! the detail view. Pure: VMAs in, results out. The daemon feeds it the
//! iterator's stream as it is read ([`stream`]), so its memory grows with
//! the anon_vmas and processes, not with the VMAs or the raw records.
use std::collections::BTreeMap;

use rmapwatch_common::object;

use crate::{
    event::Comm,
    model::{Estimate, Estimator, Objects, Options},
    snapshot::{self, Snapshot, SnapshotError, Vma, WalkCounts},
};

/// A process as a walk saw it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcInfo {
    /// Name (of the first task walked with its mm).
    pub comm: String,
    /// VMAs.
    pub vmas: u64,
}

/// What a pass produced.
#[derive(Clone, Debug, Default)]
pub struct Walked {
    /// The model's result (actual and lazy, system-wide and per process).
    pub estimate: Estimate,
    /// Processes with an mm, by tgid.
    pub procs: BTreeMap<u32, ProcInfo>,
    /// The detail process's VMAs, if one was asked for and found.
    pub detail: Vec<Vma>,
    /// Record counts.
    pub counts: WalkCounts,
}

impl Walked {
    /// Actual objects per process.
    #[must_use]
    pub fn actual_by_process(&self) -> BTreeMap<u32, Objects> {
        self.estimate
            .processes
            .iter()
            .map(|(&pid, p)| (pid, p.actual))
            .collect()
    }

    /// VMAs per process.
    #[must_use]
    pub fn vmas_by_process(&self) -> BTreeMap<u32, u64> {
        self.procs.iter().map(|(&pid, p)| (pid, p.vmas)).collect()
    }
}

/// The pass. `owners(address, tgid, kind)` hears of every object: AVCs as
/// their VMAs come, anon_vmas at the end (their owner is only known then).
#[derive(Debug)]
pub struct Digest {
    model: Estimator,
    procs: BTreeMap<u32, ProcInfo>,
    detail_pid: Option<u32>,
    detail: Vec<Vma>,
}

impl Digest {
    /// A pass keeping the VMAs of `detail_pid`, with room for `hint`
    /// anon_vmas.
    #[must_use]
    pub fn new(opts: Options, hint: usize, detail_pid: Option<u32>) -> Self {
        Self {
            model: Estimator::with_capacity(opts, hint),
            procs: BTreeMap::new(),
            detail_pid,
            detail: Vec::new(),
        }
    }

    /// One VMA; `comm` is asked for once per process.
    pub fn vma(
        &mut self,
        v: &Vma,
        comm: impl FnOnce() -> String,
        mut owners: impl FnMut(u64, u32, u32),
    ) {
        self.model
            .add(v, |avc, tgid| owners(avc, tgid, object::AVC));
        self.procs
            .entry(v.tgid)
            .or_insert_with(|| ProcInfo {
                comm: comm(),
                vmas: 0,
            })
            .vmas += 1;
        if self.detail_pid == Some(v.tgid) {
            self.detail.push(v.clone());
        }
    }

    /// The result.
    pub fn finish(self, counts: WalkCounts, owners: impl FnMut(u64, u32, u32)) -> Walked {
        self.finish_with(counts, owners, |_, _| ()).0
    }

    /// The result, and what `then` makes of it while the anon_vmas'
    /// owners can still be asked (the designs' lineage evidence).
    pub fn finish_with<R>(
        mut self,
        counts: WalkCounts,
        mut owners: impl FnMut(u64, u32, u32),
        then: impl FnOnce(&Walked, &dyn Fn(u64) -> Option<(u32, bool)>) -> R,
    ) -> (Walked, R) {
        let estimate = self
            .model
            .take_estimate(|av, tgid| owners(av, tgid, object::ANON_VMA));
        let walked = Walked {
            estimate,
            procs: self.procs,
            detail: self.detail,
            counts,
        };
        let model = &self.model;
        let r = then(&walked, &|av| model.owner(av));
        (walked, r)
    }
}

/// Runs the pass over the iterator's output as it is read; `hint`: the
/// anon_vmas expected (the last walk's, or the slab's count).
///
/// # Errors
/// [`SnapshotError`] for a corrupt stream or a failed read.
pub fn stream(
    input: impl std::io::Read,
    opts: Options,
    hint: usize,
    detail_pid: Option<u32>,
    mut owners: impl FnMut(u64, u32, u32),
) -> Result<Walked, SnapshotError> {
    let mut d = Digest::new(opts, hint, detail_pid);
    let counts = snapshot::decode(input, |v, comm| {
        d.vma(v, || Comm(*comm).text(), &mut owners);
    })?;
    Ok(d.finish(counts, owners))
}

/// Runs the pass over a snapshot held in memory.
pub fn of_snapshot(
    snap: &Snapshot,
    opts: Options,
    detail_pid: Option<u32>,
    mut owners: impl FnMut(u64, u32, u32),
) -> Walked {
    let mut d = Digest::new(opts, 0, detail_pid);
    for v in &snap.vmas {
        d.vma(
            v,
            || {
                snap.procs
                    .get(&v.tgid)
                    .map(|p| p.comm.clone())
                    .unwrap_or_default()
            },
            &mut owners,
        );
    }
    d.finish(
        WalkCounts {
            vmas: snap.vmas.len() as u64,
            ..snap.counts
        },
        owners,
    )
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::{model, model::sim::Sim};

    /// The records the iterator would write for a snapshot.
    fn records(s: &Snapshot) -> Vec<u8> {
        let mut b = Vec::new();
        for v in &s.vmas {
            snapshot::encode(v, &[0; 16], &mut b);
        }
        b
    }

    /// Hands out the stream a few bytes at a time, as a reader may.
    struct Dribble<'a>(&'a [u8], usize);
    impl std::io::Read for Dribble<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.1 = self.1 % 97 + 1;
            let n = self.1.min(buf.len()).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    fn workload() -> Sim {
        let mut sim = Sim::default();
        for i in 0..300 {
            let v = sim.map(1, i * 0x10000);
            sim.fault(v);
        }
        sim.fork(1, 2);
        sim.fork(2, 3);
        sim.fork(1, 4);
        sim
    }

    #[test]
    fn streaming_gives_what_the_in_memory_model_and_owners_give() {
        let snap = workload().snapshot();
        let bytes = records(&snap);
        assert!(bytes.len() > 3 * 64 * 1024, "crosses read chunks");
        let mut owners = HashMap::new();
        let w = stream(
            Dribble(&bytes, 0),
            Options::default(),
            0,
            Some(3),
            |p, t, k| {
                assert!(owners.insert(p, (t, k)).is_none(), "each object once");
            },
        )
        .unwrap();
        assert_eq!(w.estimate, model::estimate(&snap, Options::default()));
        let (av, avc) = snap.owners();
        assert_eq!(owners.len(), av.len() + avc.len());
        for (p, t) in av {
            assert_eq!(owners[&p], (t, object::ANON_VMA));
        }
        for (p, t) in avc {
            assert_eq!(owners[&p], (t, object::AVC));
        }
        assert_eq!(w.counts.vmas, snap.vmas.len() as u64);
        assert_eq!(w.procs.len(), 4);
        assert_eq!(w.procs[&3].vmas, 300);
        assert_eq!(w.detail.len(), 300);
        assert!(w.detail.iter().all(|v| v.tgid == 3 && v.chain.len() == 3));
        let reparsed = Snapshot::parse(&bytes).unwrap();
        assert_eq!(reparsed.vmas.len(), snap.vmas.len());
    }

    #[test]
    fn a_stream_cut_short_is_an_error() {
        let snap = workload().snapshot();
        let bytes = records(&snap);
        let cut = &bytes[..bytes.len() - 5];
        let e = stream(Dribble(cut, 0), Options::default(), 0, None, |_, _, _| {}).unwrap_err();
        assert!(matches!(e, SnapshotError::Truncated(_)), "{e}");
    }
}
