//! Regression: every input the fuzzers kept (`fuzz/corpus/<target>.tar.zst`,
//! minimized after their long runs) and their seeds (`fuzz/seeds/<target>/`)
//! go through the parsers they fed without a panic, under plain `cargo
//! test` (no nightly). The properties themselves are checked by the targets
//! (`fuzz/fuzz_targets/`).
use std::path::{Path, PathBuf};

fn fuzz() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// The kept corpus and the seeds of `target`.
fn inputs(target: &str) -> Vec<Vec<u8>> {
    let archive = std::fs::File::open(fuzz().join(format!("corpus/{target}.tar.zst")))
        .unwrap_or_else(|e| panic!("{target}: {e}"));
    let zst = ruzstd::decoding::StreamingDecoder::new(archive).unwrap();
    let mut files = Vec::new();
    for entry in tar::Archive::new(zst).entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.header().entry_type().is_file() {
            let mut b = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut b).unwrap();
            files.push(b);
        }
    }
    for e in std::fs::read_dir(fuzz().join(format!("seeds/{target}"))).unwrap() {
        files.push(std::fs::read(e.unwrap().path()).unwrap());
    }
    assert!(files.len() >= 20, "{target}: {} inputs", files.len());
    files
}

#[test]
fn device_replies_kept_by_the_fuzzer_parse() {
    use rmapwatch_parse::device::{agent_note, parse_devices, parse_probe};
    for b in inputs("device") {
        let t = String::from_utf8_lossy(&b);
        let _ = parse_devices(&t);
        let _ = parse_probe(&t);
        for l in t.lines() {
            let _ = agent_note(l);
        }
    }
}

#[test]
fn procfs_texts_kept_by_the_fuzzer_parse() {
    use rmapwatch_parse::procfs::{
        anon_pages, cmdline_argv0, comm, kmalloc_size, map_paths, pagemap_entries, pid_status,
        slab_number, slab_objects, slabinfo_names,
    };
    for b in inputs("procfs") {
        let _ = cmdline_argv0(&b);
        let t = String::from_utf8_lossy(&b);
        let _ = (pid_status(&t), map_paths(&t), comm(&t), slab_objects(&t));
        let _ = (
            slab_number(&t),
            slabinfo_names(&t).filter_map(kmalloc_size).count(),
        );
        let _ = anon_pages(&pagemap_entries(&b).collect::<Vec<_>>());
    }
}

#[cfg(feature = "kernel")]
#[test]
fn kernel_texts_kept_by_the_fuzzer_parse() {
    use rmapwatch_parse::{
        args::{format_fields, perf_offsets},
        btf::{KernelBtf, Layout},
        kallsyms::Kallsyms,
    };
    for b in inputs("kallsyms") {
        if let Ok(k) = Kallsyms::parse(&String::from_utf8_lossy(&b), "0") {
            let _ = (k.ranges("anon_vma_fork"), k.entry("anon_vma_fork"));
        }
    }
    for b in inputs("btf") {
        if let Ok(btf) = KernelBtf::from_bytes(&b, "corpus") {
            let _ = Layout::read(&btf);
            let _ = btf.tracepoint_params("kmem_cache_free");
        }
    }
    for b in inputs("tracefs_format") {
        let t = String::from_utf8_lossy(&b);
        let _ = format_fields(&t);
        let (a, f) = t.split_once('\0').unwrap_or((&t, &t));
        let _ = perf_offsets(a, f);
    }
}
