//! Synthetic inputs of the benchmarks: a system of processes and VMAs
//! (held as a snapshot, or produced as the iterator's records as they are
//! read), a machine's facts, a walk as a source delivers it, and a fork
//! storm's events.
use rmapwatch_common::{object, site};
use rmapwatch_engine::{
    engine,
    event::Event,
    facts::{Facts, Sizes},
    hooks::HookStatus,
    input::Input,
    snapshot::{self, Snapshot, Vma, WalkCounts},
};
use rmapwatch_live::kernel;

/// The object sizes of the synthetic machine.
const SIZES: Sizes = Sizes {
    anon_vma: 104,
    anon_vma_chain: 64,
};

/// A synthetic snapshot: `procs` processes with `vmas` VMAs each; every
/// fourth process is a fork child (chains of two) of the one before.
pub fn synthetic(procs: u32, vmas: u64) -> Snapshot {
    let mut s = Snapshot::default();
    let mut g = Synth::new(procs, vmas);
    while let Some(v) = g.next_vma() {
        s.push(&v, &comm_of(v.tgid));
    }
    s
}

/// The synthetic process `p`'s name, `proc-N`.
fn comm_of(p: u32) -> [u8; 16] {
    let mut c = [0u8; 16];
    let name = format!("proc-{p}");
    c[..name.len().min(15)].copy_from_slice(&name.as_bytes()[..name.len().min(15)]);
    c
}

/// Generates the synthetic system one VMA at a time: every fourth process
/// is a fork child of the one before (its VMAs link the parent's anon_vmas).
pub struct Synth {
    procs: u32,
    vmas: u64,
    p: u32,
    i: u64,
    next: u64,
    parent_avs: Vec<u64>,
    mine: Vec<u64>,
    /// Encoded records not yet read.
    pending: Vec<u8>,
}

impl Synth {
    /// A system of `procs` processes of `vmas` VMAs each.
    pub fn new(procs: u32, vmas: u64) -> Self {
        Self {
            procs,
            vmas,
            p: 1,
            i: 0,
            next: 0x1000,
            parent_avs: Vec::new(),
            mine: Vec::new(),
            pending: Vec::new(),
        }
    }

    fn id(&mut self) -> u64 {
        self.next += 0x40;
        0xffff_8000_0000_0000 + self.next
    }

    /// The next VMA, or `None` after the last process's last.
    pub fn next_vma(&mut self) -> Option<Vma> {
        if self.i == self.vmas {
            self.i = 0;
            self.p += 1;
            self.parent_avs = std::mem::take(&mut self.mine);
        }
        if self.p > self.procs {
            return None;
        }
        let (p, i) = (self.p, self.i);
        self.i += 1;
        let child = p % 4 == 0;
        let av = self.id();
        let mut chain = Vec::new();
        let parent = if child {
            self.parent_avs.get(i as usize).copied()
        } else {
            None
        };
        if let Some(pav) = parent {
            chain.push((self.id(), pav));
        }
        chain.push((self.id(), av));
        self.mine.push(av);
        Some(Vma {
            tgid: p,
            mm: u64::from(p),
            addr: self.id(),
            start: i * 0x1000,
            end: i * 0x1000 + 0x1000,
            anon_vma: av,
            av_root: parent.unwrap_or(av),
            av_parent: parent.unwrap_or(av),
            av_num_children: u64::from(!child),
            chain,
            ..Vma::default()
        })
    }
}

/// The iterator's output for the synthetic system, produced as it is read
/// (as the kernel's is): nothing of it is held.
impl std::io::Read for Synth {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pending.len() < buf.len() {
            let Some(v) = self.next_vma() else { break };
            snapshot::encode(&v, &comm_of(v.tgid), &mut self.pending);
        }
        let n = self.pending.len().min(buf.len());
        buf[..n].copy_from_slice(&self.pending[..n]);
        self.pending.drain(..n);
        Ok(n)
    }
}

/// The synthetic machine's hooks: tracepoints only (as on this project's
/// machines, where fentry is refused).
fn hooks() -> Vec<HookStatus> {
    rmapwatch_engine::hooks::tracepoint_only("fentry: refused")
}

/// Facts of a synthetic machine.
pub fn facts() -> Facts {
    Facts {
        kernel: kernel::current_id(),
        sizes: SIZES,
        hooks: hooks(),
        fork_window: true,
        source: "live".into(),
        ..Facts::default()
    }
}

/// A walk of `vmas` (named `proc-N`) as a source delivers it, in batches.
pub fn walk_inputs(vmas: impl IntoIterator<Item = Vma>, t: u64) -> Vec<Input> {
    let mut out = vec![Input::WalkBegin { t }];
    let mut batch = Vec::new();
    let mut comms = Vec::new();
    let mut named = std::collections::HashSet::new();
    let mut n = 0;
    for v in vmas {
        if named.insert(v.tgid) {
            comms.push((v.tgid, format!("proc-{}", v.tgid)));
        }
        batch.push(v);
        n += 1;
        if batch.len() == 1024 {
            out.push(Input::WalkVmas {
                comms: std::mem::take(&mut comms),
                parents: Vec::new(),
                vmas: std::mem::take(&mut batch),
            });
        }
    }
    out.push(Input::WalkVmas {
        comms,
        parents: Vec::new(),
        vmas: batch,
    });
    out.push(Input::WalkEnd {
        t: t + 1_000_000,
        counts: WalkCounts {
            vmas: n,
            ..WalkCounts::default()
        },
        error: None,
    });
    out
}

/// The events of a fork storm, typed: per fork, 16 x (clone AVC, fork
/// anon_vma, fork AVC) allocated in the parent, the fork, then the child's
/// frees.
pub fn fork_storm_events(n: usize) -> Vec<Event> {
    let mut out = Vec::with_capacity(n);
    let mut ptr = 0xffff_8880_0000_0000_u64;
    let mut child = 10_000;
    while out.len() < n {
        child += 1;
        let mut ptrs = Vec::new();
        for _ in 0..16 {
            for (obj, s) in [
                (object::AVC, site::CLONE),
                (object::ANON_VMA, site::FORK),
                (object::AVC, site::FORK),
            ] {
                ptr += 64;
                ptrs.push((ptr, obj));
                out.push(Event::alloc(obj, s, 100, ptr, true));
            }
        }
        out.push(Event::fork(100, child, "storm"));
        for (p, obj) in ptrs {
            let s = if obj == object::AVC {
                site::UNLINK
            } else {
                site::PUT
            };
            out.push(Event::free(obj, s, child, p));
        }
    }
    out.truncate(n);
    out
}

/// An engine seeded by one walk of `snap`, at `t` seconds, then a tick.
pub fn seeded(snap: &Snapshot, t: u64) -> engine::Engine {
    let mut e = engine::Engine::new(engine::Options::default());
    let s = 1_000_000_000;
    e.apply(Input::Facts(Box::new(facts()))).expect("facts");
    for i in walk_inputs(snap.vmas.iter().cloned(), t * s) {
        e.apply(i).expect("walk");
    }
    e.apply(Input::Tick {
        t: t * s + 2_000_000,
    })
    .expect("tick");
    e
}
