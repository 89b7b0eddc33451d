//! Reading `/proc/kallsyms` (the parsing is `rmapwatch_parse::kallsyms`).
pub use rmapwatch_parse::kallsyms::{Kallsyms, KallsymsError};

use std::{
    fs::File,
    io::{Read as _, Seek as _, SeekFrom},
    sync::Arc,
};

const KPTR: &str = "/proc/sys/kernel/kptr_restrict";

/// Reads and parses the running kernel's `/proc/kallsyms`.
///
/// # Errors
/// See [`KallsymsError`].
pub fn read() -> Result<Kallsyms, KallsymsError> {
    read_noting(&mut |_| {}).map(|(k, _)| k)
}

/// `/proc/kallsyms` as opened when its addresses were shown: the kernel
/// decides that once, at open (`kallsyms_open` caches the opener's
/// credentials against `kptr_restrict`), so reading it again through this
/// still shows them after rmapwatch dropped CAP_SYSLOG and set
/// `kptr_restrict` back. A fresh open then would read zeros. (Kernels
/// before 5.8 decided at each read, and name no site after the drop.)
/// One reader at a time: a read seeks the shared file to its start.
#[derive(Clone, Debug)]
pub struct Opened(Arc<File>);

impl Opened {
    /// Reads and parses it again, from its start.
    ///
    /// # Errors
    /// See [`KallsymsError`].
    pub fn read(&self) -> Result<Kallsyms, KallsymsError> {
        let text = read_from_start(&self.0)?;
        Kallsyms::parse(
            &text,
            &std::fs::read_to_string(KPTR).unwrap_or_else(|_| "?".into()),
        )
    }
}

fn read_from_start(mut f: &File) -> std::io::Result<String> {
    f.seek(SeekFrom::Start(0))?;
    let mut text = String::new();
    f.read_to_string(&mut text)?;
    Ok(text)
}

fn open_and_read() -> std::io::Result<(String, Opened)> {
    let f = File::open("/proc/kallsyms")?;
    let text = read_from_start(&f)?;
    Ok((text, Opened(Arc::new(f))))
}

/// As [`read`], with the file it was read from kept open ([`Opened`]);
/// where `kptr_restrict` (2) hides the addresses even from root, lowers it
/// to 1 while opening and reading and restores it on every path, and says
/// so through `note`.
///
/// # Errors
/// See [`KallsymsError`]; [`KallsymsError::Hidden`] when it stays hidden.
pub fn read_noting(note: &mut dyn FnMut(String)) -> Result<(Kallsyms, Opened), KallsymsError> {
    let (text, opened) = open_and_read()?;
    let restrict = std::fs::read_to_string(KPTR).unwrap_or_else(|_| "?".into());
    match Kallsyms::parse(&text, &restrict) {
        Err(KallsymsError::Hidden(was)) if was == "2" => {
            if std::fs::write(KPTR, "1").is_err() {
                return Err(KallsymsError::Hidden(was));
            }
            let again = open_and_read();
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
            let (text, opened) = again?;
            Ok((Kallsyms::parse(&text, "2")?, opened))
        }
        r => r.map(|k| (k, opened)),
    }
}
