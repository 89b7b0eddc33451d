//! Argument layouts of the slab tracepoints and rmap hooks, from the running
//! kernel's BTF prototypes (and tracefs formats for classic tracepoints).
//!
//! | kernel | `kmem_cache_alloc` | `kmem_cache_free` |
//! |---|---|---|
//! | 5.10, 5.11 | `(call_site, ptr, bytes_req, bytes_alloc, gfp)` + `_node` | `(call_site, ptr)` |
//! | 5.12 .. 5.19 | the same | `(call_site, ptr, const char *name)` |
//! | 6.0 | `(call_site, ptr, s, gfp, node)` + ... | `(call_site, ptr, name)` |
//! | 6.1 .. 7.x | `(call_site, ptr, struct kmem_cache *s, gfp, node)` | `(call_site, ptr, const struct kmem_cache *s)` |
//!
//! Any other shape is refused: reading an argument by the wrong position
//! would count silently wrong numbers.
use rmapwatch_common::{ABSENT, arg2};

use crate::btf::{BtfError, Param};

/// Which layout a slab tracepoint's prototype has (its third argument).
///
/// # Errors
/// [`BtfError::UnknownTracepoint`] for any other shape.
pub fn slab_arg2(tracepoint: &str, params: &[Param]) -> Result<u32, BtfError> {
    let types: Vec<&str> = params.iter().map(|p| p.ty.as_str()).collect();
    let unknown = || BtfError::UnknownTracepoint(tracepoint.to_owned(), types.join(", "));
    let is_cache = |t: &str| t.ends_with("struct kmem_cache *");
    // BTF spells C's `unsigned long` as DWARF does.
    let is_ulong = |t: &str| matches!(t, "unsigned long" | "long unsigned int");
    let is_size = |t: &str| t == "size_t" || is_ulong(t);
    if types.len() < 2 || !is_ulong(types[0]) || !types[1].ends_with("void *") {
        return Err(unknown());
    }
    let alloc = tracepoint.starts_with("kmem_cache_alloc");
    let layout = match (alloc, &types[2..]) {
        (true, [s, _gfp, ..]) if is_cache(s) => arg2::CACHE,
        (true, [req, got, _gfp, ..]) if is_size(req) && is_size(got) => arg2::SIZES,
        (false, [s]) if is_cache(s) => arg2::CACHE,
        (false, [name]) if *name == "const char *" => arg2::NAME,
        (false, []) => arg2::NONE,
        _ => return Err(unknown()),
    };
    Ok(layout)
}

/// Whether `rmap_walk_anon`'s prototype is `(folio|page *, rwc *, ...)`, the
/// positions its hook reads: `Err` says the prototype found.
///
/// # Errors
/// Another shape (the hook is then not attached).
pub fn rmap_walk_args(params: &[Param]) -> Result<(), String> {
    let types: Vec<&str> = params.iter().map(|p| p.ty.as_str()).collect();
    match types.as_slice() {
        [first, rwc, ..]
            if matches!(*first, "struct folio *" | "struct page *")
                && *rwc == "struct rmap_walk_control *" =>
        {
            Ok(())
        }
        _ => Err(format!(
            "rmap_walk_anon({}): the hook reads (folio or page, rwc)",
            types.join(", ")
        )),
    }
}

/// Position of the parameter called `name`.
#[must_use]
pub fn position(params: &[Param], name: &str) -> Option<u32> {
    params
        .iter()
        .position(|p| p.name == name)
        .and_then(|i| u32::try_from(i).ok())
}

/// Positions of `vma` in the new-anon-rmap hook and of `nr_pages` in the
/// ptes hook ([`ABSENT`] where the function has none: `page_add_anon_rmap`
/// maps one page, or one compound page, per call). `None` prototypes (no
/// such function) keep the current kernel's positions.
///
/// # Errors
/// A prototype without `vma` (a signature rmapwatch does not know).
pub fn hook_positions(
    rmap_new: Option<(&str, &[Param])>,
    ptes: Option<(&str, &[Param])>,
) -> Result<(u32, u32), BtfError> {
    let vma = match rmap_new {
        Some((f, p)) => {
            position(p, "vma").ok_or_else(|| BtfError::NoMember(f.to_owned(), "vma".into()))?
        }
        None => 1,
    };
    let nr = match ptes {
        Some((_, p)) => position(p, "nr_pages").unwrap_or(ABSENT),
        None => ABSENT,
    };
    Ok((vma, nr))
}

/// A classic tracepoint's fields: name -> (offset, size), from its tracefs
/// `format` file.
#[must_use]
pub fn format_fields(text: &str) -> Vec<(String, u32, u32)> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            let decl = l.strip_prefix("field:")?.split(';').next()?;
            let num = |key: &str| -> Option<u32> {
                l.split(';')
                    .find_map(|part| part.trim().strip_prefix(key))
                    .and_then(|v| v.trim().parse().ok())
            };
            // "unsigned long call_site", "__data_loc char[] name", "char comm[16]"
            let name = decl.split_whitespace().last()?.split('[').next()?;
            // "char [16]": no name to look a field up by.
            if name.is_empty() {
                return None;
            }
            Some((name.to_owned(), num("offset:")?, num("size:")?))
        })
        .collect()
}

/// The perf-path offsets (`call_site`, `ptr`, `bytes_req`, `bytes_alloc`,
/// free `name`) from the two formats.
///
/// # Errors
/// A field missing or not 8 bytes wide (the free name is optional).
pub fn perf_offsets(alloc: &str, free: &str) -> Result<[u32; 5], String> {
    let alloc = format_fields(alloc);
    let free = format_fields(free);
    let get = |fields: &[(String, u32, u32)], event: &str, name: &str, size: u32| match fields
        .iter()
        .find(|f| f.0 == name)
    {
        Some(&(_, off, sz)) if sz == size => Ok(off),
        Some(&(_, _, sz)) => Err(format!("{event}:{name} is {sz} bytes, not {size}")),
        None => Err(format!("{event} has no field {name}")),
    };
    let call_site = get(&alloc, "kmem_cache_alloc", "call_site", 8)?;
    let ptr = get(&alloc, "kmem_cache_alloc", "ptr", 8)?;
    if get(&free, "kmem_cache_free", "call_site", 8)? != call_site
        || get(&free, "kmem_cache_free", "ptr", 8)? != ptr
    {
        return Err("kmem_cache_alloc and kmem_cache_free place call_site or ptr apart".into());
    }
    Ok([
        call_site,
        ptr,
        get(&alloc, "kmem_cache_alloc", "bytes_req", 8)?,
        get(&alloc, "kmem_cache_alloc", "bytes_alloc", 8)?,
        get(&free, "kmem_cache_free", "name", 4).unwrap_or(ABSENT),
    ])
}

/// Offset of `ret` (a `long`) in a `syscalls:sys_exit_*` tracefs format.
///
/// # Errors
/// No such field of 8 bytes.
pub fn syscall_ret_offset(format: &str) -> Result<u32, String> {
    match format_fields(format).iter().find(|f| f.0 == "ret") {
        Some(&(_, off, 8)) => Ok(off),
        Some(&(_, _, sz)) => Err(format!("ret is {sz} bytes, not 8")),
        None => Err("no field ret".into()),
    }
}

/// Whether raw tracepoint programs may be preempted on this kernel, so that
/// their recursion guard drops events: 7.0 runs tracepoint callbacks under
/// SRCU-fast and BPF's raw tracepoint runner then only disables migration
/// (with `CONFIG_PREEMPT_RCU`). `preempt_rcu` is `None` when unknown.
#[must_use]
pub fn raw_tracepoints_preemptible(release: &str, preempt_rcu: Option<bool>) -> bool {
    version(release).0 >= 7 && preempt_rcu != Some(false)
}

/// `(major, minor)` of a kernel release such as `6.12.117+deb12-cloud-amd64`.
#[must_use]
pub fn version(release: &str) -> (u32, u32) {
    let mut nums = release
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<u32>().unwrap_or(0));
    (nums.next().unwrap_or(0), nums.next().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(types: &[&str]) -> Vec<Param> {
        types
            .iter()
            .map(|t| Param {
                name: String::new(),
                ty: (*t).to_owned(),
            })
            .collect()
    }

    #[test]
    fn rmap_walk_anon_takes_a_folio_or_a_page_then_rwc() {
        let rwc = "struct rmap_walk_control *";
        // 5.10 .. 5.17: a page; 5.18+: a folio (and `bool locked` after).
        assert!(rmap_walk_args(&params(&["struct page *", rwc, "bool"])).is_ok());
        assert!(rmap_walk_args(&params(&["struct folio *", rwc, "bool"])).is_ok());
        let e = rmap_walk_args(&params(&[rwc, "struct folio *"])).unwrap_err();
        assert!(
            e.contains("rmap_walk_anon(struct rmap_walk_control *, struct folio *)"),
            "{e}"
        );
        assert!(rmap_walk_args(&[]).is_err());
    }

    #[test]
    fn the_syscall_exit_return_value_is_found_or_refused() {
        let f = "format:\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
                 \tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;\n\
                 \tfield:long ret;\toffset:16;\tsize:8;\tsigned:1;\n";
        assert_eq!(syscall_ret_offset(f), Ok(16));
        assert!(syscall_ret_offset(&f.replace("size:8", "size:4")).is_err());
        assert!(syscall_ret_offset("format:\n").is_err());
    }

    #[test]
    fn each_known_slab_layout_and_an_unknown_one() {
        let v510_alloc = params(&["unsigned long", "const void *", "size_t", "size_t", "gfp_t"]);
        let v510_node = params(&[
            "unsigned long",
            "const void *",
            "size_t",
            "size_t",
            "gfp_t",
            "int",
        ]);
        assert_eq!(
            slab_arg2("kmem_cache_alloc", &v510_alloc).unwrap(),
            arg2::SIZES
        );
        assert_eq!(
            slab_arg2("kmem_cache_alloc_node", &v510_node).unwrap(),
            arg2::SIZES
        );
        let v510_free = params(&["unsigned long", "const void *"]);
        assert_eq!(
            slab_arg2("kmem_cache_free", &v510_free).unwrap(),
            arg2::NONE
        );
        let v515_free = params(&["unsigned long", "const void *", "const char *"]);
        assert_eq!(
            slab_arg2("kmem_cache_free", &v515_free).unwrap(),
            arg2::NAME
        );
        let v61_alloc = params(&[
            "long unsigned int",
            "const void *",
            "struct kmem_cache *",
            "gfp_t",
            "int",
        ]);
        assert_eq!(
            slab_arg2("kmem_cache_alloc", &v61_alloc).unwrap(),
            arg2::CACHE
        );
        let v61_free = params(&["unsigned long", "const void *", "const struct kmem_cache *"]);
        assert_eq!(
            slab_arg2("kmem_cache_free", &v61_free).unwrap(),
            arg2::CACHE
        );
        let odd = params(&[
            "unsigned long",
            "const void *",
            "int",
            "struct kmem_cache *",
        ]);
        let e = slab_arg2("kmem_cache_free", &odd).unwrap_err().to_string();
        assert!(
            e.contains("unknown layout of tracepoint kmem_cache_free"),
            "{e}"
        );
        assert!(
            e.contains("(unsigned long, const void *, int, struct kmem_cache *)"),
            "{e}"
        );
        let swapped = params(&["const void *", "unsigned long"]);
        assert!(slab_arg2("kmem_cache_alloc", &swapped).is_err());
    }

    fn named(names: &[&str]) -> Vec<Param> {
        names
            .iter()
            .map(|n| Param {
                name: (*n).to_owned(),
                ty: String::new(),
            })
            .collect()
    }

    #[test]
    fn hook_positions_follow_parameter_names() {
        let new_61 = named(&["page", "vma", "address"]);
        let ptes_61 = named(&["page", "vma", "address", "flags"]);
        assert_eq!(
            hook_positions(
                Some(("page_add_new_anon_rmap", &new_61)),
                Some(("page_add_anon_rmap", &ptes_61))
            )
            .unwrap(),
            (1, ABSENT),
            "6.1: page_add_anon_rmap(page, vma, address, flags) has no nr_pages"
        );
        let ptes_612 = named(&["folio", "page", "nr_pages", "vma", "address", "flags"]);
        let new_612 = named(&["folio", "vma", "address", "flags"]);
        assert_eq!(
            hook_positions(
                Some(("folio_add_new_anon_rmap", &new_612)),
                Some(("folio_add_anon_rmap_ptes", &ptes_612))
            )
            .unwrap(),
            (1, 2)
        );
        let odd = named(&["folio", "mm", "address"]);
        assert!(hook_positions(Some(("f", &odd)), None).is_err());
    }

    const ALLOC_FORMAT: &str = "name: kmem_cache_alloc
ID: 490
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:unsigned long call_site;\toffset:8;\tsize:8;\tsigned:0;
\tfield:const void * ptr;\toffset:16;\tsize:8;\tsigned:0;
\tfield:size_t bytes_req;\toffset:24;\tsize:8;\tsigned:0;
\tfield:size_t bytes_alloc;\toffset:32;\tsize:8;\tsigned:0;
\tfield:unsigned long gfp_flags;\toffset:40;\tsize:8;\tsigned:0;
\tfield:int node;\toffset:48;\tsize:4;\tsigned:1;
\tfield:bool accounted;\toffset:52;\tsize:1;\tsigned:0;
";
    const FREE_FORMAT: &str = "name: kmem_cache_free
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned long call_site;\toffset:8;\tsize:8;\tsigned:0;
\tfield:const void * ptr;\toffset:16;\tsize:8;\tsigned:0;
\tfield:__data_loc char[] name;\toffset:24;\tsize:4;\tsigned:0;
";

    #[test]
    fn a_format_field_without_a_name_is_left_out() {
        // Found by the fuzzer (fuzz/fuzz_targets/tracefs_format.rs): the
        // name was "", which no lookup can mean.
        assert_eq!(
            format_fields(
                "\tfield:char [16];\toffset:8;\tsize:16;\tsigned:0;\n\
                 \tfield:pid_t parent_pid;\toffset:24;\tsize:4;\tsigned:1;\n"
            ),
            [("parent_pid".to_owned(), 24, 4)]
        );
    }

    #[test]
    fn perf_offsets_come_from_the_formats() {
        assert_eq!(
            perf_offsets(ALLOC_FORMAT, FREE_FORMAT).unwrap(),
            [8, 16, 24, 32, 24]
        );
        let narrow = ALLOC_FORMAT.replace(
            "size_t bytes_req;\toffset:24;\tsize:8",
            "u32 bytes_req;\toffset:24;\tsize:4",
        );
        let e = perf_offsets(&narrow, FREE_FORMAT).unwrap_err();
        assert!(e.contains("bytes_req is 4 bytes"), "{e}");
        assert!(perf_offsets("", FREE_FORMAT).is_err());
    }

    #[test]
    fn raw_tracepoints_are_preemptible_from_7_0_with_preempt_rcu() {
        assert!(!raw_tracepoints_preemptible("6.18.44-fc", None));
        assert!(!raw_tracepoints_preemptible(
            "6.12.117+deb12-cloud-amd64",
            Some(true)
        ));
        assert!(raw_tracepoints_preemptible(
            "7.3.4+deb13-cloud-amd64",
            Some(true)
        ));
        assert!(raw_tracepoints_preemptible("7.3.4+deb13-cloud-amd64", None));
        assert!(!raw_tracepoints_preemptible(
            "7.3.4+deb13-arm64-16k",
            Some(false)
        ));
    }
}
