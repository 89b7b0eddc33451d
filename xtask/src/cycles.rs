//! Import cycles among the modules of a crate. Each file is a module (the
//! crate root, `a.rs` or `a/mod.rs` = `a`, `a/b.rs` = `a::b`; inline
//! `mod x { .. }` blocks are part of their file), found by following the
//! `mod x;` declarations from the crate root. Module A depends on module B
//! when A's source (comments and literals stripped) names a path that
//! resolves into B: `crate::..`, `super::..`, `self::..`, or a path whose
//! first segment is a child module of where it stands (`child::f`, which is
//! `self::child::f`), `use` groups included (`use crate::{a::{self, B}, c}`).
//! A path resolves to the longest module prefix that exists; an item name
//! after it to the module defining it, following that module's `use`
//! imports and glob imports (a re-export resolves to where the item is). A
//! strongly connected component of more than one module is a cycle.
//!
//! This reads source text, not the compiler's resolution: macros are not
//! expanded, `#[path]` attributes are not read (a `mod x;` whose file is not
//! found is an error), and names brought in by glob imports are matched
//! against what the glob's module defines or imports by name.
use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

/// A token of Rust source, comments and literals gone.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    /// An identifier or keyword (`r#x` as `x`).
    Ident(String),
    /// `::`.
    PathSep,
    /// `{`.
    Open,
    /// `}`.
    Close,
    /// `,`.
    Comma,
    /// `;`.
    Semi,
    /// `*`.
    Star,
    /// Any other punctuation, or a literal.
    Other(char),
}

/// The tokens of `src`, each with its line (1-based). Comments (nested
/// block comments too), string, byte, C and raw string literals and
/// character literals are dropped; a literal stands as one `Other('"')` so
/// that it still separates what is around it.
fn tokens(src: &str) -> Vec<(Tok, usize)> {
    let c: Vec<char> = src.chars().collect();
    let at = |i: usize| c.get(i).copied().unwrap_or('\0');
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    // Skips a quoted literal whose opening `"` is at `i`; returns the index
    // after its closing quote.
    let quoted = |mut i: usize, line: &mut usize| {
        i += 1;
        while i < c.len() && c[i] != '"' {
            if c[i] == '\\' {
                i += 1;
            }
            if at(i) == '\n' {
                *line += 1;
            }
            i += 1;
        }
        i + 1
    };
    // Skips a raw literal whose `#`s or `"` start at `i`.
    let raw = |mut i: usize, line: &mut usize| {
        let mut hashes = 0;
        while at(i) == '#' {
            hashes += 1;
            i += 1;
        }
        i += 1; // the opening quote
        while i < c.len() {
            if c[i] == '"' && (1..=hashes).all(|k| at(i + k) == '#') {
                return i + 1 + hashes;
            }
            if c[i] == '\n' {
                *line += 1;
            }
            i += 1;
        }
        i
    };
    while i < c.len() {
        let ch = c[i];
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if ch == '/' && at(i + 1) == '/' {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if c[i] == '\n' {
                        line += 1;
                    }
                    i += 1;
                }
            }
        } else if ch == '"' {
            out.push((Tok::Other('"'), line));
            i = quoted(i, &mut line);
        } else if ch == '\'' {
            if at(i + 1) == '\\' {
                // An escaped character literal: '\n', '\'', '\u{..}'.
                i += 2;
                while i < c.len() && c[i] != '\'' {
                    i += 1;
                }
                out.push((Tok::Other('"'), line));
                i += 1;
            } else if at(i + 2) == '\'' {
                out.push((Tok::Other('"'), line));
                i += 3;
            } else {
                // A lifetime or a label: its name is no path.
                i += 1;
                while at(i).is_alphanumeric() || at(i) == '_' {
                    i += 1;
                }
                out.push((Tok::Other('\''), line));
            }
        } else if ch.is_alphabetic() || ch == '_' {
            let start = i;
            while at(i).is_alphanumeric() || at(i) == '_' {
                i += 1;
            }
            let word: String = c[start..i].iter().collect();
            let next = at(i);
            if matches!(word.as_str(), "r" | "br" | "cr")
                && (next == '"' || (next == '#' && matches!(at(i + 1), '"' | '#')))
            {
                out.push((Tok::Other('"'), line));
                i = raw(i, &mut line);
            } else if matches!(word.as_str(), "b" | "c") && next == '"' {
                out.push((Tok::Other('"'), line));
                i = quoted(i, &mut line);
            } else if word == "b" && next == '\'' {
                i += 1;
                if at(i + 1) == '\\' {
                    i += 2;
                }
                while i < c.len() && c[i] != '\'' {
                    i += 1;
                }
                out.push((Tok::Other('"'), line));
                i += 1;
            } else if word == "r" && next == '#' {
                // A raw identifier.
                let s = i + 1;
                i = s;
                while at(i).is_alphanumeric() || at(i) == '_' {
                    i += 1;
                }
                out.push((Tok::Ident(c[s..i].iter().collect()), line));
            } else {
                out.push((Tok::Ident(word), line));
            }
        } else if ch.is_ascii_digit() {
            while at(i).is_alphanumeric() || at(i) == '_' {
                i += 1;
            }
            out.push((Tok::Other('0'), line));
        } else {
            let tok = match ch {
                ':' if at(i + 1) == ':' => {
                    i += 1;
                    Tok::PathSep
                }
                '{' => Tok::Open,
                '}' => Tok::Close,
                ',' => Tok::Comma,
                ';' => Tok::Semi,
                '*' => Tok::Star,
                other => Tok::Other(other),
            };
            out.push((tok, line));
            i += 1;
        }
    }
    out
}

/// A path as written: its segments (`*` for a glob), and the name it binds
/// in a `use` (`None` for a glob or `as _`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct UsePath {
    segments: Vec<String>,
    binds: Option<String>,
}

/// What one file says, by inline module (the path of inline modules within
/// the file, empty for the file's own).
#[derive(Debug, Default)]
struct Scan {
    /// Inline modules, each after its parent.
    inline: Vec<Vec<String>>,
    /// `mod x;` declarations: where, and the name.
    decls: Vec<(Vec<String>, String)>,
    /// Names of items defined at a module's top level.
    defs: Vec<(Vec<String>, String)>,
    /// `use` imports at a module's top level.
    uses: Vec<(Vec<String>, UsePath)>,
    /// Every path that may name a module of the crate: where, its
    /// segments, its line.
    refs: Vec<(Vec<String>, Vec<String>, usize)>,
}

/// Parses a use tree or a path at `toks[i]`, `prefix` already read;
/// pushes the expanded paths and returns the index after it. `groups`:
/// whether `{..}` groups may follow (in `use` only).
fn path_at(
    toks: &[(Tok, usize)],
    mut i: usize,
    prefix: &[String],
    groups: bool,
    out: &mut Vec<UsePath>,
) -> usize {
    let mut segs = prefix.to_vec();
    loop {
        match toks.get(i).map(|t| &t.0) {
            Some(Tok::Ident(w)) => {
                segs.push(w.clone());
                i += 1;
            }
            Some(Tok::Star) if groups => {
                segs.push("*".to_owned());
                out.push(UsePath {
                    segments: segs,
                    binds: None,
                });
                return i + 1;
            }
            Some(Tok::Open) if groups => {
                i += 1;
                loop {
                    match toks.get(i).map(|t| &t.0) {
                        None => return i,
                        Some(Tok::Close) => return i + 1,
                        Some(Tok::Comma) => i += 1,
                        Some(_) => {
                            let before = i;
                            i = path_at(toks, i, &segs, true, out);
                            if i == before {
                                i += 1;
                            }
                        }
                    }
                }
            }
            _ => break,
        }
        if toks.get(i).map(|t| &t.0) != Some(&Tok::PathSep) {
            break;
        }
        i += 1;
    }
    if segs.len() == prefix.len() {
        return i;
    }
    // `a::{self}` is `a`.
    if segs.last().is_some_and(|s| s == "self") && segs.len() > 1 {
        segs.pop();
    }
    let mut binds = segs.last().cloned();
    if groups
        && toks.get(i).map(|t| &t.0) == Some(&Tok::Ident("as".to_owned()))
        && let Some((Tok::Ident(alias), _)) = toks.get(i + 1)
    {
        binds = (alias != "_").then(|| alias.clone());
        i += 2;
    }
    out.push(UsePath {
        segments: segs,
        binds,
    });
    i
}

/// Item keywords whose next identifier is the item's name.
const ITEMS: [&str; 8] = [
    "fn", "struct", "enum", "trait", "type", "const", "static", "union",
];

/// Reads one file's modules, items, imports and paths.
fn scan(src: &str) -> Scan {
    let toks = tokens(src);
    let mut s = Scan::default();
    // Open inline modules: name, and the brace depth of their body.
    let mut stack: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let here = |stack: &[(String, usize)]| stack.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    let top = |stack: &[(String, usize)]| stack.last().map_or(0, |(_, d)| *d);
    let ident = |i: usize| match toks.get(i) {
        Some((Tok::Ident(w), _)) => Some(w.as_str()),
        _ => None,
    };
    let mut i = 0;
    while i < toks.len() {
        let (tok, line) = (&toks[i].0, toks[i].1);
        let at_top = depth == top(&stack);
        match tok {
            Tok::Open => depth += 1,
            Tok::Close => {
                if stack.last().is_some_and(|(_, d)| *d == depth) {
                    stack.pop();
                }
                depth = depth.saturating_sub(1);
            }
            Tok::Ident(w) if w == "mod" && ident(i + 1).is_some() => {
                let name = ident(i + 1).unwrap_or_default().to_owned();
                match toks.get(i + 2).map(|t| &t.0) {
                    Some(Tok::Semi) => s.decls.push((here(&stack), name)),
                    Some(Tok::Open) => {
                        depth += 1;
                        stack.push((name, depth));
                        s.inline.push(here(&stack));
                    }
                    _ => {}
                }
                i += 3;
                continue;
            }
            Tok::Ident(w) if w == "use" => {
                let mut paths = Vec::new();
                let mut j = i + 1;
                // A 2015-style leading `::` names an external crate.
                let external = toks.get(j).map(|t| &t.0) == Some(&Tok::PathSep);
                if !external {
                    j = path_at(&toks, j, &[], true, &mut paths);
                }
                for p in paths {
                    s.refs.push((here(&stack), p.segments.clone(), line));
                    if at_top {
                        s.uses.push((here(&stack), p));
                    }
                }
                while j < toks.len() && toks[j].0 != Tok::Semi {
                    j += 1;
                }
                i = j + 1;
                continue;
            }
            Tok::Ident(w) if at_top && (ITEMS.contains(&w.as_str()) || w == "macro_rules") => {
                let mut j = i + 1;
                if toks.get(j).map(|t| &t.0) == Some(&Tok::Other('!')) {
                    j += 1;
                }
                if ident(j) == Some("mut") {
                    j += 1;
                }
                match ident(j) {
                    // `const fn`, `unsafe fn`: the name comes after `fn`.
                    Some(k) if ITEMS.contains(&k) => {}
                    Some(name) => s.defs.push((here(&stack), name.to_owned())),
                    None => {}
                }
            }
            Tok::Ident(_) => {
                let prev = i.checked_sub(1).map(|p| &toks[p].0);
                let starts = !matches!(prev, Some(Tok::PathSep | Tok::Other('.')));
                if starts && toks.get(i + 1).map(|t| &t.0) == Some(&Tok::PathSep) {
                    let mut paths = Vec::new();
                    let j = path_at(&toks, i, &[], false, &mut paths);
                    for p in paths {
                        s.refs.push((here(&stack), p.segments, line));
                    }
                    i = j.max(i + 1);
                    continue;
                }
            }
            _ => {}
        }
        i += 1;
    }
    s
}

/// A module of the crate: a file's, or an inline one within a file.
#[derive(Debug)]
struct Module {
    parent: Option<usize>,
    children: BTreeMap<String, usize>,
    /// The file module it belongs to (itself for a file's).
    file: usize,
    defs: BTreeSet<String>,
    /// Names imported by `use`, and their paths.
    imports: BTreeMap<String, Vec<String>>,
    /// Glob imports (`use x::*`), their paths without the `*`.
    globs: Vec<Vec<String>>,
}

/// The module graph of one crate.
#[derive(Debug)]
pub struct Graph {
    /// The crate's name (package, and target where it has several).
    pub krate: String,
    /// File modules by path (`crate`, `a`, `a::b`), indexed as in `edges`.
    pub modules: Vec<String>,
    /// Dependencies between file modules, each with where it was seen first
    /// (file:line and the path).
    pub edges: BTreeMap<(usize, usize), String>,
}

/// Builds the graph of the crate whose root file is `root_file`;
/// `read` gives a file's text (or an error when it has none).
///
/// # Errors
/// A file cannot be read, or a `mod x;` has no file.
pub fn graph(
    krate: &str,
    root_file: &Path,
    read: &dyn Fn(&Path) -> anyhow::Result<String>,
    shown: &dyn Fn(&Path) -> String,
) -> anyhow::Result<Graph> {
    let mut mods: Vec<Module> = Vec::new();
    // File modules: name, file, and whether its children live beside it
    // (crate root, mod.rs) or in a folder of its name.
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    let mut scans: Vec<Scan> = Vec::new();
    // Inline module ids of each file, by inline path.
    let mut inline_ids: Vec<BTreeMap<Vec<String>, usize>> = Vec::new();
    let mut queue = std::collections::VecDeque::from([(
        String::from("crate"),
        root_file.to_owned(),
        None::<usize>,
    )]);
    while let Some((name, file, parent)) = queue.pop_front() {
        let text = read(&file)?;
        let s = scan(&text);
        let fid = files.len();
        let id = mods.len();
        mods.push(Module {
            parent,
            children: BTreeMap::new(),
            file: fid,
            defs: BTreeSet::new(),
            imports: BTreeMap::new(),
            globs: Vec::new(),
        });
        if let Some(p) = parent {
            let leaf = name.rsplit("::").next().unwrap_or(&name).to_owned();
            mods[p].children.insert(leaf, id);
        }
        let mut ids = BTreeMap::new();
        ids.insert(Vec::new(), id);
        for path in &s.inline {
            let (last, up) = path
                .split_last()
                .context("an inline module without a name")?;
            let p = ids[up];
            let m = mods.len();
            mods.push(Module {
                parent: Some(p),
                children: BTreeMap::new(),
                file: fid,
                defs: BTreeSet::new(),
                imports: BTreeMap::new(),
                globs: Vec::new(),
            });
            mods[p].children.insert(last.clone(), m);
            ids.insert(path.clone(), m);
        }
        // Children of `a.rs` live in `a/`; of the root and `mod.rs`, beside it.
        let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        let dir = file.parent().unwrap_or(Path::new("."));
        let base = if parent.is_none() || stem == "mod" {
            dir.to_owned()
        } else {
            dir.join(stem)
        };
        for (inline, child) in &s.decls {
            let mut d = base.clone();
            for part in inline {
                d.push(part);
            }
            let flat = d.join(format!("{child}.rs"));
            let nested = d.join(child).join("mod.rs");
            let path = if read(&flat).is_ok() {
                flat
            } else if read(&nested).is_ok() {
                nested
            } else {
                bail!(
                    "{}: `mod {child};` has neither {} nor {}",
                    shown(&file),
                    shown(&flat),
                    shown(&nested)
                );
            };
            let owner = ids[inline];
            let full = if parent.is_none() && inline.is_empty() {
                child.clone()
            } else {
                let mut parts: Vec<&str> = if parent.is_none() {
                    vec![]
                } else {
                    vec![name.as_str()]
                };
                parts.extend(inline.iter().map(String::as_str));
                parts.push(child);
                parts.join("::")
            };
            queue.push_back((full, path, Some(owner)));
        }
        files.push((name, file));
        scans.push(s);
        inline_ids.push(ids);
    }
    for (fid, s) in scans.iter().enumerate() {
        for (at, name) in &s.defs {
            let m = inline_ids[fid][at];
            mods[m].defs.insert(name.clone());
        }
        for (at, u) in &s.uses {
            let m = inline_ids[fid][at];
            if u.segments.last().is_some_and(|s| s == "*") {
                mods[m]
                    .globs
                    .push(u.segments[..u.segments.len() - 1].to_vec());
            } else if let Some(b) = &u.binds {
                mods[m].imports.insert(b.clone(), u.segments.clone());
            }
        }
    }
    let mut edges = BTreeMap::new();
    for (fid, s) in scans.iter().enumerate() {
        for (at, segs, line) in &s.refs {
            let ctx = inline_ids[fid][at];
            if let Some(target) = resolve(&mods, ctx, segs, 0) {
                let to = mods[target].file;
                if to != fid {
                    edges.entry((fid, to)).or_insert_with(|| {
                        format!("{}:{line} {}", shown(&files[fid].1), segs.join("::"))
                    });
                }
            }
        }
    }
    Ok(Graph {
        krate: krate.to_owned(),
        modules: files.into_iter().map(|(n, _)| n).collect(),
        edges,
    })
}

/// The module that `segs`, written in module `ctx`, names: `None` when it
/// starts outside the crate (another crate, a local name).
fn resolve(mods: &[Module], ctx: usize, segs: &[String], hops: usize) -> Option<usize> {
    let first = segs.first()?;
    let (mut m, mut rest) = match first.as_str() {
        "crate" => (root_of(mods, ctx), &segs[1..]),
        "self" => (ctx, &segs[1..]),
        "super" => (mods[ctx].parent?, &segs[1..]),
        name => (*mods[ctx].children.get(name)?, &segs[1..]),
    };
    while let Some((seg, more)) = rest.split_first() {
        if seg == "super" {
            m = mods[m].parent?;
        } else if let Some(&child) = mods[m].children.get(seg) {
            m = child;
        } else if seg == "*" || seg == "self" {
            // A glob of m, or m itself.
        } else {
            return Some(item_home(mods, m, seg, hops).unwrap_or(m));
        }
        rest = more;
    }
    Some(m)
}

/// Where item `name`, named as `m::name`, is defined: in `m`, or where
/// `m`'s imports (by name, then by glob) take it from.
fn item_home(mods: &[Module], m: usize, name: &str, hops: usize) -> Option<usize> {
    if hops > 8 {
        return None;
    }
    if mods[m].defs.contains(name) {
        return Some(m);
    }
    if let Some(path) = mods[m].imports.get(name) {
        return resolve(mods, m, path, hops + 1);
    }
    for g in &mods[m].globs {
        if let Some(from) = resolve(mods, m, g, hops + 1)
            && from != m
            && (mods[from].defs.contains(name)
                || mods[from].imports.contains_key(name)
                || mods[from].children.contains_key(name))
        {
            return mods[from]
                .children
                .get(name)
                .copied()
                .or_else(|| item_home(mods, from, name, hops + 1));
        }
    }
    None
}

fn root_of(mods: &[Module], mut m: usize) -> usize {
    while let Some(p) = mods[m].parent {
        m = p;
    }
    m
}

impl Graph {
    /// The cycles: strongly connected components of more than one module,
    /// each as module indices in order, in the order of their first module.
    #[must_use]
    pub fn cycles(&self) -> Vec<Vec<usize>> {
        let n = self.modules.len();
        let mut next: Vec<Vec<usize>> = vec![Vec::new(); n];
        for &(a, b) in self.edges.keys() {
            next[a].push(b);
        }
        // Tarjan's algorithm, iterative.
        let mut index = vec![usize::MAX; n];
        let mut low = vec![0; n];
        let mut on = vec![false; n];
        let mut stack = Vec::new();
        let mut counter = 0;
        let mut out = Vec::new();
        for start in 0..n {
            if index[start] != usize::MAX {
                continue;
            }
            let mut work = vec![(start, 0usize)];
            while let Some(&mut (v, ref mut k)) = work.last_mut() {
                if *k == 0 {
                    index[v] = counter;
                    low[v] = counter;
                    counter += 1;
                    stack.push(v);
                    on[v] = true;
                }
                if let Some(&w) = next[v].get(*k) {
                    *k += 1;
                    if index[w] == usize::MAX {
                        work.push((w, 0));
                    } else if on[w] {
                        low[v] = low[v].min(index[w]);
                    }
                    continue;
                }
                work.pop();
                if let Some(&(u, _)) = work.last() {
                    low[u] = low[u].min(low[v]);
                }
                if low[v] == index[v] {
                    let mut scc = Vec::new();
                    while let Some(w) = stack.pop() {
                        on[w] = false;
                        scc.push(w);
                        if w == v {
                            break;
                        }
                    }
                    if scc.len() > 1 {
                        scc.sort_unstable();
                        out.push(scc);
                    }
                }
            }
        }
        out.sort();
        out
    }
}

/// The crate roots of the workspace's packages (lib and bin targets), from
/// `cargo metadata`, each named `package` or, where a package has several,
/// `package (kind target)`.
///
/// # Errors
/// cargo metadata fails or says something unexpected.
pub fn workspace(root: &Path) -> anyhow::Result<Vec<Graph>> {
    let out = Command::new(crate::cmd::cargo_bin())
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .current_dir(root)
        .output()
        .context("running cargo metadata")?;
    if !out.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let meta: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("cargo metadata's JSON")?;
    let mut roots = Vec::new();
    for pkg in meta["packages"]
        .as_array()
        .context("no packages in cargo metadata")?
    {
        let name = pkg["name"].as_str().context("a package without a name")?;
        let targets: Vec<(String, String, PathBuf)> = pkg["targets"]
            .as_array()
            .context("a package without targets")?
            .iter()
            .filter_map(|t| {
                let kind = t["kind"].as_array()?.first()?.as_str()?;
                matches!(kind, "lib" | "bin" | "proc-macro").then(|| {
                    Some((
                        kind.to_owned(),
                        t["name"].as_str()?.to_owned(),
                        PathBuf::from(t["src_path"].as_str()?),
                    ))
                })?
            })
            .collect();
        for (kind, target, src) in &targets {
            let label = if targets.len() == 1 {
                name.to_owned()
            } else {
                format!("{name} ({kind} {target})")
            };
            roots.push((label, src.clone()));
        }
    }
    roots.sort();
    let read =
        |p: &Path| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()));
    let shown = |p: &Path| p.strip_prefix(root).unwrap_or(p).display().to_string();
    roots
        .iter()
        .map(|(label, src)| graph(label, src, &read, &shown))
        .collect()
}

/// The cycles of `graphs`, each with its modules and the edges between
/// them (where each was seen first), then a count; or that there is none.
#[must_use]
pub fn render(graphs: &[Graph]) -> String {
    let mut s = String::new();
    let mut count = 0;
    for g in graphs {
        for scc in g.cycles() {
            count += 1;
            let names: Vec<&str> = scc.iter().map(|&m| g.modules[m].as_str()).collect();
            let _ = writeln!(s, "cycle in {}: {}", g.krate, names.join(", "));
            for (&(a, b), at) in &g.edges {
                if scc.contains(&a) && scc.contains(&b) {
                    let _ = writeln!(s, "  {} -> {}  ({at})", g.modules[a], g.modules[b]);
                }
            }
        }
    }
    let modules: usize = graphs.iter().map(|g| g.modules.len()).sum();
    if count == 0 {
        let _ = writeln!(
            s,
            "no import cycle among {modules} modules of {} crates",
            graphs.len()
        );
    } else {
        let _ = writeln!(
            s,
            "{count} import cycle{} among {modules} modules of {} crates",
            if count == 1 { "" } else { "s" },
            graphs.len()
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// The graph of a crate given as files (`src/lib.rs` its root).
    fn crate_of(files: &[(&str, &str)]) -> Graph {
        let map: HashMap<PathBuf, String> = files
            .iter()
            .map(|(p, t)| (PathBuf::from(p), (*t).to_owned()))
            .collect();
        let read = |p: &Path| map.get(p).cloned().context("no such file");
        let shown = |p: &Path| p.display().to_string();
        match graph("t", Path::new("src/lib.rs"), &read, &shown) {
            Ok(g) => g,
            Err(e) => panic!("{e:#}"),
        }
    }

    /// The edges as `a -> b` strings.
    fn edges(g: &Graph) -> Vec<String> {
        g.edges
            .keys()
            .map(|&(a, b)| format!("{} -> {}", g.modules[a], g.modules[b]))
            .collect()
    }

    fn cycles(g: &Graph) -> Vec<Vec<&str>> {
        g.cycles()
            .into_iter()
            .map(|c| c.into_iter().map(|m| g.modules[m].as_str()).collect())
            .collect()
    }

    #[test]
    fn nested_use_groups_name_each_module() {
        let g = crate_of(&[
            ("src/lib.rs", "mod a; mod b; mod c; mod d;"),
            (
                "src/a.rs",
                "use crate::{b::{self, X}, c::{Y as Z, *}, d};\nfn f() {}",
            ),
            ("src/b.rs", "pub struct X;"),
            ("src/c.rs", "pub struct Y;"),
            ("src/d.rs", ""),
        ]);
        assert_eq!(edges(&g), ["a -> b", "a -> c", "a -> d"]);
        assert!(g.cycles().is_empty());
    }

    #[test]
    fn comments_and_strings_name_nothing() {
        let g = crate_of(&[
            ("src/lib.rs", "mod a; mod b;"),
            (
                "src/a.rs",
                r##"
// use crate::b;
/* crate::b::X /* nested */ crate::b */
/// [`crate::b::X`]
const S: &str = "crate::b::X";
const R: &str = r#"crate::b::"X"#;
const C: char = '"';
const Q: char = '\'';
fn f<'a>(x: &'a str) -> &'a str { x }
"##,
            ),
            ("src/b.rs", "use crate::a::f;"),
        ]);
        assert_eq!(edges(&g), ["b -> a"]);
    }

    #[test]
    fn super_and_self_resolve_from_inline_modules() {
        let g = crate_of(&[
            ("src/lib.rs", "pub mod net;\npub fn helper() {}"),
            ("src/net/mod.rs", "mod tcp;\nmod udp;\nuse self::tcp::Conn;"),
            (
                "src/net/tcp.rs",
                "pub struct Conn;\n#[cfg(test)]\nmod tests {\n    use super::*;\n    use super::super::udp::Sock;\n}",
            ),
            (
                "src/net/udp.rs",
                "pub struct Sock;\nfn f() { super::super::helper() }",
            ),
        ]);
        // tests' `super` is tcp itself: no edge; `super::super` is net.
        assert_eq!(
            edges(&g),
            [
                "net -> net::tcp",
                "net::tcp -> net::udp",
                "net::udp -> crate"
            ]
        );
        assert!(g.cycles().is_empty());
    }

    #[test]
    fn items_of_the_root_and_child_paths_make_a_cycle() {
        let g = crate_of(&[
            (
                "src/lib.rs",
                "mod a;\npub struct Config;\nfn main() { a::run(); }",
            ),
            ("src/a.rs", "pub fn run() { let _ = crate::Config; }"),
        ]);
        assert_eq!(cycles(&g), [["crate", "a"]]);
        assert!(render(&[g]).contains("cycle in t: crate, a\n  crate -> a  (src/lib.rs:3 a::run)"));
    }

    #[test]
    fn a_re_export_resolves_to_where_the_item_is() {
        let g = crate_of(&[
            ("src/lib.rs", "mod a;\nmod b;\npub use b::Thing;"),
            ("src/a.rs", "fn f() -> crate::Thing { todo!() }"),
            ("src/b.rs", "pub struct Thing;"),
        ]);
        // a names crate::Thing, which is b's: no a -> crate edge.
        assert_eq!(edges(&g), ["crate -> b", "a -> b"]);
    }

    #[test]
    fn three_modules_in_a_ring_are_one_cycle() {
        let g = crate_of(&[
            ("src/lib.rs", "mod a; mod b; mod c; mod d;"),
            ("src/a.rs", "use crate::b::B; pub struct A;"),
            ("src/b.rs", "pub struct B(crate::c::C);"),
            ("src/c.rs", "pub struct C; fn f(_: super::a::A) {}"),
            ("src/d.rs", "use crate::a::A;"),
        ]);
        assert_eq!(cycles(&g), [["a", "b", "c"]]);
        let text = render(&[g]);
        assert!(
            text.ends_with("1 import cycle among 5 modules of 1 crates\n"),
            "{text}"
        );
    }

    #[test]
    fn method_turbofish_and_external_crates_are_not_modules() {
        let g = crate_of(&[
            (
                "src/lib.rs",
                "mod collect;\nmod a;\nfn f(v: Vec<u8>) -> Vec<u8> { v.into_iter().collect::<Vec<_>>() }",
            ),
            ("src/collect.rs", ""),
            (
                "src/a.rs",
                "use std::collections::HashMap;\nfn f(v: Vec<u8>) { let _ = v.iter().collect::<Vec<_>>(); let _ = ::std::mem::take(&mut 0); }",
            ),
        ]);
        assert!(g.edges.is_empty(), "{:?}", edges(&g));
    }

    #[test]
    fn a_missing_module_file_is_an_error() {
        let map: HashMap<PathBuf, String> =
            [(PathBuf::from("src/lib.rs"), "mod gone;".to_owned())].into();
        let read = |p: &Path| map.get(p).cloned().context("no such file");
        let shown = |p: &Path| p.display().to_string();
        let e = graph("t", Path::new("src/lib.rs"), &read, &shown)
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("src/lib.rs: `mod gone;` has neither src/gone.rs nor src/gone/mod.rs")
        );
    }

    #[test]
    fn files_of_a_non_mod_rs_module_live_in_its_folder() {
        let g = crate_of(&[
            ("src/lib.rs", "mod engine;"),
            ("src/engine.rs", "#[cfg(test)]\nmod tests;\npub struct E;"),
            ("src/engine/tests.rs", "use super::E;"),
        ]);
        assert_eq!(g.modules, ["crate", "engine", "engine::tests"]);
        assert_eq!(edges(&g), ["engine::tests -> engine"]);
    }
}
