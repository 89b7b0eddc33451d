//! Facts of the measured machine: who it is and what its objects cost.
use serde::{Deserialize, Serialize};

use crate::{
    model::{self, Objects},
    report::{LazyBlock, LazyBytes, LiveBlock, ObjBytes, round2},
};

/// Kernel identity shown in reports.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelId {
    /// `uname -r`.
    pub release: String,
    /// `uname -m`.
    pub arch: String,
}

/// Per-object byte sizes used for KB figures: the slab's object size
/// (`/sys/kernel/slab/*/slab_size`) where readable, else `sizeof` from BTF.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sizes {
    /// anon_vma.
    pub anon_vma: u32,
    /// AVC.
    pub anon_vma_chain: u32,
}

impl Sizes {
    fn bytes(self, o: Objects) -> (u64, u64) {
        (
            o.anon_vma * u64::from(self.anon_vma),
            o.avc * u64::from(self.anon_vma_chain),
        )
    }

    /// A `live` block.
    #[must_use]
    pub fn live(self, o: Objects) -> LiveBlock {
        let (a, c) = self.bytes(o);
        LiveBlock {
            anon_vma: ObjBytes {
                objects: o.anon_vma,
                bytes: a,
            },
            anon_vma_chain: ObjBytes {
                objects: o.avc,
                bytes: c,
            },
        }
    }

    /// A `lazy` block against `actual`.
    #[must_use]
    pub fn lazy(self, lazy: Objects, actual: Objects) -> LazyBlock {
        let (a, c) = self.bytes(lazy);
        LazyBlock {
            anon_vma: LazyBytes {
                objects: lazy.anon_vma,
                bytes: a,
                change_pct: round2(model::change_pct(actual.anon_vma, lazy.anon_vma)),
            },
            anon_vma_chain: LazyBytes {
                objects: lazy.avc,
                bytes: c,
                change_pct: round2(model::change_pct(actual.avc, lazy.avc)),
            },
        }
    }
}
