//! The prototype and layout readers on the BTF of the real kernels of the
//! matrix (Debian's 5.10, 6.1, 6.12 and 7.x, x86_64 and arm64), cut down by
//! `cargo xtask btf-fixtures` to what rmapwatch reads.
use std::path::PathBuf;

use rmapwatch_common::{ABSENT, arg2};
use rmapwatch_live::kernel::{KernelBtf, Layout, args, open_btf};

fn fixture(name: &str) -> KernelBtf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/btf/{name}.btf"));
    open_btf(&p).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// What each kernel must read as.
struct Want {
    series: &'static str,
    alloc: u32,
    free: u32,
    alloc_node: bool,
    rmap_new: &'static str,
    ptes: &'static str,
    nr_pages: u32,
    mmap_list: bool,
}

const WANT: [Want; 4] = [
    Want {
        series: "5.10",
        alloc: arg2::SIZES,
        free: arg2::NONE,
        alloc_node: true,
        rmap_new: "page_add_new_anon_rmap",
        ptes: "page_add_anon_rmap",
        nr_pages: ABSENT,
        mmap_list: true,
    },
    Want {
        series: "6.1",
        alloc: arg2::CACHE,
        free: arg2::CACHE,
        alloc_node: false,
        rmap_new: "page_add_new_anon_rmap",
        ptes: "page_add_anon_rmap",
        nr_pages: ABSENT,
        mmap_list: false,
    },
    Want {
        series: "6.12",
        alloc: arg2::CACHE,
        free: arg2::CACHE,
        alloc_node: false,
        rmap_new: "folio_add_new_anon_rmap",
        ptes: "folio_add_anon_rmap_ptes",
        nr_pages: 2,
        mmap_list: false,
    },
    Want {
        series: "7.x",
        alloc: arg2::CACHE,
        free: arg2::CACHE,
        alloc_node: false,
        rmap_new: "folio_add_new_anon_rmap",
        ptes: "folio_add_anon_rmap_ptes",
        nr_pages: 2,
        mmap_list: false,
    },
];

#[test]
fn every_kernel_of_the_matrix_reads_as_its_layout() {
    for arch in ["x86_64", "aarch64"] {
        for w in &WANT {
            let name = format!("{}-{arch}", w.series);
            let btf = fixture(&name);
            let tp = |t: &str| btf.tracepoint_params(t);
            let alloc = tp("kmem_cache_alloc").unwrap_or_else(|| panic!("{name}: no alloc"));
            let free = tp("kmem_cache_free").unwrap_or_else(|| panic!("{name}: no free"));
            assert_eq!(
                args::slab_arg2("kmem_cache_alloc", &alloc).unwrap(),
                w.alloc,
                "{name} alloc {alloc:?}"
            );
            assert_eq!(
                args::slab_arg2("kmem_cache_free", &free).unwrap(),
                w.free,
                "{name} free {free:?}"
            );
            match tp("kmem_cache_alloc_node") {
                Some(node) => {
                    assert!(w.alloc_node, "{name}: unexpected kmem_cache_alloc_node");
                    assert_eq!(
                        args::slab_arg2("kmem_cache_alloc_node", &node).unwrap(),
                        w.alloc
                    );
                }
                None => assert!(!w.alloc_node, "{name}: no kmem_cache_alloc_node"),
            }
            let new = btf
                .function_params(w.rmap_new)
                .unwrap_or_else(|| panic!("{name}: no {}", w.rmap_new));
            let ptes = btf
                .function_params(w.ptes)
                .unwrap_or_else(|| panic!("{name}: no {}", w.ptes));
            assert_eq!(
                args::hook_positions(Some((w.rmap_new, &new)), Some((w.ptes, &ptes))).unwrap(),
                (1, w.nr_pages),
                "{name}: {new:?} {ptes:?}"
            );
            let l = Layout::read(&btf).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(l.anon_vma_size > 0 && l.avc_size > 0, "{name}");
            assert_ne!(
                l.anon_vma_size, l.avc_size,
                "{name}: sizes tell the kinds apart"
            );
            // vm_area_struct: 152 to 200 bytes on the matrix's kernels.
            let vma = l
                .vma_size
                .unwrap_or_else(|| panic!("{name}: no vm_area_struct size"));
            assert!(
                (128..=512).contains(&vma),
                "{name}: vm_area_struct {vma} bytes"
            );
            eprintln!("{name}: sizeof(struct vm_area_struct) = {vma}");
            assert_eq!(
                l.snap.mm_mmap != ABSENT && l.snap.vma_next != ABSENT,
                w.mmap_list,
                "{name}: mm->mmap list"
            );
            // The wait list of the anon_vma's rwsem lies inside it (7.x's
            // rwsem has a first_waiter pointer instead).
            if w.series == "7.x" {
                assert_eq!(l.anon_vma_wait_list, ABSENT, "{name}");
            } else {
                assert!(l.anon_vma_wait_list + 16 <= l.anon_vma_size, "{name}");
            }
        }
    }
}

#[test]
fn the_sites_and_hooks_are_described_on_every_kernel() {
    for arch in ["x86_64", "aarch64"] {
        for w in &WANT {
            let name = format!("{}-{arch}", w.series);
            let btf = fixture(&name);
            for f in rmapwatch_common::site::NAMES {
                let p = btf
                    .function_params(f)
                    .unwrap_or_else(|| panic!("{name}: no {f}"));
                assert!(!p.is_empty(), "{name}: {f}");
            }
            // 7.x's anon_vma_clone takes a third argument; the hook only
            // counts calls, whatever the count.
            let clone = btf.function_params("anon_vma_clone").unwrap();
            let want = if w.series == "7.x" { 3 } else { 2 };
            assert_eq!(clone.len(), want, "{name}: anon_vma_clone{clone:?}");
        }
    }
}
