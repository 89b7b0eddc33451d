//! Every link of the documentation resolves: README.md, BENCHMARKS.md and
//! docs/**/*.md.
//!
//! Checked, outside fenced code blocks:
//! - markdown links `[text](target)` (and images, and `[label]: target`
//!   definitions): a relative target names a file or folder of the
//!   repository, relative to the page; a `#anchor` (alone, or after a `.md`
//!   target) names a heading of that page by its GitHub slug; `http(s)`
//!   targets are only checked to be well-formed (no network);
//! - autolinks `<https://...>`: well-formed;
//! - bare references: a code span naming a `.md` file or a path under
//!   `docs/` (or such a word with a '/' outside code) names a file relative
//!   to the page or to the repository root (prose says
//!   "`docs/lazy-model.md`" from anywhere).
//!
//! Pure std: the checker works on a closure that reads files, so the unit
//! tests below run it on pages held in memory.
use std::{
    collections::{BTreeMap, HashMap},
    path::{Component, Path, PathBuf},
};

/// The repository's root (this crate is `xtask/`).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask has a parent")
        .to_path_buf()
}

/// What a path names, relative to the checked root.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Entry {
    File(String),
    Dir,
}

/// Reads `path` (relative to the root, normalized): `None` if absent.
type Read<'a> = dyn Fn(&Path) -> Option<Entry> + 'a;

/// The pages to check: README.md, BENCHMARKS.md, docs/**/*.md.
fn pages(root: &Path) -> Vec<PathBuf> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
        let mut entries: Vec<_> = std::fs::read_dir(root.join(dir))
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("directory entry").file_name())
            .collect();
        entries.sort();
        for name in entries {
            let rel = dir.join(&name);
            if root.join(&rel).is_dir() {
                walk(root, &rel, out);
            } else if rel.extension().is_some_and(|e| e == "md") {
                out.push(rel);
            }
        }
    }
    let mut out = vec![PathBuf::from("README.md"), PathBuf::from("BENCHMARKS.md")];
    walk(root, Path::new("docs"), &mut out);
    out
}

/// Lexically resolves `.` and `..`; `None` when it climbs above the root.
fn normalize(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::Normal(s) => out.push(s),
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// The page's lines outside fenced code blocks (``` or ~~~), with their
/// line numbers (1-based).
fn prose_lines(text: &str) -> Vec<(usize, &str)> {
    let mut fence: Option<&str> = None;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim_start();
        let marker = if t.starts_with("```") {
            Some("```")
        } else if t.starts_with("~~~") {
            Some("~~~")
        } else {
            None
        };
        match (fence, marker) {
            (None, Some(m)) => fence = Some(m),
            (Some(f), Some(m)) if f == m => fence = None,
            (None, None) => out.push((i + 1, line)),
            _ => {}
        }
    }
    out
}

/// Splits a line into text outside code spans (code replaced by spaces, so
/// that offsets hold) and the code spans' contents.
fn split_code(line: &str) -> (String, Vec<String>) {
    let mut prose = String::with_capacity(line.len());
    let mut spans = Vec::new();
    let b = line.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'`' {
            let n = b[i..].iter().take_while(|&&c| c == b'`').count();
            let ticks = &line[i..i + n];
            if let Some(end) = line[i + n..].find(ticks) {
                let inner = &line[i + n..i + n + end];
                spans.push(inner.trim().to_owned());
                prose.push_str(&" ".repeat(n + end + n));
                i += n + end + n;
                continue;
            }
            prose.push_str(ticks);
            i += n;
            continue;
        }
        let ch = line[i..].chars().next().expect("char boundary");
        prose.push(ch);
        i += ch.len_utf8();
    }
    (prose, spans)
}

/// GitHub's anchor for a heading's text: markup dropped (code kept, links
/// as their text), lowercased, spaces to '-', every other character but
/// letters, digits, '-' and '_' removed.
fn slug(heading: &str) -> String {
    // Links become their text.
    let mut text = String::new();
    let mut rest = heading;
    while let Some(open) = rest.find('[') {
        let Some(mid) = rest[open..].find("](") else {
            break;
        };
        let Some(close) = rest[open + mid..].find(')') else {
            break;
        };
        text.push_str(&rest[..open]);
        text.push_str(&rest[open + 1..open + mid]);
        rest = &rest[open + mid + close + 1..];
    }
    text.push_str(rest);
    text.chars()
        .filter(|c| !matches!(c, '`' | '*'))
        .flat_map(char::to_lowercase)
        .filter_map(|c| match c {
            ' ' => Some('-'),
            '-' | '_' => Some(c),
            c if c.is_alphanumeric() => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors of a page's headings, duplicates numbered as GitHub does.
fn anchors(text: &str) -> Vec<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::new();
    for (_, line) in prose_lines(text) {
        let t = line.trim_start();
        let level = t.chars().take_while(|&c| c == '#').count();
        if level == 0 || level > 6 || line.len() - t.len() > 3 {
            continue;
        }
        let rest = &t[level..];
        if !(rest.is_empty() || rest.starts_with(' ')) {
            continue;
        }
        let title = rest.trim().trim_end_matches('#').trim_end();
        let base = slug(title);
        let n = seen.entry(base.clone()).or_insert(0);
        out.push(if *n == 0 {
            base.clone()
        } else {
            format!("{base}-{n}")
        });
        *n += 1;
    }
    out
}

/// Whether an http(s) URL is well-formed: scheme, a host of letters,
/// digits, '.' and '-' (optionally `:port`), no whitespace.
fn well_formed_url(url: &str) -> bool {
    let Some(rest) = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
    else {
        return false;
    };
    if url.chars().any(char::is_whitespace) {
        return false;
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (authority, None),
    };
    !host.is_empty()
        && host.contains('.')
        && !host.starts_with(['.', '-'])
        && !host.ends_with(['.', '-'])
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        && port.is_none_or(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
}

/// The `(target)` that follows `](` at `at` in `s`: up to the matching
/// ')', a title ("..." or '...') dropped, `<...>` unwrapped; and the
/// length of the raw text before that ')'.
fn link_target(s: &str, at: usize) -> Option<(String, usize)> {
    let mut depth = 0usize;
    let mut end = None;
    for (i, c) in s[at..].char_indices() {
        match c {
            '(' => depth += 1,
            ')' if depth == 0 => {
                end = Some(at + i);
                break;
            }
            ')' => depth -= 1,
            _ => {}
        }
    }
    let end = end?;
    let raw = s[at..end].trim();
    let raw = raw
        .split_once(" \"")
        .or_else(|| raw.split_once(" '"))
        .map_or(raw, |(t, _)| t.trim());
    let raw = raw
        .strip_prefix('<')
        .and_then(|r| r.strip_suffix('>'))
        .unwrap_or(raw);
    Some((raw.to_owned(), end - at))
}

/// Decodes the `%XX` escapes of a link target's path.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(v) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One link or reference found on a page.
#[derive(Debug)]
struct Link {
    line: usize,
    target: String,
    /// A bare reference: also tried relative to the repository's root.
    bare: bool,
}

/// The links and bare references of a page.
fn links(text: &str) -> Vec<Link> {
    let mut out = Vec::new();
    for (n, line) in prose_lines(text) {
        let (prose, spans) = split_code(line);
        // [text](target), ![alt](src); the targets are blanked out of
        // `words` below, which looks for bare references.
        let mut words = prose.clone();
        let mut from = 0;
        while let Some(i) = prose[from..].find("](") {
            let at = from + i + 2;
            if let Some((target, len)) = link_target(&prose, at) {
                words.replace_range(at..at + len, &" ".repeat(len));
                out.push(Link {
                    line: n,
                    target,
                    bare: false,
                });
            }
            from = at;
        }
        // [label]: target
        let t = prose.trim_start();
        if t.starts_with('[')
            && let Some(j) = t.find("]:")
            && !t[1..j].contains(']')
        {
            let target = t[j + 2..].split_whitespace().next().unwrap_or("");
            out.push(Link {
                line: n,
                target: target.to_owned(),
                bare: false,
            });
        }
        // <https://...>
        let mut from = 0;
        while let Some(i) = prose[from..].find('<') {
            let s = &prose[from + i + 1..];
            if (s.starts_with("http://") || s.starts_with("https://"))
                && let Some(j) = s.find('>')
            {
                out.push(Link {
                    line: n,
                    target: s[..j].to_owned(),
                    bare: false,
                });
            }
            from += i + 1;
        }
        // bare references: code spans, and the prose's words that are paths
        let words = words
            .split(|c: char| c.is_whitespace() || "()[],;\"'<>|*".contains(c))
            .map(|w| w.trim_end_matches([':', '.']).to_owned())
            .filter(|w| w.contains('/'));
        for w in spans.into_iter().chain(words) {
            if is_bare_reference(&w) {
                out.push(Link {
                    line: n,
                    target: w,
                    bare: true,
                });
            }
        }
    }
    out
}

/// A word that names a document of this repository: a relative path ending
/// in `.md` (an anchor may follow), or one under `docs/`. Not placeholders
/// (`<arch>`), globs or URLs.
fn is_bare_reference(w: &str) -> bool {
    let path = w.split('#').next().unwrap_or("");
    !w.is_empty()
        && !w.contains("://")
        && !w.contains(char::is_whitespace)
        && !w.contains(['<', '>', '*', '{', '}', '$', '='])
        && !w.starts_with(['/', '~', '-', '.'])
        && (path.ends_with(".md") || path.starts_with("docs/"))
}

/// Checks every link of `pages` (paths relative to the root); returns one
/// line per broken link.
fn check(pages: &[PathBuf], read: &Read) -> Vec<String> {
    let mut problems = Vec::new();
    let mut anchor_cache: BTreeMap<PathBuf, Vec<String>> = BTreeMap::new();
    let mut anchors_of = |p: &Path, read: &Read| -> Option<Vec<String>> {
        if let Some(a) = anchor_cache.get(p) {
            return Some(a.clone());
        }
        let Some(Entry::File(text)) = read(p) else {
            return None;
        };
        let a = anchors(&text);
        anchor_cache.insert(p.to_path_buf(), a.clone());
        Some(a)
    };
    for page in pages {
        let Some(Entry::File(text)) = read(page) else {
            problems.push(format!("{}: cannot read the page", page.display()));
            continue;
        };
        let dir = page.parent().unwrap_or(Path::new(""));
        for link in links(&text) {
            let at = format!("{}:{}: ({})", page.display(), link.line, link.target);
            let t = link.target.as_str();
            if t.is_empty() {
                problems.push(format!("{at} empty target"));
                continue;
            }
            if t.starts_with("http://") || t.starts_with("https://") {
                if !well_formed_url(t) {
                    problems.push(format!("{at} is not a well-formed URL"));
                }
                continue;
            }
            if t.starts_with("mailto:") {
                continue;
            }
            if t.contains("://") || t.starts_with('/') {
                problems.push(format!("{at} is neither relative nor http(s)"));
                continue;
            }
            let (path, anchor) = match t.split_once('#') {
                Some((p, a)) => (p, Some(a)),
                None => (t, None),
            };
            let path = percent_decode(path);
            let file = if path.is_empty() {
                page.clone()
            } else {
                let mut candidates = vec![dir.join(&path)];
                if link.bare {
                    candidates.push(PathBuf::from(&path));
                }
                let found = candidates
                    .iter()
                    .filter_map(|c| normalize(c))
                    .find(|c| read(c).is_some());
                let Some(found) = found else {
                    problems.push(format!("{at} no such file"));
                    continue;
                };
                found
            };
            if let Some(anchor) = anchor {
                if file.extension().is_none_or(|e| e != "md") {
                    problems.push(format!("{at} an anchor into a file that is not markdown"));
                    continue;
                }
                match anchors_of(&file, read) {
                    Some(a) if a.iter().any(|x| x == anchor) => {}
                    Some(_) => problems.push(format!(
                        "{at} no heading with the anchor #{anchor} in {}",
                        file.display()
                    )),
                    None => problems.push(format!("{at} {} is not a file", file.display())),
                }
            }
        }
    }
    problems
}

#[test]
fn every_link_in_the_docs_resolves() {
    let root = root();
    let pages = pages(&root);
    assert!(
        pages.len() > 3,
        "found only {pages:?} under {}",
        root.display()
    );
    let read = |p: &Path| -> Option<Entry> {
        let full = root.join(p);
        if full.is_dir() {
            Some(Entry::Dir)
        } else {
            std::fs::read(&full)
                .ok()
                .map(|b| Entry::File(String::from_utf8_lossy(&b).into_owned()))
        }
    };
    let problems = check(&pages, &read);
    assert!(
        problems.is_empty(),
        "{} broken link(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// The checker on pages held in memory.
fn check_in_memory(files: &[(&str, &str)], dirs: &[&str], pages: &[&str]) -> Vec<String> {
    let files: BTreeMap<PathBuf, String> = files
        .iter()
        .map(|(p, t)| (PathBuf::from(p), (*t).to_owned()))
        .collect();
    let dirs: Vec<PathBuf> = dirs.iter().map(PathBuf::from).collect();
    let read = |p: &Path| -> Option<Entry> {
        if dirs.iter().any(|d| d == p) {
            return Some(Entry::Dir);
        }
        files.get(p).map(|t| Entry::File(t.clone()))
    };
    let pages: Vec<PathBuf> = pages.iter().map(PathBuf::from).collect();
    check(&pages, &read)
}

#[test]
fn a_broken_file_link_fails() {
    let p = check_in_memory(
        &[("README.md", "See [the guide](docs/guide.md).\n")],
        &[],
        &["README.md"],
    );
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].contains("README.md:1: (docs/guide.md) no such file"),
        "{p:?}"
    );
}

#[test]
fn a_broken_anchor_fails_and_a_good_one_passes() {
    let readme = "# rmapwatch\n\n[a](docs/guide.md#exit-codes) [b](docs/guide.md#exit-code)\n\
                  [c](#rmapwatch) [d](#nothing)\n";
    let guide = "# Guide\n\n## Exit codes\n";
    let p = check_in_memory(
        &[("README.md", readme), ("docs/guide.md", guide)],
        &["docs"],
        &["README.md", "docs/guide.md"],
    );
    assert_eq!(p.len(), 2, "{p:?}");
    assert!(p[0].contains("#exit-code in docs/guide.md"), "{p:?}");
    assert!(p[1].contains("#nothing in README.md"), "{p:?}");
}

#[test]
fn links_are_relative_to_the_page_and_bare_references_also_to_the_root() {
    let guide = "Back to [the README](../README.md); [json](json.md); [bad](docs/json.md);\n\
                 the model is in `docs/lazy-model.md`, the schemas in `json.md`; \
                 not there: `docs/gone.md`.\n";
    let p = check_in_memory(
        &[
            ("README.md", "# r\n"),
            ("docs/guide.md", guide),
            ("docs/json.md", "# j\n"),
            ("docs/lazy-model.md", "# l\n"),
        ],
        &["docs"],
        &["docs/guide.md"],
    );
    assert_eq!(p.len(), 2, "{p:?}");
    assert!(p[0].contains("(docs/json.md) no such file"), "{p:?}");
    assert!(p[1].contains("(docs/gone.md) no such file"), "{p:?}");
}

#[test]
fn code_blocks_are_not_links_and_urls_are_only_checked_for_form() {
    let readme = "```\n[x](nowhere.md)\n```\n\
                  [ok](https://ui.perfetto.dev) <https://aya-rs.dev> \
                  [bad](https://) [bad2](http://no host) [up](../outside.md)\n";
    let p = check_in_memory(&[("README.md", readme)], &[], &["README.md"]);
    assert_eq!(p.len(), 3, "{p:?}");
    assert!(
        p[0].contains("(https://) is not a well-formed URL"),
        "{p:?}"
    );
    assert!(
        p[1].contains("(http://no host) is not a well-formed URL"),
        "{p:?}"
    );
    assert!(p[2].contains("(../outside.md) no such file"), "{p:?}");
}

#[test]
fn slugs_follow_github() {
    let text = "# Two commands on a fresh machine\n## `rmapwatch inspect` JSON (`rmapwatch.inspect/1`)\n\
                ## Kernels: 5.10 to 7.x\n## Tests\n## Tests\n## Android (`--adb`)\n\
                ```\n# not a heading\n```\n## Fleets: Prometheus, Grafana, Perfetto\n";
    assert_eq!(
        anchors(text),
        [
            "two-commands-on-a-fresh-machine",
            "rmapwatch-inspect-json-rmapwatchinspect1",
            "kernels-510-to-7x",
            "tests",
            "tests-1",
            "android---adb",
            "fleets-prometheus-grafana-perfetto",
        ]
    );
}
