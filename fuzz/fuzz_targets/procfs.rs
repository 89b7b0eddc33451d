//! Fuzzes the readers of `/proc` and `/sys` text: `status` (kernel thread
//! or not, and its name), `maps` lines (start and path), `cmdline`'s first
//! argument, `comm`, `/sys/kernel/slab/<cache>/objects` and its other
//! numbers, `/proc/slabinfo`'s kmalloc caches, and the bytes of
//! `/proc/<pid>/pagemap`. Checked: results are those of the input (a path
//! prints back to a maps line that reads the same; argv0 is the bytes
//! before the first NUL; a kernel thread's name is one trimmed line of it;
//! a kmalloc size is the name's number; shared pages are present pages,
//! present pages entries).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rmapwatch_engine::inspect::PidStatus;
use rmapwatch_parse::procfs::{
    anon_pages, cmdline_argv0, comm, kmalloc_size, map_paths, maps_line, pagemap_entries,
    pid_status, slab_number, slab_objects, slabinfo_names,
};

fuzz_target!(|data: &[u8]| {
    if let Some(a) = cmdline_argv0(data) {
        assert!(!a.is_empty());
        let first = data.split(|&b| b == 0).next().unwrap_or_default();
        assert_eq!(a, String::from_utf8_lossy(first));
    } else {
        assert!(data.first().is_none_or(|&b| b == 0));
    }

    let text = String::from_utf8_lossy(data);
    match pid_status(&text) {
        PidStatus::KernelThread(name) => {
            assert!(!name.contains('\n'));
            assert_eq!(name.trim(), name);
            assert!(name.is_empty() || text.contains(&name));
        }
        PidStatus::User => assert!(
            text.lines()
                .any(|l| l.starts_with("VmSize:") || l.starts_with("Kthread:"))
        ),
        PidStatus::Absent => panic!("a status that was read says the process exists"),
    }

    let paths = map_paths(&text);
    for line in text.split('\n') {
        if let Some((start, path)) = maps_line(line) {
            assert!(!path.is_empty() && !path.starts_with(' '), "{line:?}");
            assert!(paths.contains_key(&start));
            let again = format!("{start:x}-{start:x} rw-p 00000000 00:00 0     {path}");
            assert_eq!(maps_line(&again), Some((start, path)), "{again:?}");
        }
    }
    assert!(paths.len() <= text.split('\n').count());

    let c = comm(&text);
    assert_eq!(c.trim_end(), c);
    assert!(text.starts_with(&c));

    if let Some(n) = slab_objects(&text) {
        let first = text.split_whitespace().next().unwrap_or_default();
        assert_eq!(
            first
                .trim_start_matches('+')
                .trim_start_matches('0')
                .to_owned(),
            if n == 0 { String::new() } else { n.to_string() }
        );
    }

    for name in slabinfo_names(&text) {
        assert!(!name.is_empty() && !name.contains(char::is_whitespace));
        if let Some(n) = kmalloc_size(name) {
            let digits = name["kmalloc-".len()..].trim_end_matches(['k', 'M']);
            let unit = n / digits.parse::<u32>().unwrap();
            assert!([1, 1 << 10, 1 << 20].contains(&unit), "{name}: {n}");
        }
    }
    if let Some(n) = slab_number(&text) {
        assert_eq!(text.trim().trim_start_matches('+').parse::<u32>(), Ok(n));
    }

    let entries: Vec<u64> = pagemap_entries(data).collect();
    assert_eq!(entries.len(), data.len() / 8);
    let pages = anon_pages(&entries);
    assert!(pages.shared <= pages.present && pages.present <= entries.len() as u64);
});
