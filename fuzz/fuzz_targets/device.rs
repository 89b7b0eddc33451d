//! Fuzzes what a device (or whatever answers as one) says over adb:
//! `adb devices -l`, the probe's reply (its `getprop` values among them)
//! and the agent's stderr lines, all read as the host reads them (lossy
//! UTF-8). Checked: every field stays on one line and the parsed lists and
//! probe results print back to text that parses to the same; what reaches
//! the terminal has no control character.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rmapwatch_engine::text::{is_control, printable_lines};
use rmapwatch_parse::device::{Device, agent_note, parse_devices, parse_probe};

fn render_probe(d: &Device) -> String {
    format!(
        "arch={}\nrelease={}\ntype={}\ndebuggable={}\nsdk={}\nmodel={}\nuid={}\nsu={}\nbtf={}\n\
         selinux={}\nend=1\n",
        d.arch,
        d.release,
        d.build_type,
        u8::from(d.debuggable),
        d.sdk,
        d.model,
        d.uid,
        d.su.as_deref().unwrap_or(""),
        u8::from(d.btf),
        d.selinux
    )
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);

    let listed = parse_devices(&text);
    assert!(listed.len() <= text.lines().count());
    let mut again = String::from("List of devices attached\n");
    for l in &listed {
        assert!(!l.serial.is_empty());
        assert!(!l.serial.contains(char::is_whitespace), "{l:?}");
        assert!(!l.state.contains('\n'), "{l:?}");
        assert!(text.contains(&l.serial));
        again.push_str(&format!("{}\t{}\n", l.serial, l.state));
    }
    assert_eq!(parse_devices(&again), listed, "{again:?}");

    if let Ok(d) = parse_probe(&text) {
        assert!(!d.arch.is_empty(), "{d:?}");
        for f in [
            &d.arch,
            &d.release,
            &d.build_type,
            &d.sdk,
            &d.model,
            &d.uid,
            &d.selinux,
        ] {
            assert!(!f.contains('\n'), "{d:?}");
            assert_eq!(f.trim(), f.as_str(), "{d:?}");
        }
        let again = render_probe(&d);
        assert_eq!(parse_probe(&again).as_ref(), Ok(&d), "{again:?}");
    }

    for line in text.lines() {
        let note = agent_note(line);
        assert!(!note.chars().any(is_control), "{note:?}");
        if !line.chars().any(is_control) {
            assert_eq!(line.strip_prefix("rmapwatch: ").unwrap_or(line), note);
        }
    }
    let shown = printable_lines(&text);
    assert!(
        !shown
            .chars()
            .any(|c| is_control(c) && c != '\n' && c != '\t')
    );
    // One character for one: the lines stay the lines the device sent.
    assert_eq!(shown.chars().count(), text.chars().count());
    assert_eq!(shown.matches('\n').count(), text.matches('\n').count());
});
