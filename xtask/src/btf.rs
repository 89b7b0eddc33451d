//! BTF fixtures from the matrix's real kernels: the kernel's BTF found in
//! its image (arm64 images are uncompressed; x86 bzImages carry a zstd, xz
//! or gzip payload), cut down to what rmapwatch reads (the slab
//! tracepoints' prototypes, the structs whose members it reads, the hook
//! functions), every other named struct or union kept as a forward
//! declaration. The unit tests of `rmapwatch-live` read them.
use std::{collections::HashMap, io::Write as _, path::Path, process::Command};

use anyhow::{Context as _, bail};

const MAGIC: [u8; 2] = [0x9f, 0xeb];

/// A BTF blob inside `image`: the biggest with a sane header.
fn find_btf(image: &[u8]) -> Option<Vec<u8>> {
    let mut best: Option<&[u8]> = None;
    let mut at = 0;
    while let Some(i) = image[at..]
        .windows(8)
        .position(|w| w[..2] == MAGIC && w[2] == 1 && w[3] == 0 && w[4..8] == [24, 0, 0, 0])
    {
        let start = at + i;
        at = start + 1;
        let u = |o: usize| -> Option<usize> {
            let b = image.get(start + o..start + o + 4)?;
            Some(u32::from_le_bytes(b.try_into().ok()?) as usize)
        };
        let (Some(type_off), Some(type_len), Some(str_off), Some(str_len)) =
            (u(8), u(12), u(16), u(20))
        else {
            continue;
        };
        let end = start + 24 + str_off + str_len;
        if type_off != 0 || str_off != type_len || type_len < 1024 || end > image.len() {
            continue;
        }
        let blob = &image[start..end];
        if best.is_none_or(|b| blob.len() > b.len()) {
            best = Some(blob);
        }
    }
    best.map(<[u8]>::to_vec)
}

/// The kernel's BTF from its boot image.
///
/// # Errors
/// No BTF in the image or in any payload the host's decompressors open.
pub fn from_image(vmlinuz: &Path) -> anyhow::Result<Vec<u8>> {
    let image = std::fs::read(vmlinuz).with_context(|| format!("reading {}", vmlinuz.display()))?;
    if let Some(b) = find_btf(&image) {
        return Ok(b);
    }
    // An x86 bzImage: the compressed kernel at the setup header's
    // payload_offset (after the setup sectors), its format by magic.
    if image.get(0x202..0x206) != Some(b"HdrS") {
        bail!("no BTF in {} and it is not a bzImage", vmlinuz.display());
    }
    let setup_sects = match image[0x1f1] {
        0 => 4,
        n => usize::from(n),
    };
    let word = |o: usize| u32_at(&image, o) as usize;
    let start = (setup_sects + 1) * 512 + word(0x248);
    let payload = image
        .get(start..start + word(0x24c))
        .context("the bzImage payload")?;
    let (tool, args): (&str, &[&str]) = match payload {
        [0x1f, 0x8b, ..] => ("gzip", &["-dc"]),
        [0xfd, b'7', b'z', b'X', b'Z', 0, ..] => ("xz", &["-dc"]),
        [0x5d, 0, 0, ..] => ("xz", &["--format=lzma", "-dc"]),
        [0x28, 0xb5, 0x2f, 0xfd, ..] => ("zstd", &["-dc"]),
        [0x02, 0x21, 0x4c, 0x18, ..] => ("lz4", &["-dc"]),
        [b'B', b'Z', b'h', ..] => ("bzip2", &["-dc"]),
        _ => bail!("unknown compression of {}'s payload", vmlinuz.display()),
    };
    let mut child = Command::new(tool)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .with_context(|| format!("running {tool} (to open the kernel image; apt install it)"))?;
    let mut stdin = child.stdin.take().context("stdin")?;
    let data = payload.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let out = child.wait_with_output()?;
    let _ = writer.join();
    // Padding after the payload makes some tools fail; what they wrote is
    // still the kernel.
    if let Some(b) = find_btf(&out.stdout) {
        return Ok(b);
    }
    bail!("no BTF found in {} or its payload", vmlinuz.display())
}

/// One type of a BTF type section.
#[derive(Clone)]
struct Ty {
    name_off: u32,
    info: u32,
    size_or_type: u32,
    /// Kind-specific data after the common header.
    extra: Vec<u8>,
}

impl Ty {
    fn kind(&self) -> u32 {
        (self.info >> 24) & 0x1f
    }
    fn vlen(&self) -> usize {
        (self.info & 0xffff) as usize
    }
}

const INT: u32 = 1;
const PTR: u32 = 2;
const ARRAY: u32 = 3;
const STRUCT: u32 = 4;
const UNION: u32 = 5;
const ENUM: u32 = 6;
const FWD: u32 = 7;
const TYPEDEF: u32 = 8;
const VOLATILE: u32 = 9;
const CONST: u32 = 10;
const RESTRICT: u32 = 11;
const FUNC: u32 = 12;
const FUNC_PROTO: u32 = 13;
const VAR: u32 = 14;
const DATASEC: u32 = 15;
const FLOAT: u32 = 16;
const DECL_TAG: u32 = 17;
const TYPE_TAG: u32 = 18;
const ENUM64: u32 = 19;

fn u32_at(b: &[u8], o: usize) -> u32 {
    b.get(o..o + 4)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u32::from_le_bytes)
}

fn parse(blob: &[u8]) -> anyhow::Result<(Vec<Ty>, &[u8])> {
    let type_len = u32_at(blob, 12) as usize;
    let str_off = u32_at(blob, 16) as usize;
    let str_len = u32_at(blob, 20) as usize;
    let types = blob.get(24..24 + type_len).context("BTF types")?;
    let strings = blob
        .get(24 + str_off..24 + str_off + str_len)
        .context("BTF strings")?;
    let mut out = vec![Ty {
        name_off: 0,
        info: 0,
        size_or_type: 0,
        extra: Vec::new(),
    }]; // id 0: void
    let mut o = 0;
    while o + 12 <= types.len() {
        let info = u32_at(types, o + 4);
        let mut t = Ty {
            name_off: u32_at(types, o),
            info,
            size_or_type: u32_at(types, o + 8),
            extra: Vec::new(),
        };
        let n = match t.kind() {
            INT | VAR | DECL_TAG => 4,
            ARRAY => 12,
            STRUCT | UNION | DATASEC | ENUM64 => 12 * t.vlen(),
            ENUM | FUNC_PROTO => 8 * t.vlen(),
            _ => 0,
        };
        t.extra = types
            .get(o + 12..o + 12 + n)
            .context("a BTF type")?
            .to_vec();
        o += 12 + n;
        out.push(t);
    }
    Ok((out, strings))
}

fn name(strings: &[u8], off: u32) -> &str {
    let s = strings.get(off as usize..).unwrap_or_default();
    let end = s.iter().position(|&b| b == 0).unwrap_or(s.len());
    std::str::from_utf8(&s[..end]).unwrap_or("")
}

/// Cuts `blob` down to the types reachable from `roots` (type names),
/// where a named struct or union outside `keep` becomes a forward
/// declaration.
///
/// # Errors
/// A malformed blob.
pub fn minimize(blob: &[u8], roots: &[&str], keep: &[&str]) -> anyhow::Result<Vec<u8>> {
    let (types, strings) = parse(blob)?;
    let mut by_name: HashMap<&str, Vec<u32>> = HashMap::new();
    for (id, t) in types.iter().enumerate().skip(1) {
        by_name
            .entry(name(strings, t.name_off))
            .or_default()
            .push(id as u32);
    }
    // Old id -> new id, in visiting order.
    let mut map: HashMap<u32, u32> = HashMap::new();
    let mut order: Vec<(u32, bool)> = Vec::new(); // (old id, as forward)
    let mut stack: Vec<u32> = Vec::new();
    for r in roots {
        for &id in by_name.get(r).into_iter().flatten() {
            let t = &types[id as usize];
            // Only definitions: a FWD of the same name is not a root.
            if t.kind() != FWD && !(matches!(t.kind(), STRUCT | UNION) && t.vlen() == 0) {
                stack.push(id);
            }
        }
    }
    while let Some(id) = stack.pop() {
        if id == 0 || map.contains_key(&id) {
            continue;
        }
        let t = &types[id as usize];
        let n = name(strings, t.name_off);
        let forward = matches!(t.kind(), STRUCT | UNION) && !n.is_empty() && !keep.contains(&n);
        map.insert(id, order.len() as u32 + 1);
        order.push((id, forward));
        if forward {
            continue;
        }
        match t.kind() {
            PTR | TYPEDEF | VOLATILE | CONST | RESTRICT | FUNC | TYPE_TAG | VAR | DECL_TAG => {
                stack.push(t.size_or_type);
            }
            ARRAY => {
                stack.push(u32_at(&t.extra, 0));
                stack.push(u32_at(&t.extra, 4));
            }
            STRUCT | UNION => {
                for m in 0..t.vlen() {
                    stack.push(u32_at(&t.extra, m * 12 + 4));
                }
            }
            FUNC_PROTO => {
                stack.push(t.size_or_type);
                for p in 0..t.vlen() {
                    stack.push(u32_at(&t.extra, p * 8 + 4));
                }
            }
            DATASEC => {
                for v in 0..t.vlen() {
                    stack.push(u32_at(&t.extra, v * 12));
                }
            }
            _ => {}
        }
    }
    // New string table.
    let mut strs: Vec<u8> = vec![0];
    let mut str_ids: HashMap<u32, u32> = HashMap::new();
    let mut intern = |off: u32| -> u32 {
        if off == 0 {
            return 0;
        }
        *str_ids.entry(off).or_insert_with(|| {
            let at = strs.len() as u32;
            strs.extend_from_slice(name(strings, off).as_bytes());
            strs.push(0);
            at
        })
    };
    let remap = |id: u32| map.get(&id).copied().unwrap_or(0);
    let mut body = Vec::new();
    let put = |b: &mut Vec<u8>, v: u32| b.extend_from_slice(&v.to_le_bytes());
    for &(id, forward) in &order {
        let t = &types[id as usize];
        let name_off = intern(t.name_off);
        if forward {
            // BTF_KIND_FWD, kind_flag set for a union.
            let flag = if t.kind() == UNION { 1 << 31 } else { 0 };
            put(&mut body, name_off);
            put(&mut body, (FWD << 24) | flag);
            put(&mut body, 0);
            continue;
        }
        put(&mut body, name_off);
        put(&mut body, t.info);
        let mut extra = t.extra.clone();
        let set = |e: &mut Vec<u8>, o: usize, v: u32| e[o..o + 4].copy_from_slice(&v.to_le_bytes());
        let mut fix = |e: &mut Vec<u8>, stride: usize, name: Option<usize>, ty: Option<usize>| {
            for r in 0..t.vlen() {
                if let Some(o) = name {
                    let n = intern(u32_at(e, r * stride + o));
                    set(e, r * stride + o, n);
                }
                if let Some(o) = ty {
                    let id = remap(u32_at(e, r * stride + o));
                    set(e, r * stride + o, id);
                }
            }
        };
        let size_or_type = match t.kind() {
            PTR | TYPEDEF | VOLATILE | CONST | RESTRICT | FUNC | TYPE_TAG | VAR | DECL_TAG => {
                remap(t.size_or_type)
            }
            FUNC_PROTO => remap(t.size_or_type),
            _ => t.size_or_type,
        };
        match t.kind() {
            ARRAY => {
                let (a, b) = (remap(u32_at(&extra, 0)), remap(u32_at(&extra, 4)));
                set(&mut extra, 0, a);
                set(&mut extra, 4, b);
            }
            // Records of `stride` bytes with a name and/or a type id.
            STRUCT | UNION => fix(&mut extra, 12, Some(0), Some(4)),
            ENUM => fix(&mut extra, 8, Some(0), None),
            ENUM64 => fix(&mut extra, 12, Some(0), None),
            FUNC_PROTO => fix(&mut extra, 8, Some(0), Some(4)),
            DATASEC => fix(&mut extra, 12, None, Some(0)),
            INT | FLOAT | FWD => {}
            _ => {}
        }
        put(&mut body, size_or_type);
        body.extend_from_slice(&extra);
    }
    let mut out = Vec::with_capacity(24 + body.len() + strs.len());
    out.extend_from_slice(&[0x9f, 0xeb, 1, 0]);
    out.extend_from_slice(&24u32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&(strs.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    out.extend_from_slice(&strs);
    Ok(out)
}

/// What rmapwatch reads from BTF: the slab tracepoints' prototypes, the
/// structs it reads, and the functions it hooks or classifies by (the
/// kallsyms fixtures' symbols).
fn roots() -> Vec<&'static str> {
    let mut v = vec![
        "btf_trace_kmem_cache_alloc",
        "btf_trace_kmem_cache_alloc_node",
        "btf_trace_kmem_cache_free",
    ];
    v.extend_from_slice(KEEP);
    v.extend_from_slice(&crate::vm::guest::KSYMS);
    v
}

/// Structs whose members rmapwatch reads (kept whole; the rest become
/// forward declarations).
pub const KEEP: &[&str] = &[
    "anon_vma",
    "anon_vma_chain",
    "kmem_cache",
    "task_struct",
    "signal_struct",
    "vm_area_struct",
    "mm_struct",
    "rw_semaphore",
    "list_head",
    "rb_root_cached",
];

/// A copy of `blob` in which parameter `index` of tracepoint `tp`'s
/// prototype has the type named `to`: a kernel layout rmapwatch does not
/// know, for the refusal's tests.
///
/// # Errors
/// The tracepoint or the type is not in `blob`.
pub fn retype_param(blob: &[u8], tp: &str, index: usize, to: &str) -> anyhow::Result<Vec<u8>> {
    let (types, strings) = parse(blob)?;
    let find = |n: &str, kind: u32| {
        types
            .iter()
            .position(|t| t.kind() == kind && name(strings, t.name_off) == n)
            .with_context(|| format!("no {n}"))
    };
    let typedef = find(&format!("btf_trace_{tp}"), TYPEDEF)?;
    let ptr = types[typedef].size_or_type as usize;
    let proto = types.get(ptr).context("the pointer")?.size_or_type as usize;
    let to_id = u32::try_from(find(to, INT)?)?;
    anyhow::ensure!(
        types.get(proto).is_some_and(|t| t.kind() == FUNC_PROTO),
        "not a prototype"
    );
    // Byte offset of that type's record in the blob.
    let mut at = 24;
    for t in &types[1..proto] {
        at += 12 + t.extra.len();
    }
    let mut out = blob.to_vec();
    let field = at + 12 + index * 8 + 4;
    out[field..field + 4].copy_from_slice(&to_id.to_le_bytes());
    Ok(out)
}

/// Writes `out` (the minimized BTF of `vmlinuz`).
///
/// # Errors
/// No BTF in the image, or the file cannot be written.
pub fn fixture(vmlinuz: &Path, out: &Path) -> anyhow::Result<usize> {
    let blob = from_image(vmlinuz)?;
    let small = minimize(&blob, &roots(), KEEP)?;
    std::fs::write(out, &small)?;
    Ok(small.len())
}
