//! Fuzzes what rmapwatch reads from a kernel's BTF: the layouts (struct
//! sizes and member offsets), the slab tracepoints' and the rmap hooks'
//! prototypes, and what it decides from them. Checked, besides no panic,
//! hang or runaway recursion (cyclic types): answers are consistent with
//! each other (a member's struct has a size; the layout reads the same
//! twice; the argument layout chosen is one the probes know).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rmapwatch_common::arg2;
use rmapwatch_parse::{
    args,
    btf::{KernelBtf, Layout},
};

fuzz_target!(|data: &[u8]| {
    let Ok(btf) = KernelBtf::from_bytes(data, "fuzz") else {
        return;
    };
    let layout = Layout::read(&btf);
    assert_eq!(
        format!("{layout:?}"),
        format!("{:?}", Layout::read(&btf)),
        "the same BTF reads as the same layout"
    );
    for (s, m) in [
        ("anon_vma", "root"),
        ("task_struct", "comm"),
        ("vm_area_struct", "anon_vma_chain"),
        ("kmem_cache", "ctor"),
    ] {
        if btf.member_offset(s, m).is_ok() {
            assert!(btf.struct_size(s).is_ok(), "struct {s} has {m} but no size");
        }
    }
    for tp in [
        "kmem_cache_alloc",
        "kmem_cache_alloc_node",
        "kmem_cache_free",
    ] {
        if let Some(p) = btf.tracepoint_params(tp)
            && let Ok(a) = args::slab_arg2(tp, &p)
        {
            assert!(
                [arg2::CACHE, arg2::SIZES, arg2::NAME, arg2::NONE].contains(&a),
                "{tp}: {a}"
            );
        }
    }
    let new = btf.function_params("folio_add_new_anon_rmap");
    let ptes = btf.function_params("folio_add_anon_rmap_ptes");
    if let Ok((vma, _)) = args::hook_positions(
        new.as_deref().map(|p| ("folio_add_new_anon_rmap", p)),
        ptes.as_deref().map(|p| ("folio_add_anon_rmap_ptes", p)),
    ) && let Some(p) = &new
    {
        assert_eq!(p[vma as usize].name, "vma");
    }
});
