//! Fuzzes the `/proc/kallsyms` parser and the lookups made on it. Checked:
//! every text symbol of the input is found by name at one of its
//! addresses; ranges are non-empty and start at a symbol of the function;
//! a symbol's address symbolizes to a name at that address; an entry point
//! is the function or one of its renamed copies.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rmapwatch_parse::kallsyms::{Kallsyms, KallsymsError};

/// The functions rmapwatch looks up (and whose ranges it takes).
const WANTED: [&str; 6] = [
    "__anon_vma_prepare",
    "anon_vma_clone",
    "anon_vma_fork",
    "unlink_anon_vmas",
    "anon_vma_ctor",
    "folio_add_new_anon_rmap",
];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let k = match Kallsyms::parse(text, "2\n") {
        Ok(k) => k,
        Err(KallsymsError::Hidden(r)) => {
            assert_eq!(r, "2");
            return;
        }
        Err(e) => panic!("parse returned {e}"),
    };
    // The text symbols as the input lists them.
    let listed: Vec<(u64, &str)> = text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_ascii_whitespace().collect();
            match f[..] {
                [a, "t" | "T", name] => Some((u64::from_str_radix(a, 16).ok()?, name)),
                _ => None,
            }
        })
        .collect();
    for &(_, name) in &listed {
        assert!(k.has(name), "{name}");
        let a = k.addr(name).expect("a listed symbol has an address");
        assert!(listed.contains(&(a, name)), "{name} at {a:#x}");
        assert_eq!(k.entry(name).as_deref(), Some(name));
        let s = k.symbolize(a);
        let (at, off) = s.rsplit_once('+').expect("function+offset");
        assert_eq!(off, "0x0", "{s}");
        assert!(listed.contains(&(a, at)), "{s}");
    }
    for name in WANTED
        .iter()
        .copied()
        .chain(listed.iter().map(|l| l.1).take(8))
    {
        for (start, end) in k.ranges(name) {
            // Empty only at the top of the address space.
            assert!(
                start < end || (start, end) == (u64::MAX, u64::MAX),
                "{name}: [{start:#x}, {end:#x})"
            );
            assert!(
                listed
                    .iter()
                    .any(|&(a, n)| a == start && (n == name || n.starts_with(&format!("{name}.")))),
                "{name}: {start:#x}"
            );
        }
        if let Some(e) = k.entry(name) {
            assert!(k.has(&e));
            assert!(
                e == name || e.starts_with(&format!("{name}.")),
                "{name}: {e}"
            );
            // Never a split-off part of the function.
            assert!(
                e == name || !e[name.len()..].contains(".cold"),
                "{name}: {e}"
            );
        }
    }
});
