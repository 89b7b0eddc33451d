//! The floor `rmw-bench cost` measured on this machine: an empty raw
//! tracepoint program's ns per run on the slab tracepoints. Kept in a small
//! file so that rmapwatch can show its live slab cost against it; valid
//! only for the machine (`/etc/machine-id`) and kernel release it was
//! measured on.

use std::path::PathBuf;

use anyhow::Context as _;
use rmapwatch_engine::facts::Floor;

/// Where the floor is kept; `RMAPWATCH_FLOOR_FILE` overrides (tests).
pub const DEFAULT_FILE: &str = "/var/lib/rmapwatch/floor";

/// The environment variable that overrides [`DEFAULT_FILE`].
pub const FILE_ENV: &str = "RMAPWATCH_FLOOR_FILE";

/// The file in use.
#[must_use]
pub fn path() -> PathBuf {
    std::env::var_os(FILE_ENV).map_or_else(|| PathBuf::from(DEFAULT_FILE), PathBuf::from)
}

/// This machine's identity: `/etc/machine-id`, else the host name.
#[must_use]
pub fn machine() -> String {
    std::fs::read_to_string("/etc/machine-id")
        .or_else(|_| std::fs::read_to_string("/proc/sys/kernel/hostname"))
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// The file's text: one `key value` per line.
#[must_use]
pub fn render(release: &str, machine: &str, f: &Floor) -> String {
    format!(
        "machine {machine}\nkernel {release}\nns_per_run {}\nmeasured_unix {}\nby {}\n",
        f.ns_per_run, f.measured_unix, f.by
    )
}

/// The floor in `text` if it was measured on `machine` with `release`;
/// `None` for another machine or kernel, or a file that does not parse.
#[must_use]
pub fn parse(text: &str, release: &str, machine: &str) -> Option<Floor> {
    let get = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
            .map(str::trim)
    };
    if get("machine")? != machine || get("kernel")? != release {
        return None;
    }
    let ns_per_run: f64 = get("ns_per_run")?.parse().ok()?;
    (ns_per_run.is_finite() && ns_per_run > 0.0).then(|| Floor {
        ns_per_run,
        measured_unix: get("measured_unix")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        by: get("by").unwrap_or("rmw-bench cost").to_owned(),
    })
}

/// The floor measured on this machine and kernel, if one was.
#[must_use]
pub fn read(release: &str) -> Option<Floor> {
    let text = std::fs::read_to_string(path()).ok()?;
    parse(&text, release, &machine())
}

/// Keeps `f` as this machine's floor for `release`; returns the file.
///
/// # Errors
/// The directory or the file cannot be written.
pub fn write(release: &str, f: &Floor) -> anyhow::Result<PathBuf> {
    let p = path();
    if let Some(dir) = p.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&p, render(release, &machine(), f))
        .with_context(|| format!("writing {}", p.display()))?;
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_floor_is_read_back_only_on_its_machine_and_kernel() {
        let f = Floor {
            ns_per_run: 49.8,
            measured_unix: 1_765_000_000,
            by: "rmw-bench cost, 5 rounds".into(),
        };
        let text = render("6.18.44", "abc", &f);
        assert_eq!(parse(&text, "6.18.44", "abc"), Some(f));
        assert_eq!(parse(&text, "7.3.4", "abc"), None, "another kernel");
        assert_eq!(parse(&text, "6.18.44", "def"), None, "another machine");
        assert_eq!(parse("", "6.18.44", "abc"), None);
        assert_eq!(
            parse(
                "machine abc\nkernel 6.18.44\nns_per_run nan\n",
                "6.18.44",
                "abc"
            ),
            None,
            "no ratio against nothing"
        );
        assert_eq!(
            parse(
                "machine abc\nkernel 6.18.44\nns_per_run -3\n",
                "6.18.44",
                "abc"
            ),
            None
        );
    }
}
