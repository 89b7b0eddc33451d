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
        "kernel symbol addresses are hidden (/proc/sys/kernel/kptr_restrict is {0}, and it could \
         not be lowered for the read): rmapwatch classifies slab call sites by address; run as \
         root, or set kptr_restrict to 1 (sysctl kernel.kptr_restrict=1)"
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

    /// The symbol a kprobe on function `name` attaches to: `name` itself,
    /// else the one entry point the compiler renamed (`name.llvm.N`,
    /// `name.isra.N`, `name.constprop.N`, `name.part.N`, `name.cfi`, or
    /// several of these); never a `.cold` part or a CFI jump table.
    #[must_use]
    pub fn entry(&self, name: &str) -> Option<String> {
        if self.has(name) {
            return Some(name.to_owned());
        }
        let prefix = format!("{name}.");
        let mut found: Vec<&str> = self
            .text
            .iter()
            .filter_map(|s| s.name.strip_prefix(&prefix).map(|rest| (s, rest)))
            .filter(|(_, rest)| is_entry_suffix(rest))
            .map(|(s, _)| s.name.as_str())
            .collect();
        found.sort_unstable();
        found.dedup();
        // Two renamed copies (e.g. .isra.0 and .constprop.0): the first,
        // reported as such by the caller through the symbol it names.
        found.first().map(|s| (*s).to_owned())
    }

    /// `function+0xoffset` of a text address (the inlining detector's call
    /// sites), or the address in hex.
    #[must_use]
    pub fn symbolize(&self, addr: u64) -> String {
        let i = self.text.partition_point(|s| s.addr <= addr);
        match i.checked_sub(1).map(|i| &self.text[i]) {
            Some(s) => format!("{}+{:#x}", s.name, addr - s.addr),
            None => format!("{addr:#x}"),
        }
    }

    /// Every `[start, end)` range of the function `name`, its split parts included.
    #[must_use]
    pub fn ranges(&self, name: &str) -> Vec<(u64, u64)> {
        let prefix = format!("{name}.");
        self.text
            .iter()
            .enumerate()
            .filter(|(_, s)| {
                s.name == name
                    || s.name
                        .strip_prefix(&prefix)
                        .is_some_and(|rest| !rest.ends_with("cfi_jt"))
            })
            .map(|(i, s)| {
                let end = self.text[i + 1..]
                    .iter()
                    .map(|n| n.addr)
                    .find(|&a| a > s.addr)
                    // The last symbol: one byte (none at the very top
                    // of the address space, where nothing is called from).
                    .unwrap_or(s.addr.saturating_add(1));
                (s.addr, end)
            })
            .collect()
    }
}

/// Whether `rest` (what follows `name.`) is a chain of compiler suffixes
/// that keeps the function's entry: `llvm.N`, `isra.N`, `constprop.N`,
/// `part.N`, `cfi`.
fn is_entry_suffix(rest: &str) -> bool {
    let mut it = rest.split('.').peekable();
    let mut any = false;
    while let Some(word) = it.next() {
        match word {
            "llvm" | "isra" | "constprop" | "part" => {
                if !it
                    .next()
                    .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()) && !n.is_empty())
                {
                    return false;
                }
            }
            "cfi" => {}
            _ => return false,
        }
        any = true;
    }
    any
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

    #[test]
    fn renamed_entry_points_are_found_and_cold_parts_are_not() {
        let text = "\
ffff000008100000 T folio_add_new_anon_rmap.llvm.1234567890
ffff000008100100 t __anon_vma_prepare.isra.0
ffff000008100200 t __anon_vma_prepare.cold
ffff000008100300 t anon_vma_clone.constprop.0.isra.0
ffff000008100400 t unlink_anon_vmas.part.3
ffff000008100500 t __put_anon_vma.cfi
ffff000008100600 t anon_vma_fork.cfi_jt
ffff000008100700 t anon_vma_fork.cold
ffff000008100800 T next_fn
";
        let k = Kallsyms::parse(text, "0").unwrap();
        let entry = |n: &str| k.entry(n);
        assert_eq!(
            entry("folio_add_new_anon_rmap").as_deref(),
            Some("folio_add_new_anon_rmap.llvm.1234567890")
        );
        assert_eq!(
            entry("__anon_vma_prepare").as_deref(),
            Some("__anon_vma_prepare.isra.0")
        );
        assert_eq!(
            entry("anon_vma_clone").as_deref(),
            Some("anon_vma_clone.constprop.0.isra.0")
        );
        assert_eq!(
            entry("unlink_anon_vmas").as_deref(),
            Some("unlink_anon_vmas.part.3")
        );
        assert_eq!(
            entry("__put_anon_vma").as_deref(),
            Some("__put_anon_vma.cfi")
        );
        assert_eq!(entry("anon_vma_fork"), None, "a jump table and a cold part");
        assert_eq!(
            k.ranges("anon_vma_fork"),
            vec![(0xffff000008100700, 0xffff000008100800)],
            "the cold part is code of the function, the CFI jump table is not"
        );
        assert_eq!(
            k.symbolize(0xffff000008100410),
            "unlink_anon_vmas.part.3+0x10"
        );
        assert_eq!(k.symbolize(0x10), "0x10");
    }

    #[test]
    fn a_symbol_at_the_top_of_the_address_space_does_not_overflow() {
        // Found with the fuzz target (fuzz/fuzz_targets/kallsyms.rs): the
        // last symbol's range ended at its address + 1.
        let k = Kallsyms::parse("ffffffffffffffff T anon_vma_fork\n", "0").unwrap();
        assert_eq!(k.ranges("anon_vma_fork"), [(u64::MAX, u64::MAX)]);
        assert_eq!(k.symbolize(u64::MAX), "anon_vma_fork+0x0");
    }
}
