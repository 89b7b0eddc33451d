//! Fuzzes the tracefs `format` parser (the perf path's slab tracepoint
//! fields) on one format, and on two (split at the first NUL) as the
//! alloc and free formats the perf path reads. Checked: every field read
//! has a name that is one C identifier-like word, its numbers are those of
//! its line, the fields print back to a format that reads the same, and
//! the offsets chosen are those of 8-byte fields of the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rmapwatch_parse::args::{format_fields, perf_offsets};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let fields = format_fields(&text);
    let mut again = String::from("name: x\nformat:\n");
    for (name, off, size) in &fields {
        assert!(!name.is_empty(), "{fields:?}");
        assert!(
            !name.contains(|c: char| c.is_whitespace() || c == '[' || c == ';'),
            "{name:?}"
        );
        assert!(text.contains(name.as_str()));
        again.push_str(&format!(
            "\tfield:unsigned long {name};\toffset:{off};\tsize:{size};\tsigned:0;\n"
        ));
    }
    assert_eq!(format_fields(&again), fields, "{again}");

    let (alloc, free) = text.split_once('\0').unwrap_or((&text, &text));
    if let Ok(offs) = perf_offsets(alloc, free) {
        let a = format_fields(alloc);
        let f = format_fields(free);
        let has = |fields: &[(String, u32, u32)], name: &str, off: u32| {
            fields.iter().find(|x| x.0 == name) == Some(&(name.to_owned(), off, 8))
        };
        assert!(has(&a, "call_site", offs[0]) && has(&f, "call_site", offs[0]));
        assert!(has(&a, "ptr", offs[1]) && has(&f, "ptr", offs[1]));
    }
});
