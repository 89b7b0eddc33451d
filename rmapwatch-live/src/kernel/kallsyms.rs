//! Function address ranges from `/proc/kallsyms`.
//!
//! The slab helpers of mm/rmap.c are inlined, so the kmem tracepoints'
//! `call_site` lies inside the enclosing rmap function; its range is
//! `[its address, the next symbol's address)`. Compiler-split parts
//! (`name.cold`, `name.isra.0`, ...) belong to the same function.
use std::collections::HashMap;

/// What can go wrong while reading kallsyms.
#[derive(Debug, thiserror::Error)]
pub enum KallsymsError {
    /// The file could not be read.
    #[error("cannot read /proc/kallsyms: {0}")]
    Read(#[from] std::io::Error),
    /// Every address reads as zero.
    #[error(
        "kernel symbol addresses are hidden (/proc/sys/kernel/kptr_restrict is {0}): rmapwatch \
         classifies slab call sites by address; run as root with kptr_restrict 0 or 1"
    )]
    Hidden(String),
    /// A function the tracepoint path needs is absent.
    #[error("kernel function {0} not found in /proc/kallsyms: unsupported kernel")]
    Missing(String),
}

/// One text symbol.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Sym {
    addr: u64,
    name: String,
}

/// The core kernel's text symbols, sorted by address.
#[derive(Clone, Debug, Default)]
pub struct Kallsyms {
    text: Vec<Sym>,
    by_name: HashMap<String, usize>,
}

impl Kallsyms {
    /// Parses the text of `/proc/kallsyms` (module symbols are skipped).
    ///
    /// # Errors
    /// [`KallsymsError::Hidden`] when addresses are all zero.
    pub fn parse(text: &str, kptr_restrict: &str) -> Result<Self, KallsymsError> {
        let mut syms = Vec::new();
        let mut nonzero = false;
        for line in text.lines() {
            let mut it = line.split_ascii_whitespace();
            let (Some(addr), Some(ty), Some(name)) = (it.next(), it.next(), it.next()) else {
                continue;
            };
            if it.next().is_some() {
                continue; // "[module]"
            }
            let Ok(addr) = u64::from_str_radix(addr, 16) else {
                continue;
            };
            nonzero |= addr != 0;
            if matches!(ty, "t" | "T") {
                syms.push(Sym {
                    addr,
                    name: name.to_owned(),
                });
            }
        }
        if !nonzero {
            return Err(KallsymsError::Hidden(kptr_restrict.trim().to_owned()));
        }
        syms.sort_by_key(|s| s.addr);
        let by_name = syms
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.clone(), i))
            .collect();
        Ok(Self {
            text: syms,
            by_name,
        })
    }

    /// Reads and parses the running kernel's `/proc/kallsyms`.
    ///
    /// # Errors
    /// See [`KallsymsError`].
    pub fn read() -> Result<Self, KallsymsError> {
        let text = std::fs::read_to_string("/proc/kallsyms")?;
        let restrict = std::fs::read_to_string("/proc/sys/kernel/kptr_restrict")
            .unwrap_or_else(|_| "?".into());
        Self::parse(&text, &restrict)
    }

    /// Address of a text symbol.
    #[must_use]
    pub fn addr(&self, name: &str) -> Option<u64> {
        self.by_name.get(name).map(|&i| self.text[i].addr)
    }

    /// Whether a text symbol exists (kprobes attach by name).
    #[must_use]
    pub fn has(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// Every `[start, end)` range of the function `name`, its split parts included.
    #[must_use]
    pub fn ranges(&self, name: &str) -> Vec<(u64, u64)> {
        let prefix = format!("{name}.");
        self.text
            .iter()
            .enumerate()
            .filter(|(_, s)| s.name == name || s.name.starts_with(&prefix))
            .map(|(i, s)| {
                let end = self.text[i + 1..]
                    .iter()
                    .map(|n| n.addr)
                    .find(|&a| a > s.addr)
                    .unwrap_or(s.addr + 1);
                (s.addr, end)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
ffffffff81604330 T __put_anon_vma
ffffffff816043e0 T __anon_vma_prepare
ffffffff816045d0 T unlink_anon_vmas
ffffffff81000000 T _stext
ffffffff816047c0 T anon_vma_clone
ffffffff816049b0 T anon_vma_fork
ffffffff81604b00 t anon_vma_fork.cold
ffffffff81604c00 T next_fn
ffffffff82000000 d some_data
ffffffffc0000000 t mod_fn\t[some_module]
";

    #[test]
    fn ranges_end_at_the_next_symbol_and_include_cold_parts() {
        let k = Kallsyms::parse(SAMPLE, "0").unwrap();
        assert_eq!(
            k.ranges("__anon_vma_prepare"),
            vec![(0xffffffff816043e0, 0xffffffff816045d0)]
        );
        assert_eq!(
            k.ranges("anon_vma_fork"),
            vec![
                (0xffffffff816049b0, 0xffffffff81604b00),
                (0xffffffff81604b00, 0xffffffff81604c00)
            ]
        );
        assert!(k.ranges("nonexistent").is_empty());
        assert!(!k.has("mod_fn"), "module symbols are skipped");
        assert!(!k.has("some_data"), "data symbols are not text");
    }

    #[test]
    fn all_zero_addresses_mean_hidden() {
        let hidden = SAMPLE
            .lines()
            .map(|l| format!("0000000000000000{}", &l[16..]))
            .collect::<Vec<_>>()
            .join("\n");
        let err = Kallsyms::parse(&hidden, "2\n").unwrap_err();
        assert!(err.to_string().contains("kptr_restrict is 2"), "{err}");
    }
}
