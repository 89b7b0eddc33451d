//! The programs' log (aya-log's wire format, `aya_log_common`), decoded
//! here rather than by `aya_log::EbpfLogger`: its `flush` unwraps the
//! decoding of each record (a malformed record would abort the daemon)
//! and reads its tags into enums unchecked. A record this decoder cannot
//! read becomes a line that says so; nothing panics, nothing is skipped
//! without a word.
//!
//! A record: its length (`u16`, the length included), then six header
//! fields in any order (target, level, module, file, line, the number of
//! arguments), then the arguments; each field and argument is a tag
//! (`u8`), a length (`u16`) and that many bytes, native-endian. The
//! format string's literal pieces travel as `Str` arguments, a `{:x}` as a
//! display hint before its value.

use std::fmt::Write as _;

use aya_log_common::{ArgumentKind as A, DisplayHint as H, RecordFieldKind as F};

/// Why a record could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undecodable(pub String);

impl std::fmt::Display for Undecodable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn bad(why: impl Into<String>) -> Undecodable {
    Undecodable(why.into())
}

/// One tag-length-value item at the front of `buf`, and the rest.
fn item(buf: &[u8]) -> Result<(u8, &[u8], &[u8]), Undecodable> {
    let (&[tag, l0, l1], rest) = buf
        .split_first_chunk::<3>()
        .ok_or_else(|| bad(format!("{} bytes left, a field needs 3", buf.len())))?;
    let len = usize::from(u16::from_ne_bytes([l0, l1]));
    if rest.len() < len {
        return Err(bad(format!(
            "field {tag} says {len} bytes, {} left",
            rest.len()
        )));
    }
    let (value, rest) = rest.split_at(len);
    Ok((tag, value, rest))
}

fn fixed<const N: usize>(value: &[u8], what: &str) -> Result<[u8; N], Undecodable> {
    value
        .try_into()
        .map_err(|_| bad(format!("{what} of {} bytes, not {N}", value.len())))
}

/// Decodes one record into its message (control characters escaped).
///
/// # Errors
/// What is wrong with the record: truncated, a field twice or missing, an
/// unknown tag, a value of the wrong size.
pub fn decode(record: &[u8]) -> Result<String, Undecodable> {
    let (size, _) = record
        .split_first_chunk::<2>()
        .ok_or_else(|| bad("shorter than its length field"))?;
    let size = usize::from(u16::from_ne_bytes(*size));
    let mut buf = record
        .get(2..size)
        .ok_or_else(|| bad(format!("says {size} bytes, has {}", record.len())))?;
    let mut seen = [false; 6];
    let mut num_args = 0u32;
    while seen.iter().any(|s| !s) {
        let (tag, value, rest) = item(buf)?;
        let slot = match tag {
            t if t == F::Target as u8 => 0,
            t if t == F::Level as u8 => {
                let [level] = fixed::<1>(value, "level")?;
                if !(1..=5).contains(&level) {
                    return Err(bad(format!("level {level}")));
                }
                1
            }
            t if t == F::Module as u8 => 2,
            t if t == F::File as u8 => 3,
            t if t == F::Line as u8 => {
                fixed::<4>(value, "line")?;
                4
            }
            t if t == F::NumArgs as u8 => {
                num_args = u32::from_ne_bytes(fixed::<4>(value, "argument count")?);
                5
            }
            t => return Err(bad(format!("header field tag {t}"))),
        };
        if std::mem::replace(&mut seen[slot], true) {
            return Err(bad(format!("header field {tag} twice")));
        }
        buf = rest;
    }
    let mut out = String::new();
    let mut hint = H::Default as u8;
    for _ in 0..num_args {
        let (tag, value, rest) = item(buf)?;
        buf = rest;
        let hex = hint == H::LowerHex as u8;
        let upper = hint == H::UpperHex as u8;
        macro_rules! int {
            ($t:ty) => {{
                let v = <$t>::from_ne_bytes(fixed(value, stringify!($t))?);
                if hex {
                    let _ = write!(out, "{v:x}");
                } else if upper {
                    let _ = write!(out, "{v:X}");
                } else {
                    let _ = write!(out, "{v}");
                }
            }};
        }
        match tag {
            t if t == A::DisplayHint as u8 => {
                let [h] = fixed::<1>(value, "display hint")?;
                hint = h;
                continue;
            }
            t if t == A::I8 as u8 => int!(i8),
            t if t == A::I16 as u8 => int!(i16),
            t if t == A::I32 as u8 => int!(i32),
            t if t == A::I64 as u8 || t == A::Isize as u8 => int!(i64),
            t if t == A::U8 as u8 => int!(u8),
            t if t == A::U16 as u8 => int!(u16),
            t if t == A::U32 as u8 => int!(u32),
            t if t == A::U64 as u8 || t == A::Usize as u8 || t == A::Pointer as u8 => {
                int!(u64);
            }
            t if t == A::F32 as u8 => {
                let _ = write!(out, "{}", f32::from_ne_bytes(fixed(value, "f32")?));
            }
            t if t == A::F64 as u8 => {
                let _ = write!(out, "{}", f64::from_ne_bytes(fixed(value, "f64")?));
            }
            t if t == A::Str as u8 => {
                for c in String::from_utf8_lossy(value).chars() {
                    if c.is_control() {
                        let _ = write!(out, "{}", c.escape_default());
                    } else {
                        out.push(c);
                    }
                }
            }
            t if t == A::Bytes as u8 => {
                for b in value {
                    let _ = write!(out, "{b:02x}");
                }
            }
            t => return Err(bad(format!("argument kind {t}"))),
        }
        hint = H::Default as u8;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aya_log_common::{Argument, Field, Header, Level};

    /// A record as the programs' `say!` writes it (aya-log-ebpf 0.2's
    /// macro: the header, then each argument through `Field`).
    fn record(args: &[(u8, Vec<u8>)]) -> Vec<u8> {
        let mut out = vec![0, 0];
        let mut put = |b: &[u8]| {
            out.extend_from_slice(b);
            Some(())
        };
        let header = Header::new(
            "rmapwatch",
            Level::Warn,
            "rmapwatch",
            "src/main.rs",
            900,
            u32::try_from(args.len()).expect("few"),
        )
        .expect("a header");
        header.with_bytes(&mut put).expect("written");
        for (kind, value) in args {
            Field::new(*kind, value.as_slice())
                .expect("short")
                .with_bytes(&mut put)
                .expect("written");
        }
        let n = u16::try_from(out.len()).expect("short").to_ne_bytes();
        out[..2].copy_from_slice(&n);
        out
    }

    fn arg(a: &impl Argument) -> (u8, Vec<u8>) {
        let (kind, bytes) = a.as_argument();
        (kind as u8, bytes.as_ref().to_vec())
    }

    #[test]
    fn a_say_line_reads_back() {
        let r = record(&[
            arg(&"fork window map full: thread "),
            arg(&4242u32),
            arg(&" at "),
            arg(&H::LowerHex),
            arg(&0xffff_ffff_8162_101fu64),
            arg(&" (occurrence "),
            arg(&16u64),
            arg(&")"),
        ]);
        assert_eq!(
            decode(&r),
            Ok("fork window map full: thread 4242 at ffffffff8162101f (occurrence 16)".into())
        );
    }

    #[test]
    fn escapes_in_strings_are_neutralised() {
        let r = record(&[arg(&"a\x1b[2Jb")]);
        assert_eq!(decode(&r), Ok("a\\u{1b}[2Jb".into()));
    }

    #[test]
    fn broken_records_say_what_is_wrong() {
        let good = record(&[arg(&"x"), arg(&7u64)]);
        // Every truncation of the record is an error, never a panic.
        for n in 0..good.len() {
            let mut r = good[..n].to_vec();
            if n >= 2 {
                let len = u16::try_from(n).expect("short").to_ne_bytes();
                r[..2].copy_from_slice(&len);
            }
            assert!(decode(&r).is_err(), "{n} bytes decoded");
        }
        // A length beyond the record.
        let mut r = good.clone();
        r[..2].copy_from_slice(&u16::MAX.to_ne_bytes());
        assert!(decode(&r).unwrap_err().0.contains("says 65535 bytes"));
        // An unknown argument kind, a wrong-sized integer, a bad level.
        let r = record(&[(200, vec![1])]);
        assert_eq!(decode(&r), Err(bad("argument kind 200")));
        let r = record(&[(A::U64 as u8, vec![1, 2, 3])]);
        assert_eq!(decode(&r), Err(bad("u64 of 3 bytes, not 8")));
        let mut r = good;
        let level_at = r
            .windows(4)
            .position(|w| w == [F::Level as u8, 1, 0, Level::Warn as u8])
            .expect("the level field");
        r[level_at + 3] = 9;
        assert_eq!(decode(&r), Err(bad("level 9")));
    }

    #[test]
    fn random_bytes_never_panic() {
        // A small deterministic generator: every length, many contents.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 96) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|i| (x.rotate_left(i as u32 % 64) & 0xff) as u8 % 24)
                .collect();
            let _ = decode(&bytes);
        }
    }
}
