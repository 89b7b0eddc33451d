//! Reading `/proc/kallsyms` (the parsing is `rmapwatch_parse::kallsyms`).
pub use rmapwatch_parse::kallsyms::{Kallsyms, KallsymsError};

/// Reads and parses the running kernel's `/proc/kallsyms`.
///
/// # Errors
/// See [`KallsymsError`].
pub fn read() -> Result<Kallsyms, KallsymsError> {
    read_noting(&mut |_| {})
}

/// As [`read`]; where `kptr_restrict` (2) hides the addresses even from
/// root, lowers it to 1 while reading and restores it on every path, and
/// says so through `note`.
///
/// # Errors
/// See [`KallsymsError`]; [`KallsymsError::Hidden`] when it stays hidden.
pub fn read_noting(note: &mut dyn FnMut(String)) -> Result<Kallsyms, KallsymsError> {
    const KPTR: &str = "/proc/sys/kernel/kptr_restrict";
    let text = std::fs::read_to_string("/proc/kallsyms")?;
    let restrict = std::fs::read_to_string(KPTR).unwrap_or_else(|_| "?".into());
    match Kallsyms::parse(&text, &restrict) {
        Err(KallsymsError::Hidden(was)) if was == "2" => {
            if std::fs::write(KPTR, "1").is_err() {
                return Err(KallsymsError::Hidden(was));
            }
            let again = std::fs::read_to_string("/proc/kallsyms");
            let restored = std::fs::write(KPTR, &was).is_ok();
            note(format!(
                "kptr_restrict was 2 (addresses hidden from root): lowered to 1 while \
                 reading /proc/kallsyms, {}",
                if restored {
                    "then set back to 2"
                } else {
                    "and setting it back to 2 FAILED"
                }
            ));
            Kallsyms::parse(&again?, "2")
        }
        r => r,
    }
}
