//! Typed kernel events, and their decoding from the programs' ring-buffer
//! records (`rmapwatch_common::Event`, the kernel ABI).
use rmapwatch_common::{COMM_LEN, flags, kind, object, site};
use serde::{Deserialize, Serialize};

/// A task's `comm`: up to 16 bytes, NUL-padded.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Comm(pub [u8; COMM_LEN]);

impl Comm {
    /// From text (truncated to 15 bytes, as the kernel does).
    #[must_use]
    pub fn new(s: &str) -> Self {
        let mut c = [0u8; COMM_LEN];
        let n = s.len().min(COMM_LEN - 1);
        c[..n].copy_from_slice(&s.as_bytes()[..n]);
        Self(c)
    }

    /// The bytes before the first NUL.
    #[must_use]
    pub fn bytes(&self) -> &[u8] {
        let end = self.0.iter().position(|&b| b == 0).unwrap_or(COMM_LEN);
        &self.0[..end]
    }

    /// As text.
    #[must_use]
    pub fn text(&self) -> String {
        String::from_utf8_lossy(self.bytes()).into_owned()
    }
}

impl std::fmt::Debug for Comm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.text())
    }
}

impl Serialize for Comm {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text())
    }
}

impl<'de> Deserialize<'de> for Comm {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Self::new(&String::deserialize(d)?))
    }
}

/// An anon_vma or AVC allocation or free at an rmap call site.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slab {
    /// `rmapwatch_common::object` (validated: below `object::COUNT`).
    pub object: u32,
    /// `rmapwatch_common::site` (validated: below `site::COUNT`).
    pub site: u32,
    /// Allocated inside a fork of the current task, before
    /// `sched_process_fork`: it belongs to the child named next.
    pub in_fork: bool,
    /// Current thread; on a free 0 (unknown) since ABI 10, whose programs
    /// no longer ask the kernel for it (the engine knows a freed object by
    /// its address).
    pub tid: u32,
    /// Current process; on a free 0 since ABI 10, as `tid`.
    pub tgid: u32,
    /// The object's address.
    pub ptr: u64,
}

/// What the kernel reported, typed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// An anon_vma or AVC was allocated.
    Alloc(Slab),
    /// An anon_vma or AVC is being freed.
    Free(Slab),
    /// A task was created (`sched_process_fork`, in the parent).
    Fork {
        /// The parent thread.
        tid: u32,
        /// The parent process.
        tgid: u32,
        /// The child thread.
        child_tid: u32,
        /// The child process (the parent's for a thread).
        child_tgid: u32,
        /// The child's name.
        comm: Comm,
    },
    /// A process executed a new image.
    Exec {
        /// The thread.
        tid: u32,
        /// The process.
        tgid: u32,
        /// The new name.
        comm: Comm,
    },
    /// A thread-group leader exited.
    Exit {
        /// The thread.
        tid: u32,
        /// The process.
        tgid: u32,
        /// Its name.
        comm: Comm,
    },
    /// A wait on an anon_vma root's rwsem ended.
    LockWait(LockWait),
    /// A fork-family syscall returned in the parent (the fork's time as
    /// the syscall tracepoints see it).
    ForkTime {
        /// The forking thread.
        tid: u32,
        /// Its process.
        tgid: u32,
        /// The new task's id (a thread's, for a thread); 0: the fork
        /// failed (what its `dup_mmap` did is no fork's).
        child: u32,
        /// The syscall's time.
        ns: u64,
    },
    /// `dup_mmap` returned (function hooks).
    ForkWork {
        /// The forking thread.
        tid: u32,
        /// Its process.
        tgid: u32,
        /// Time in `dup_mmap`.
        dup_mmap_ns: u64,
        /// Of that, time in `anon_vma_fork` and `anon_vma_clone`.
        anon_ns: u64,
        /// Calls of those two.
        anon_calls: u32,
    },
    /// An rmap walk of an anonymous folio began (function hooks).
    RmapWalk {
        /// The walking thread.
        tid: u32,
        /// Its process.
        tgid: u32,
        /// The folio's anon_vma.
        anon_vma: u64,
        /// The walk's `rmap_one` (tells the caller: reclaim, migration, ...).
        rmap_one: u64,
    },
}

/// A wait on an anon_vma root's rwsem (as the kernel checked it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockWait {
    /// The waiting thread.
    pub tid: u32,
    /// Its process.
    pub tgid: u32,
    /// The anon_vma whose rwsem it waited on (rmap code locks a root's).
    pub anon_vma: u64,
    /// `rmapwatch_common::lock` flags (READ, WRITE, HOLDER_*).
    pub flags: u32,
    /// How long it waited.
    pub wait_ns: u64,
    /// The rwsem's owner at the begin (thread id; a reader-owned one's
    /// last reader), 0 unknown (recordings before ABI 7 too).
    pub holder: u32,
}

impl LockWait {
    /// A writer's wait (else a reader's).
    #[must_use]
    pub const fn write(&self) -> bool {
        self.flags & rmapwatch_common::lock::WRITE != 0
    }
}

impl Event {
    /// A slab allocation (tests, benchmarks).
    #[must_use]
    pub fn alloc(object: u32, site: u32, tgid: u32, ptr: u64, in_fork: bool) -> Self {
        Self::Alloc(Slab {
            object,
            site,
            in_fork,
            tid: tgid,
            tgid,
            ptr,
        })
    }

    /// A slab free (tests, benchmarks).
    #[must_use]
    pub fn free(object: u32, site: u32, tgid: u32, ptr: u64) -> Self {
        Self::Free(Slab {
            object,
            site,
            in_fork: false,
            tid: tgid,
            tgid,
            ptr,
        })
    }

    /// A fork of a single-threaded parent (tests, benchmarks).
    #[must_use]
    pub fn fork(parent: u32, child: u32, comm: &str) -> Self {
        Self::Fork {
            tid: parent,
            tgid: parent,
            child_tid: child,
            child_tgid: child,
            comm: Comm::new(comm),
        }
    }

    /// The kernel ABI record of this event (tests, benchmarks, and the
    /// ring-record round trip).
    #[must_use]
    pub fn to_abi(&self) -> rmapwatch_common::Event {
        use rmapwatch_common::Event as Abi;
        match *self {
            Self::Alloc(s) | Self::Free(s) => Abi {
                kind: if matches!(self, Self::Alloc(_)) {
                    kind::ALLOC
                } else {
                    kind::FREE
                },
                object: s.object,
                site: s.site,
                flags: if s.in_fork { flags::IN_FORK } else { 0 },
                tid: s.tid,
                tgid: s.tgid,
                ptr: s.ptr,
                ..Abi::default()
            },
            Self::Fork {
                tid,
                tgid,
                child_tid,
                child_tgid,
                comm,
            } => Abi {
                kind: kind::FORK,
                tid,
                tgid,
                child_tid,
                child_tgid,
                comm: comm.0,
                ..Abi::default()
            },
            Self::Exec { tid, tgid, comm } => Abi {
                kind: kind::EXEC,
                tid,
                tgid,
                comm: comm.0,
                ..Abi::default()
            },
            Self::Exit { tid, tgid, comm } => Abi {
                kind: kind::EXIT,
                tid,
                tgid,
                comm: comm.0,
                ..Abi::default()
            },
            Self::LockWait(w) => timed(
                Abi {
                    kind: kind::LOCK_WAIT,
                    flags: w.flags,
                    tid: w.tid,
                    tgid: w.tgid,
                    ptr: w.anon_vma,
                    child_tid: w.holder,
                    ..Abi::default()
                },
                w.wait_ns,
                0,
            ),
            Self::ForkTime {
                tid,
                tgid,
                child,
                ns,
            } => timed(
                Abi {
                    kind: kind::FORK_TIME,
                    tid,
                    tgid,
                    child_tid: child,
                    ..Abi::default()
                },
                ns,
                0,
            ),
            Self::ForkWork {
                tid,
                tgid,
                dup_mmap_ns,
                anon_ns,
                anon_calls,
            } => timed(
                Abi {
                    kind: kind::FORK_WORK,
                    tid,
                    tgid,
                    child_tid: anon_calls,
                    ..Abi::default()
                },
                dup_mmap_ns,
                anon_ns,
            ),
            Self::RmapWalk {
                tid,
                tgid,
                anon_vma,
                rmap_one,
            } => timed(
                Abi {
                    kind: kind::RMAP_WALK,
                    tid,
                    tgid,
                    ptr: anon_vma,
                    ..Abi::default()
                },
                rmap_one,
                0,
            ),
        }
    }

    /// A timing record (lock waits, fork times, rmap walks): these travel
    /// in their own stream messages, which older readers skip.
    #[must_use]
    pub const fn is_timing(&self) -> bool {
        matches!(
            self,
            Self::LockWait(_)
                | Self::ForkTime { .. }
                | Self::ForkWork { .. }
                | Self::RmapWalk { .. }
        )
    }
}

fn timed(mut abi: rmapwatch_common::Event, a: u64, b: u64) -> rmapwatch_common::Event {
    abi.set_times(a, b);
    abi
}

/// A record that is not an event.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Wrong length: the object and the daemon disagree on the ABI.
    #[error(
        "ring buffer record of {0} bytes, expected {full} (an event), {slab} (a slab event) \
         or {enter} (a fork window)",
        full = size_of::<rmapwatch_common::Event>(),
        slab = size_of::<rmapwatch_common::SlabEvent>(),
        enter = size_of::<rmapwatch_common::ForkWindow>()
    )]
    Length(usize),
    /// Unknown kind, object or site.
    #[error("ring buffer record with invalid fields (kind {0}, object {1}, site {2})")]
    Invalid(u32, u32, u32),
}

/// Validates an ABI record.
///
/// # Errors
/// [`DecodeError::Invalid`] for an unknown kind, object or site.
pub fn from_abi(e: &rmapwatch_common::Event) -> Result<Event, DecodeError> {
    let slab = || {
        if (e.object as usize) < object::COUNT && (e.site as usize) < site::COUNT {
            Ok(Slab {
                object: e.object,
                site: e.site,
                in_fork: e.flags & flags::IN_FORK != 0,
                tid: e.tid,
                tgid: e.tgid,
                ptr: e.ptr,
            })
        } else {
            Err(DecodeError::Invalid(e.kind, e.object, e.site))
        }
    };
    Ok(match e.kind {
        kind::ALLOC => Event::Alloc(slab()?),
        kind::FREE => Event::Free(slab()?),
        kind::FORK => Event::Fork {
            tid: e.tid,
            tgid: e.tgid,
            child_tid: e.child_tid,
            child_tgid: e.child_tgid,
            comm: Comm(e.comm),
        },
        kind::EXEC => Event::Exec {
            tid: e.tid,
            tgid: e.tgid,
            comm: Comm(e.comm),
        },
        kind::EXIT => Event::Exit {
            tid: e.tid,
            tgid: e.tgid,
            comm: Comm(e.comm),
        },
        kind::LOCK_WAIT => Event::LockWait(LockWait {
            tid: e.tid,
            tgid: e.tgid,
            anon_vma: e.ptr,
            flags: e.flags,
            wait_ns: e.times().0,
            holder: e.child_tid,
        }),
        kind::FORK_TIME => Event::ForkTime {
            tid: e.tid,
            tgid: e.tgid,
            child: e.child_tid,
            ns: e.times().0,
        },
        kind::FORK_WORK => Event::ForkWork {
            tid: e.tid,
            tgid: e.tgid,
            dup_mmap_ns: e.times().0,
            anon_ns: e.times().1,
            anon_calls: e.child_tid,
        },
        kind::RMAP_WALK => Event::RmapWalk {
            tid: e.tid,
            tgid: e.tgid,
            anon_vma: e.ptr,
            rmap_one: e.times().0,
        },
        k => return Err(DecodeError::Invalid(k, e.object, e.site)),
    })
}

/// Decodes one ring-buffer record.
///
/// # Errors
/// [`DecodeError`] when the record is not a valid event.
pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
    if let Some(s) = record::<rmapwatch_common::SlabEvent>(bytes) {
        return from_slab_abi(&s);
    }
    let e = record::<rmapwatch_common::Event>(bytes).ok_or(DecodeError::Length(bytes.len()))?;
    from_abi(&e)
}

/// A ring record of type `T` (an ABI record: plain integers, any bit
/// pattern valid), if `bytes` is one by length.
fn record<T: Copy>(bytes: &[u8]) -> Option<T> {
    // SAFETY: length checked; `T` is one of the ABI's plain-integer records
    // (any bit pattern is valid); read_unaligned copes with the ring's
    // alignment.
    (bytes.len() == size_of::<T>()).then(|| unsafe { bytes.as_ptr().cast::<T>().read_unaligned() })
}

/// Validates a slab program's record (the short form of an allocation or
/// free).
///
/// # Errors
/// [`DecodeError::Invalid`] for another kind, an unknown object or site.
pub fn from_slab_abi(s: &rmapwatch_common::SlabEvent) -> Result<Event, DecodeError> {
    let (k, o, site) = (u32::from(s.kind), u32::from(s.object), u32::from(s.site));
    if k != kind::ALLOC && k != kind::FREE {
        return Err(DecodeError::Invalid(k, o, site));
    }
    from_abi(&rmapwatch_common::Event {
        kind: k,
        object: o,
        site,
        flags: u32::from(s.flags),
        tid: s.tid,
        tgid: s.tgid,
        ptr: s.ptr,
        ..rmapwatch_common::Event::default()
    })
}

/// Encodes an event as the kernel would write it (tests and benchmarks):
/// allocations and frees in the slab programs' short record, the rest in
/// the full one.
#[must_use]
pub fn encode(e: &Event) -> Vec<u8> {
    fn bytes_of<T>(v: &T) -> Vec<u8> {
        // SAFETY: ABI records are repr(C) plain integers with no padding.
        unsafe { std::slice::from_raw_parts(std::ptr::from_ref(v).cast::<u8>(), size_of::<T>()) }
            .to_vec()
    }
    let abi = e.to_abi();
    if let Event::Alloc(_) | Event::Free(_) = e {
        bytes_of(&rmapwatch_common::SlabEvent {
            ptr: abi.ptr,
            tid: abi.tid,
            tgid: abi.tgid,
            kind: abi.kind as u8,
            object: abi.object as u8,
            site: abi.site as u8,
            flags: abi.flags as u8,
            pad: 0,
        })
    } else {
        bytes_of(&abi)
    }
}

/// Threads inside a fork-family syscall (their fork windows), kept from
/// the ring's records in the order the kernel reserved them: a thread's own
/// records come in the order it ran them, whatever CPU it ran on. A window
/// opens with the syscall's entry ([`rmapwatch_common::ForkWindow`]) and
/// closes with the thread's `sched_process_fork` (every allocation of a
/// fork comes before it), its fork's time (the syscall's return, timed), a
/// closing [`rmapwatch_common::ForkWindow`] (the return, not timed), the
/// thread's exec, or its process's exit (streamed once per process).
/// `anon_vma_clone`'s allocations inside a window are the child's
/// (`in_fork`); elsewhere (VMA splits, mremap) the thread's own.
#[derive(Debug, Default)]
pub struct ForkWindows {
    /// Open windows: thread -> its process.
    open: std::collections::HashMap<u32, u32>,
    /// Windows dropped because too many were open at once.
    pub overflowed: u64,
}

/// Open windows kept at most: more means closes were missed (a detach
/// mid-fork), and the oldest state is dropped rather than grown.
const WINDOWS_MAX: usize = 1 << 16;

impl ForkWindows {
    /// Decodes one ring record: a fork window's record opens or closes its
    /// thread's window (`None`); any other record is decoded and passed
    /// through [`Self::apply`].
    ///
    /// # Errors
    /// As [`decode`].
    pub fn decode(&mut self, bytes: &[u8]) -> Result<Option<Event>, DecodeError> {
        if let Some(f) = record::<rmapwatch_common::ForkWindow>(bytes) {
            if f.open == 0 {
                self.open.remove(&f.tid);
            } else {
                self.enter(f.tid, f.tgid);
            }
            return Ok(None);
        }
        let mut e = decode(bytes)?;
        self.apply(&mut e);
        Ok(Some(e))
    }

    /// Opens `tid`'s window (a thread of `tgid`).
    pub fn enter(&mut self, tid: u32, tgid: u32) {
        if self.open.len() >= WINDOWS_MAX && !self.open.contains_key(&tid) {
            self.overflowed += self.open.len() as u64;
            self.open.clear();
        }
        self.open.insert(tid, tgid);
    }

    /// Flags an `anon_vma_clone` allocation inside its thread's window;
    /// closes windows at a fork's end, an exec, a process's exit. A window
    /// is its thread's in its process: a thread id reused in another
    /// process (its window's close lost, its process's exit too) does not
    /// inherit it.
    pub fn apply(&mut self, e: &mut Event) {
        match e {
            Event::Alloc(s) if s.site == site::CLONE && self.open.get(&s.tid) == Some(&s.tgid) => {
                s.in_fork = true;
            }
            Event::Fork { tid, .. } | Event::ForkTime { tid, .. } | Event::Exec { tid, .. } => {
                self.open.remove(tid);
            }
            Event::Exit { tgid, .. } => {
                let tgid = *tgid;
                self.open.retain(|_, g| *g != tgid);
            }
            _ => {}
        }
    }

    /// Windows open now.
    #[cfg(test)]
    #[must_use]
    pub fn len(&self) -> usize {
        self.open.len()
    }

    /// Whether none is open.
    #[cfg(test)]
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_bad_records() {
        let e = Event::alloc(object::AVC, site::FORK, 7, 0xff11_0000_1234_5678, true);
        let bytes = encode(&e);
        assert_eq!(decode(&bytes), Ok(e));
        assert_eq!(
            decode(&bytes[1..]),
            Err(DecodeError::Length(bytes.len() - 1))
        );
        let mut bad = e.to_abi();
        bad.site = 99;
        assert!(matches!(from_abi(&bad), Err(DecodeError::Invalid(..))));
        bad.kind = 77;
        assert!(matches!(from_abi(&bad), Err(DecodeError::Invalid(77, ..))));
        let mut fork = Event::fork(1, 2, "kid").to_abi();
        fork.site = 99;
        assert!(
            from_abi(&fork).is_ok(),
            "site is ignored outside slab events"
        );
        for e in [
            Event::free(object::ANON_VMA, site::PUT, 3, 0x40),
            Event::fork(1, 2, "kid"),
            Event::Exec {
                tid: 4,
                tgid: 4,
                comm: Comm::new("sh"),
            },
            Event::Exit {
                tid: 5,
                tgid: 5,
                comm: Comm::new("x"),
            },
            Event::LockWait(LockWait {
                tid: 6,
                tgid: 5,
                anon_vma: 0xffff_8880_0000_1000,
                flags: rmapwatch_common::lock::WRITE | rmapwatch_common::lock::HOLDER_FORKING,
                wait_ns: 12_345,
                holder: 9,
            }),
            Event::ForkTime {
                tid: 7,
                tgid: 7,
                child: 8,
                ns: 99_000,
            },
            Event::ForkWork {
                tid: 7,
                tgid: 7,
                dup_mmap_ns: 50_000,
                anon_ns: 20_000,
                anon_calls: 33,
            },
            Event::RmapWalk {
                tid: 9,
                tgid: 9,
                anon_vma: 0xffff_8880_0000_2000,
                rmap_one: 0xffff_ffff_8100_0000,
            },
        ] {
            assert_eq!(decode(&encode(&e)), Ok(e));
        }
    }

    #[test]
    fn slab_events_come_short_and_full_alike() {
        let e = Event::alloc(
            object::ANON_VMA,
            site::PREPARE,
            11,
            0xffff_8880_0abc_d000,
            false,
        );
        let short = encode(&e);
        assert_eq!(short.len(), size_of::<rmapwatch_common::SlabEvent>());
        let abi = e.to_abi();
        // SAFETY: repr(C) plain integers.
        let full = unsafe {
            std::slice::from_raw_parts(
                (&raw const abi).cast::<u8>(),
                size_of::<rmapwatch_common::Event>(),
            )
        };
        assert_eq!(decode(&short), decode(full));
        assert_eq!(decode(&short), Ok(e));
        let forked = Event::alloc(object::AVC, site::FORK, 12, 0x80, true);
        assert_eq!(decode(&encode(&forked)), Ok(forked));
        // A short record is never a fork, an exit or a lock wait.
        let mut not_slab = short.clone();
        not_slab[16] = rmapwatch_common::kind::FORK as u8;
        assert!(matches!(decode(&not_slab), Err(DecodeError::Invalid(..))));
        let mut bad_site = short;
        bad_site[18] = 200;
        assert!(matches!(
            decode(&bad_site),
            Err(DecodeError::Invalid(_, _, 200))
        ));
        assert!(DecodeError::Length(3).to_string().contains("56"));
        assert!(DecodeError::Length(3).to_string().contains("24"));
    }

    #[test]
    fn comm_stops_at_nul_and_truncates_like_the_kernel() {
        assert_eq!(Comm::new("bash").text(), "bash");
        assert_eq!(Comm([b'x'; COMM_LEN]).text(), "x".repeat(COMM_LEN));
        assert_eq!(Comm::new(&"y".repeat(40)).text(), "y".repeat(15));
    }

    fn window(tid: u32, tgid: u32, open: u32) -> Vec<u8> {
        let f = rmapwatch_common::ForkWindow {
            tid,
            tgid,
            open,
            pad: 0,
        };
        // SAFETY: plain integers.
        unsafe { std::slice::from_raw_parts((&raw const f).cast::<u8>(), size_of_val(&f)).to_vec() }
    }

    /// The kernel's records of one thread forking while another splits a
    /// VMA, interleaved as two CPUs reserve them.
    #[test]
    fn clone_allocations_inside_a_threads_fork_window_are_the_childs() {
        let mut w = ForkWindows::default();
        let clone =
            |tid: u32, ptr: u64| encode(&Event::alloc(object::AVC, site::CLONE, tid, ptr, false));
        let mut out = Vec::new();
        for rec in [
            clone(10, 0x100),  // before: a split
            window(10, 10, 1), // 10 forks
            clone(10, 0x140),  // the child's
            clone(20, 0x180),  // 20 splits meanwhile
            encode(&Event::alloc(object::AVC, site::PREPARE, 10, 0x1c0, false)),
            encode(&Event::fork(10, 11, "kid")), // closes 10's
            clone(10, 0x200),                    // after: a split
            window(20, 20, 1),
            encode(&Event::ForkTime {
                tid: 20,
                tgid: 20,
                child: 0,
                ns: 5,
            }), // failed
            clone(20, 0x240),
            window(30, 30, 1), // 30 forks, not timed (FORKING full),
            window(30, 30, 0), // and fails: the close comes alone
            clone(30, 0x280),
            window(40, 40, 1), // 40 forks, then execs (a skipped exit)
            encode(&Event::Exec {
                tid: 40,
                tgid: 40,
                comm: Comm::new("sh"),
            }),
            clone(40, 0x2c0),
        ] {
            if let Some(e) = w.decode(&rec).unwrap() {
                out.push(e);
            }
        }
        let in_fork: Vec<(u64, bool)> = out
            .iter()
            .filter_map(|e| match e {
                Event::Alloc(s) => Some((s.ptr, s.in_fork)),
                _ => None,
            })
            .collect();
        assert_eq!(
            in_fork,
            [
                (0x100, false),
                (0x140, true),
                (0x180, false),
                (0x1c0, false),
                (0x200, false),
                (0x240, false),
                (0x280, false),
                (0x2c0, false),
            ]
        );
        assert!(w.is_empty());
        assert_eq!(out.len(), 11, "the windows' records are not events");
    }

    #[test]
    fn a_process_exiting_closes_every_window_of_its_threads_and_a_flood_is_bounded() {
        let mut w = ForkWindows::default();
        // Two threads of 5 inside a fork, one of 6; 5's exit is streamed
        // once, by whichever thread exits last (here 7).
        for (tid, tgid) in [(5, 5), (8, 5), (6, 6)] {
            assert_eq!(w.decode(&window(tid, tgid, 1)).unwrap(), None);
        }
        let mut exit = Event::Exit {
            tid: 7,
            tgid: 5,
            comm: Comm::new("x"),
        };
        w.apply(&mut exit);
        assert_eq!(w.len(), 1, "6's stays open");
        let mut split = Event::alloc(object::AVC, site::CLONE, 8, 0x40, false);
        w.apply(&mut split);
        assert_eq!(
            split,
            Event::alloc(object::AVC, site::CLONE, 8, 0x40, false)
        );
        for tid in 0..=(WINDOWS_MAX as u32) {
            w.enter(tid, tid);
        }
        assert_eq!(w.len(), 1);
        assert_eq!(w.overflowed, WINDOWS_MAX as u64);
    }

    #[test]
    fn a_window_left_open_is_not_inherited_by_a_reused_thread_id() {
        let mut w = ForkWindows::default();
        // 50 (of process 50) forks; its close and its process's exit are
        // lost. Thread id 50 comes back as a thread of process 60, splits.
        assert_eq!(w.decode(&window(50, 50, 1)).unwrap(), None);
        let split = |tgid: u32| {
            let mut e = Event::alloc(object::AVC, site::CLONE, 50, 0x40, false);
            if let Event::Alloc(s) = &mut e {
                s.tgid = tgid;
            }
            encode(&e)
        };
        let in_fork = |e: Option<Event>| matches!(e, Some(Event::Alloc(s)) if s.in_fork);
        assert!(!in_fork(w.decode(&split(60)).unwrap()), "60's own split");
        assert!(in_fork(w.decode(&split(50)).unwrap()), "50's fork's clone");
    }
}
