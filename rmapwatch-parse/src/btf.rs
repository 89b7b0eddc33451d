//! Struct layouts of the running kernel, read from its BTF.
//!
//! aya emits no CO-RE relocations for Rust programs, so every offset the
//! programs use is looked up here at start-up and handed to them as a global.
use btf_rs::{Btf, BtfType, Type};

/// What can go wrong while reading layouts from BTF.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    /// The BTF file is missing or unreadable.
    #[error(
        "cannot read kernel BTF at {path}: {cause} (rmapwatch needs CONFIG_DEBUG_INFO_BTF=y; \
         pass --btf PATH to use a BTF file extracted from this kernel)"
    )]
    Open {
        /// Path that was tried.
        path: String,
        /// Why it failed (in the message, not chained: said once).
        cause: String,
    },
    /// A struct the probes need is not described.
    #[error("kernel BTF has no struct {0}: unsupported kernel")]
    NoStruct(String),
    /// A member the probes need is not in its struct.
    #[error("kernel BTF has no member {1} in struct {0}: unsupported kernel")]
    NoMember(String, String),
    /// A tracepoint whose arguments rmapwatch does not know.
    #[error(
        "unknown layout of tracepoint {0}: ({1}); rmapwatch knows those of Linux 5.10, 5.15 and \
         6.1 to 7.x: unsupported kernel"
    )]
    UnknownTracepoint(String, String),
    /// A tracepoint the programs need is not described.
    #[error("kernel BTF has no tracepoint {0} (btf_trace_{0}): unsupported kernel")]
    NoTracepoint(String),
}

/// One parameter of a function or tracepoint: its name (empty for
/// tracepoints, whose BTF prototypes carry none) and its C type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Param {
    /// Parameter name.
    pub name: String,
    /// C spelling of the type, e.g. `const struct kmem_cache *`.
    pub ty: String,
}

/// An open BTF description of the running kernel.
pub struct KernelBtf {
    btf: Btf,
}

impl KernelBtf {
    /// Reads a kernel's BTF (the bytes of `/sys/kernel/btf/vmlinux`, or of
    /// a file extracted from a boot image); `origin` names it in errors.
    ///
    /// # Errors
    /// [`BtfError::Open`] when the bytes are not BTF.
    pub fn from_bytes(bytes: &[u8], origin: &str) -> Result<Self, BtfError> {
        Btf::from_bytes(bytes)
            .map(|btf| Self { btf })
            .map_err(|e| BtfError::Open {
                path: origin.to_owned(),
                cause: std::error::Error::source(&e)
                    .map_or_else(|| e.to_string(), ToString::to_string),
            })
    }

    fn find_struct(&self, name: &str) -> Result<btf_rs::Struct, BtfError> {
        self.btf
            .resolve_types_by_name(name)
            .ok()
            .into_iter()
            .flatten()
            .find_map(|t| match t {
                Type::Struct(s) if !s.members.is_empty() => Some(s),
                _ => None,
            })
            .ok_or_else(|| BtfError::NoStruct(name.to_owned()))
    }

    /// `sizeof(struct name)`.
    ///
    /// # Errors
    /// [`BtfError::NoStruct`].
    pub fn struct_size(&self, name: &str) -> Result<u32, BtfError> {
        let s = self.find_struct(name)?;
        u32::try_from(s.size()).map_err(|_| BtfError::NoStruct(name.to_owned()))
    }

    /// `offsetof(struct strukt, member)` in bytes, looking through anonymous
    /// structs and unions.
    ///
    /// # Errors
    /// [`BtfError::NoStruct`] or [`BtfError::NoMember`].
    pub fn member_offset(&self, strukt: &str, member: &str) -> Result<u32, BtfError> {
        let s = self.find_struct(strukt)?;
        self.find_member_bits(&s, member, 0)
            .map(|bits| bits / 8)
            .ok_or_else(|| BtfError::NoMember(strukt.to_owned(), member.to_owned()))
    }

    /// [`Self::member_offset`] of a member some kernels lack, or
    /// [`rmapwatch_common::ABSENT`] (which the programs check).
    #[must_use]
    pub fn member_offset_or_absent(&self, strukt: &str, member: &str) -> u32 {
        self.member_offset(strukt, member)
            .unwrap_or(rmapwatch_common::ABSENT)
    }

    /// Anonymous structs and unions nest a few levels deep in real kernels
    /// (`struct page` has 4) and hold a few hundred members in all; a deeper
    /// chain or a larger search is a cycle or a blow-up in a damaged BTF.
    const MAX_ANONYMOUS_DEPTH: u32 = 16;
    const MAX_MEMBERS_SEARCHED: u32 = 100_000;

    fn find_member_bits(&self, s: &btf_rs::Struct, member: &str, base: u32) -> Option<u32> {
        let mut budget = Self::MAX_MEMBERS_SEARCHED;
        self.find_member_bits_within(s, member, base, 0, &mut budget)
    }

    fn find_member_bits_within(
        &self,
        s: &btf_rs::Struct,
        member: &str,
        base: u32,
        depth: u32,
        budget: &mut u32,
    ) -> Option<u32> {
        if depth > Self::MAX_ANONYMOUS_DEPTH {
            return None;
        }
        for m in &s.members {
            *budget = budget.checked_sub(1)?;
            let name = self.btf.resolve_name(m).unwrap_or_default();
            let bits = base.checked_add(m.bit_offset())?;
            if name == member {
                return Some(bits);
            }
            if name.is_empty()
                && let Some(inner) = self.aggregate_of(m)
                && let Some(found) =
                    self.find_member_bits_within(&inner, member, bits, depth + 1, budget)
            {
                return Some(found);
            }
        }
        None
    }

    /// The parameters of tracepoint `name` (its `btf_trace_<name>` typedef,
    /// a pointer to a prototype whose first parameter, `void *__data`, is
    /// left out), or `None` when the kernel has no such tracepoint.
    #[must_use]
    pub fn tracepoint_params(&self, name: &str) -> Option<Vec<Param>> {
        let types = self
            .btf
            .resolve_types_by_name(&format!("btf_trace_{name}"))
            .ok()?;
        let Some(Type::Typedef(t)) = types.into_iter().next() else {
            return None;
        };
        let Type::Ptr(p) = self.btf.resolve_chained_type(&t).ok()? else {
            return None;
        };
        let Type::FuncProto(f) = self.btf.resolve_chained_type(&p).ok()? else {
            return None;
        };
        Some(self.params(&f).into_iter().skip(1).collect())
    }

    /// The parameters of function `name`, if BTF describes it.
    #[must_use]
    pub fn function_params(&self, name: &str) -> Option<Vec<Param>> {
        let types = self.btf.resolve_types_by_name(name).ok()?;
        types.into_iter().find_map(|t| match t {
            Type::Func(func) => match self.btf.resolve_chained_type(&func).ok()? {
                Type::FuncProto(f) => Some(self.params(&f)),
                _ => None,
            },
            _ => None,
        })
    }

    fn params(&self, f: &btf_rs::FuncProto) -> Vec<Param> {
        f.parameters
            .iter()
            .filter(|p| !p.is_variadic())
            .map(|p| Param {
                name: self.btf.resolve_name(p).unwrap_or_default(),
                ty: self
                    .btf
                    .resolve_chained_type(p)
                    .map_or_else(|_| "?".to_owned(), |t| self.c_type(&t, 0)),
            })
            .collect()
    }

    /// A type as C spells it (enough to tell the known layouts apart).
    fn c_type(&self, t: &Type, depth: u32) -> String {
        if depth > 8 {
            return "?".to_owned();
        }
        let named = |x: &dyn BtfType| self.btf.resolve_name(x).unwrap_or_default();
        let inner = |x: &dyn BtfType| {
            self.btf
                .resolve_chained_type(x)
                .map_or_else(|_| "void".to_owned(), |t| self.c_type(&t, depth + 1))
        };
        match t {
            Type::Void => "void".to_owned(),
            Type::Int(x) => named(x),
            Type::Float(x) => named(x),
            Type::Typedef(x) => named(x),
            Type::Struct(x) => format!("struct {}", named(x)),
            Type::Union(x) => format!("union {}", named(x)),
            Type::Enum(x) => format!("enum {}", named(x)),
            Type::Enum64(x) => format!("enum {}", named(x)),
            Type::Fwd(x) => format!("struct {}", named(x)),
            Type::Ptr(x) => format!("{} *", inner(x)),
            Type::Const(x) => format!("const {}", inner(x)),
            Type::Volatile(x) => format!("volatile {}", inner(x)),
            Type::Restrict(x) => inner(x),
            Type::TypeTag(x) => inner(x),
            Type::FuncProto(_) => "fn".to_owned(),
            _ => "?".to_owned(),
        }
    }

    /// The struct or union a member's type resolves to, through typedefs and qualifiers.
    fn aggregate_of(&self, m: &dyn BtfType) -> Option<btf_rs::Struct> {
        let mut t = self.btf.resolve_chained_type(m).ok()?;
        for _ in 0..8 {
            match t {
                Type::Struct(s) | Type::Union(s) => return Some(s),
                Type::Typedef(ref x) => t = self.btf.resolve_chained_type(x).ok()?,
                Type::Const(ref x) => t = self.btf.resolve_chained_type(x).ok()?,
                Type::Volatile(ref x) => t = self.btf.resolve_chained_type(x).ok()?,
                _ => return None,
            }
        }
        None
    }
}

/// The layouts the programs and the daemon use, read from BTF.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Layout {
    /// `sizeof(struct anon_vma)`.
    pub anon_vma_size: u32,
    /// `sizeof(struct anon_vma_chain)`.
    pub avc_size: u32,
    /// `sizeof(struct vm_area_struct)` (for byte figures only).
    pub vma_size: Option<u32>,
    /// `offsetof(struct kmem_cache, ctor)`.
    pub kmem_cache_ctor: u32,
    /// `offsetof(struct task_struct, pid)`.
    pub task_pid: u32,
    /// `offsetof(struct task_struct, tgid)`.
    pub task_tgid: u32,
    /// `offsetof(struct task_struct, comm)`.
    pub task_comm: u32,
    /// `offsetof(struct task_struct, signal)`.
    pub task_signal: u32,
    /// `offsetof(struct signal_struct, live)`, or `ABSENT`.
    pub signal_live: u32,
    /// What the snapshot iterator reads.
    pub snap: rmapwatch_common::SnapshotLayout,
    /// `offsetof(struct anon_vma, rwsem.wait_list)` (inlining detector), or
    /// `ABSENT` (7.x).
    pub anon_vma_wait_list: u32,
    /// `offsetof(struct anon_vma, rwsem)` (the lock `lock:contention_*`
    /// names), or `ABSENT`.
    pub anon_vma_rwsem: u32,
    /// `offsetof(struct folio, mapping)` (`struct page`'s before folios),
    /// or `ABSENT`.
    pub folio_mapping: u32,
    /// `offsetof(struct rmap_walk_control, rmap_one)`, or `ABSENT`.
    pub rwc_rmap_one: u32,
    /// `offsetof(struct rw_semaphore, owner)`, or `ABSENT`.
    pub rwsem_owner: u32,
}

impl Layout {
    /// Reads every layout rmapwatch needs.
    ///
    /// # Errors
    /// The first struct or member that the kernel does not describe.
    pub fn read(btf: &KernelBtf) -> Result<Self, BtfError> {
        Ok(Self {
            anon_vma_size: btf.struct_size("anon_vma")?,
            avc_size: btf.struct_size("anon_vma_chain")?,
            vma_size: btf.struct_size("vm_area_struct").ok(),
            kmem_cache_ctor: btf.member_offset("kmem_cache", "ctor")?,
            task_pid: btf.member_offset("task_struct", "pid")?,
            task_tgid: btf.member_offset("task_struct", "tgid")?,
            task_comm: btf.member_offset("task_struct", "comm")?,
            task_signal: btf.member_offset("task_struct", "signal")?,
            signal_live: btf.member_offset_or_absent("signal_struct", "live"),
            snap: rmapwatch_common::SnapshotLayout {
                vma_start: btf.member_offset("vm_area_struct", "vm_start")?,
                vma_end: btf.member_offset("vm_area_struct", "vm_end")?,
                vma_mm: btf.member_offset("vm_area_struct", "vm_mm")?,
                vma_flags: btf.member_offset("vm_area_struct", "vm_flags")?,
                vma_file: btf.member_offset("vm_area_struct", "vm_file")?,
                vma_pgoff: btf.member_offset("vm_area_struct", "vm_pgoff")?,
                vma_anon_vma: btf.member_offset("vm_area_struct", "anon_vma")?,
                vma_chain: btf.member_offset("vm_area_struct", "anon_vma_chain")?,
                avc_same_vma: btf.member_offset("anon_vma_chain", "same_vma")?,
                avc_anon_vma: btf.member_offset("anon_vma_chain", "anon_vma")?,
                av_root: btf.member_offset("anon_vma", "root")?,
                av_parent: btf.member_offset("anon_vma", "parent")?,
                av_refcount: btf.member_offset("anon_vma", "refcount")?,
                av_num_children: btf.member_offset("anon_vma", "num_children")?,
                av_num_active_vmas: btf.member_offset_or_absent("anon_vma", "num_active_vmas"),
                task_mm: btf.member_offset("task_struct", "mm")?,
                mm_mmap: btf.member_offset_or_absent("mm_struct", "mmap"),
                vma_next: btf.member_offset_or_absent("vm_area_struct", "vm_next"),
                task_real_parent: btf.member_offset("task_struct", "real_parent")?,
                // The fixtures' cut-down BTF has no signal_struct members.
                signal_thread_head: btf.member_offset_or_absent("signal_struct", "thread_head"),
                task_thread_node: btf.member_offset("task_struct", "thread_node")?,
                reserved: 0,
            },
            // 7.x's rwsem has a first_waiter pointer instead of a list.
            anon_vma_wait_list: match (
                btf.member_offset("anon_vma", "rwsem"),
                btf.member_offset("rw_semaphore", "wait_list"),
            ) {
                (Ok(a), Ok(b)) => a + b,
                _ => rmapwatch_common::ABSENT,
            },
            anon_vma_rwsem: btf.member_offset_or_absent("anon_vma", "rwsem"),
            folio_mapping: match btf.member_offset_or_absent("folio", "mapping") {
                rmapwatch_common::ABSENT => btf.member_offset_or_absent("page", "mapping"),
                off => off,
            },
            rwc_rmap_one: btf.member_offset_or_absent("rmap_walk_control", "rmap_one"),
            rwsem_owner: btf.member_offset_or_absent("rw_semaphore", "owner"),
        })
    }
}
