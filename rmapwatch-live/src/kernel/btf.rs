//! Struct layouts of the running kernel, read from its BTF.
//!
//! aya emits no CO-RE relocations for Rust programs, so every offset the
//! programs use is looked up here at start-up and handed to them as a global.
use std::path::Path;

use btf_rs::{Btf, BtfType, Type};

/// What can go wrong while reading layouts from BTF.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    /// The BTF file is missing or unreadable.
    #[error(
        "cannot read kernel BTF at {path}: {source} (rmapwatch needs CONFIG_DEBUG_INFO_BTF=y; \
         pass --btf PATH to use a BTF file extracted from this kernel)"
    )]
    Open {
        /// Path that was tried.
        path: String,
        /// Why it failed.
        source: btf_rs::Error,
    },
    /// A struct the probes need is not described.
    #[error("kernel BTF has no struct {0}: unsupported kernel")]
    NoStruct(String),
    /// A member the probes need is not in its struct.
    #[error("kernel BTF has no member {1} in struct {0}: unsupported kernel")]
    NoMember(String, String),
}

/// An open BTF description of the running kernel.
pub struct KernelBtf {
    btf: Btf,
}

impl KernelBtf {
    /// Opens a BTF file (usually `/sys/kernel/btf/vmlinux`).
    ///
    /// # Errors
    /// [`BtfError::Open`] when the file is missing or not BTF.
    pub fn open(path: &Path) -> Result<Self, BtfError> {
        Btf::from_file(path)
            .map(|btf| Self { btf })
            .map_err(|source| BtfError::Open {
                path: path.display().to_string(),
                source,
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

    fn find_member_bits(&self, s: &btf_rs::Struct, member: &str, base: u32) -> Option<u32> {
        for m in &s.members {
            let name = self.btf.resolve_name(m).unwrap_or_default();
            if name == member {
                return Some(base + m.bit_offset());
            }
            if name.is_empty()
                && let Some(inner) = self.aggregate_of(m)
                && let Some(bits) = self.find_member_bits(&inner, member, base + m.bit_offset())
            {
                return Some(bits);
            }
        }
        None
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
    /// `offsetof(struct kmem_cache, ctor)`.
    pub kmem_cache_ctor: u32,
    /// `offsetof(struct task_struct, pid)`.
    pub task_pid: u32,
    /// `offsetof(struct task_struct, tgid)`.
    pub task_tgid: u32,
    /// `offsetof(struct task_struct, comm)`.
    pub task_comm: u32,
    /// What the snapshot iterator reads.
    pub snap: rmapwatch_common::SnapshotLayout,
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
            kmem_cache_ctor: btf.member_offset("kmem_cache", "ctor")?,
            task_pid: btf.member_offset("task_struct", "pid")?,
            task_tgid: btf.member_offset("task_struct", "tgid")?,
            task_comm: btf.member_offset("task_struct", "comm")?,
            snap: rmapwatch_common::SnapshotLayout {
                vma_start: btf.member_offset("vm_area_struct", "vm_start")?,
                vma_end: btf.member_offset("vm_area_struct", "vm_end")?,
                vma_mm: btf.member_offset("vm_area_struct", "vm_mm")?,
                vma_flags: btf.member_offset("vm_area_struct", "vm_flags")?,
                vma_file: btf.member_offset("vm_area_struct", "vm_file")?,
                vma_anon_vma: btf.member_offset("vm_area_struct", "anon_vma")?,
                vma_chain: btf.member_offset("vm_area_struct", "anon_vma_chain")?,
                avc_same_vma: btf.member_offset("anon_vma_chain", "same_vma")?,
                avc_anon_vma: btf.member_offset("anon_vma_chain", "anon_vma")?,
                av_root: btf.member_offset("anon_vma", "root")?,
                av_parent: btf.member_offset("anon_vma", "parent")?,
                av_refcount: btf.member_offset("anon_vma", "refcount")?,
                av_num_children: btf.member_offset("anon_vma", "num_children")?,
                av_num_active_vmas: btf
                    .member_offset("anon_vma", "num_active_vmas")
                    .unwrap_or(rmapwatch_common::ABSENT),
            },
        })
    }
}
