//! A gzip-compressed newc cpio archive (the initramfs format), written here
//! rather than by a host `cpio`: a fresh machine has none (`busybox cpio`
//! was used once, and its absence, hidden by a pipe, made the guest panic
//! with "Unable to mount root fs").
use std::{io::Write as _, os::unix::fs::PermissionsExt as _, path::Path};

use anyhow::Context as _;

/// One archive being written.
struct Writer<W: std::io::Write> {
    out: W,
    ino: u32,
}

impl<W: std::io::Write> Writer<W> {
    fn entry(&mut self, name: &str, mode: u32, data: &[u8]) -> std::io::Result<()> {
        self.ino += 1;
        let namesize = name.len() + 1;
        let fields = [
            self.ino,
            mode,
            0,
            0,
            if mode & 0o170_000 == 0o040_000 { 2 } else { 1 },
            0,
            u32::try_from(data.len()).unwrap_or(u32::MAX),
            0,
            0,
            0,
            0,
            u32::try_from(namesize).unwrap_or(u32::MAX),
            0,
        ];
        let mut header = String::from("070701");
        for f in fields {
            header.push_str(&format!("{f:08x}"));
        }
        self.out.write_all(header.as_bytes())?;
        self.out.write_all(name.as_bytes())?;
        self.out.write_all(&[0])?;
        self.pad(110 + namesize)?;
        self.out.write_all(data)?;
        self.pad(data.len())
    }

    fn pad(&mut self, len: usize) -> std::io::Result<()> {
        let n = (4 - len % 4) % 4;
        self.out.write_all(&[0; 3][..n])
    }
}

/// Packs the tree under `root` (directories, regular files, symlinks) into
/// `out` as a gzip-compressed newc archive.
///
/// # Errors
/// The tree cannot be read or the archive written.
pub fn pack(root: &Path, out: &Path) -> anyhow::Result<()> {
    let file = std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
    let mut w = Writer { out: gz, ino: 0 };
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .collect::<Result<_, _>>()?;
        entries.sort_by_key(std::fs::DirEntry::file_name);
        for e in entries {
            let path = e.path();
            let name = path
                .strip_prefix(root)?
                .to_str()
                .context("a non-UTF-8 path in the initramfs")?
                .to_owned();
            let meta = std::fs::symlink_metadata(&path)?;
            let perm = meta.permissions().mode() & 0o7777;
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path)?;
                w.entry(&name, 0o120_777, target.as_os_str().as_encoded_bytes())?;
            } else if meta.is_dir() {
                w.entry(&name, 0o040_000 | perm, &[])?;
                stack.push(path);
            } else {
                let data = std::fs::read(&path)?;
                w.entry(&name, 0o100_000 | perm, &data)?;
            }
        }
    }
    w.entry("TRAILER!!!", 0, &[])?;
    w.out.finish()?.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn headers_are_newc_and_padded() {
        let mut buf = Vec::new();
        let mut w = super::Writer {
            out: &mut buf,
            ino: 0,
        };
        w.entry("init", 0o100_755, b"#!/bin/sh\n").unwrap();
        assert!(buf.starts_with(b"070701"));
        // 110-byte header + "init\0" padded to 116, then 10 bytes padded to 12.
        assert_eq!(buf.len(), 116 + 12);
        assert_eq!(&buf[110..115], b"init\0");
        assert_eq!(&buf[6 + 6 * 8..6 + 7 * 8], b"0000000a");
    }
}
