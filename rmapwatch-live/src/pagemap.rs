//! Each walked VMA's anonymous pages, from `/proc/<tgid>/pagemap`, read
//! just after the walk hands the VMA on: how many are present, and how
//! many of those another mapping maps too (the classifying, and what it
//! leaves out, is `rmapwatch_parse::procfs::anon_pages`). Only VMAs with
//! an anon_vma are read; a process's file is opened once for its VMAs in a
//! row, and read in chunks of [`CHUNK`] bytes, within a time budget per
//! walk ([`PagemapRead`]).
use std::{
    io,
    time::{Duration, Instant},
};

use rmapwatch_engine::snapshot::{AnonPages, PagemapRead, Vma, WalkCounts};
use rmapwatch_parse::procfs as parse;

/// Bytes of pagemap read at a time: 8,192 entries, 32 MiB of address
/// space with 4 KiB pages.
pub const CHUNK: usize = 64 * 1024;

/// A file read at offsets (a process's pagemap, or a test's).
pub trait ReadAt {
    /// As [`std::os::unix::fs::FileExt::read_at`].
    ///
    /// # Errors
    /// The read fails.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
}

impl ReadAt for std::fs::File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        std::os::unix::fs::FileExt::read_at(self, buf, offset)
    }
}

/// Opens the pagemap of a process.
pub type Open = Box<dyn FnMut(u32) -> io::Result<Box<dyn ReadAt>>>;

/// What one walk read (added to its [`WalkCounts`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Counts {
    vmas: u64,
    skipped: u64,
    failed: u64,
    pages: u64,
}

/// The pagemap reader of one walk.
pub struct Reader {
    how: PagemapRead,
    open: Open,
    /// The process being read and its file (`None`: it could not be
    /// opened; its other VMAs are not tried again).
    current: Option<(u32, Option<Box<dyn ReadAt>>)>,
    page_shift: u32,
    buf: Vec<u8>,
    entries: Vec<u64>,
    spent: Duration,
    counts: Counts,
}

impl Reader {
    /// A reader of `/proc/<tgid>/pagemap` for one walk.
    #[must_use]
    pub fn new(how: PagemapRead) -> Self {
        // SAFETY: sysconf has no preconditions.
        let page = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        Self::with_open(
            how,
            page,
            Box::new(|tgid| {
                let f = std::fs::File::open(format!("/proc/{tgid}/pagemap"))?;
                Ok(Box::new(f) as Box<dyn ReadAt>)
            }),
        )
    }

    /// A reader whose files `open` gives, for pages of `page_size` bytes.
    #[must_use]
    pub fn with_open(how: PagemapRead, page_size: u64, open: Open) -> Self {
        Self {
            how,
            open,
            current: None,
            page_shift: page_size.max(8).trailing_zeros(),
            buf: Vec::new(),
            entries: Vec::new(),
            spent: Duration::ZERO,
            counts: Counts::default(),
        }
    }

    /// Whether the walk's budget is spent.
    fn out_of_time(&self) -> bool {
        matches!(self.how, PagemapRead::Within(b) if self.spent >= b)
    }

    /// Fills `anon_pages` of every VMA of `vmas` with an anon_vma (the
    /// others, and those it cannot or may no longer read, stay `None`).
    pub fn fill(&mut self, vmas: &mut [Vma]) {
        if self.how == PagemapRead::Off {
            return;
        }
        for v in vmas.iter_mut().filter(|v| v.anon_vma != 0) {
            v.anon_pages = self.read(v);
        }
    }

    /// One VMA's anonymous pages; counted as read, skipped or failed.
    fn read(&mut self, v: &Vma) -> Option<AnonPages> {
        if self.out_of_time() {
            self.counts.skipped += 1;
            return None;
        }
        let t = Instant::now();
        if self
            .current
            .as_ref()
            .is_none_or(|(tgid, _)| *tgid != v.tgid)
        {
            // The last process's file closes here.
            self.current = Some((v.tgid, (self.open)(v.tgid).ok()));
        }
        self.spent += t.elapsed();
        let first = v.start >> self.page_shift;
        let pages = v.end.saturating_sub(v.start) >> self.page_shift;
        let mut n = AnonPages::default();
        let mut done = 0u64;
        while done < pages {
            if self.out_of_time() {
                self.counts.skipped += 1;
                return None;
            }
            let t = Instant::now();
            let want = (pages - done).min((CHUNK / 8) as u64);
            let read = match (&self.current, first.checked_add(done)) {
                (Some((_, Some(file))), Some(page)) => {
                    let bytes = usize::try_from(want).unwrap_or(CHUNK / 8) * 8;
                    self.buf.resize(bytes, 0);
                    page.checked_mul(8)
                        .is_some_and(|at| read_full(&**file, &mut self.buf, at))
                }
                _ => false,
            };
            if read {
                self.entries.clear();
                self.entries.extend(parse::pagemap_entries(&self.buf));
                n = parse::add_anon_pages(n, parse::anon_pages(&self.entries));
                self.counts.pages += want;
            }
            self.spent += t.elapsed();
            if !read {
                self.counts.failed += 1;
                return None;
            }
            done += want;
        }
        self.counts.vmas += 1;
        Some(n)
    }

    /// Adds what the walk read to its counts.
    pub fn add_to(&self, c: &mut WalkCounts) {
        c.pagemap_vmas += self.counts.vmas;
        c.pagemap_skipped += self.counts.skipped;
        c.pagemap_failed += self.counts.failed;
        c.pagemap_pages += self.counts.pages;
        c.pagemap_ns += u64::try_from(self.spent.as_nanos()).unwrap_or(u64::MAX);
    }
}

/// Reads `buf` whole at `at`; `false` when the file ends first (the
/// process's memory went away: pagemap then reads nothing) or fails.
fn read_full(file: &dyn ReadAt, buf: &mut [u8], at: u64) -> bool {
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], at + got as u64) {
            Ok(0) => return false,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use std::{cell::Cell, rc::Rc};

    use rmapwatch_parse::procfs::pagemap::{EXCLUSIVE, PRESENT, SWAPPED};

    use super::*;

    const PAGE: u64 = 4096;

    /// A process's pagemap whose entry for page `p` is `entry(p)`, empty
    /// (a process gone) from page `end` on; each read sleeps `delay`.
    struct Fake {
        entry: fn(u64) -> u64,
        end: u64,
        delay: Duration,
        reads: Rc<Cell<u64>>,
    }

    impl ReadAt for Fake {
        fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
            std::thread::sleep(self.delay);
            self.reads.set(self.reads.get() + 1);
            let mut n = 0;
            for (i, c) in buf.chunks_exact_mut(8).enumerate() {
                let page = offset / 8 + i as u64;
                if page >= self.end {
                    break;
                }
                c.copy_from_slice(&(self.entry)(page).to_ne_bytes());
                n += 8;
            }
            Ok(n)
        }
    }

    /// Pages: every fourth is swapped out, the others present; of those,
    /// the even ones exclusive.
    fn pattern(p: u64) -> u64 {
        match p % 4 {
            3 => SWAPPED,
            0 | 2 => PRESENT | EXCLUSIVE,
            _ => PRESENT,
        }
    }

    /// Processes: 1 and 2 readable (2 gone from page 0x300 on), 3 refused.
    fn reader(how: PagemapRead, delay: Duration) -> (Reader, Rc<Cell<u64>>, Rc<Cell<u64>>) {
        let (opens, reads) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(0)));
        let (o, r) = (opens.clone(), reads.clone());
        let open: Open = Box::new(move |tgid| {
            o.set(o.get() + 1);
            match tgid {
                1 | 2 => Ok(Box::new(Fake {
                    entry: pattern,
                    end: if tgid == 1 { u64::MAX } else { 0x300 },
                    delay,
                    reads: r.clone(),
                }) as Box<dyn ReadAt>),
                _ => Err(io::Error::from(io::ErrorKind::PermissionDenied)),
            }
        });
        (Reader::with_open(how, PAGE, open), opens, reads)
    }

    fn vma(tgid: u32, first_page: u64, pages: u64, anon: bool) -> Vma {
        Vma {
            tgid,
            start: first_page * PAGE,
            end: (first_page + pages) * PAGE,
            anon_vma: u64::from(anon) * 0xffff_8880_0000_1000,
            ..Vma::default()
        }
    }

    fn walk() -> Vec<Vma> {
        vec![
            vma(1, 0x100, 8, true),
            vma(1, 0x200, 4, false),
            // 20,000 pages: three chunks.
            vma(1, 0x1_0000, 20_000, true),
            vma(2, 0x100, 8, true),
            vma(2, 0x2f0, 0x20, true), // its memory ends inside
            vma(3, 0x100, 8, true),
            vma(3, 0x200, 8, true),
        ]
    }

    #[test]
    fn each_anonymous_vma_is_read_whole_once_per_process_file() {
        let (mut r, opens, reads) = reader(PagemapRead::Whole, Duration::ZERO);
        let mut vmas = walk();
        // In pieces, as the walk's chunks hand the VMAs on.
        let (a, b) = vmas.split_at_mut(3);
        r.fill(a);
        r.fill(b);
        let got: Vec<Option<(u64, u64)>> = vmas
            .iter()
            .map(|v| v.anon_pages.map(|a| (a.present, a.shared)))
            .collect();
        assert_eq!(
            got,
            [
                Some((6, 2)),
                None, // no anon_vma: not read
                Some((15_000, 5_000)),
                Some((6, 2)),
                None, // the process's memory went away under the read
                None, // refused
                None,
            ]
        );
        assert_eq!(opens.get(), 3, "one open per process");
        // The cut one: a part, then the end.
        assert_eq!(reads.get(), 1 + 3 + 1 + 2);
        let mut c = WalkCounts::default();
        r.add_to(&mut c);
        assert_eq!(
            (
                c.pagemap_vmas,
                c.pagemap_skipped,
                c.pagemap_failed,
                c.pagemap_pages
            ),
            (3, 0, 3, 8 + 20_000 + 8)
        );
    }

    #[test]
    fn once_the_budget_is_spent_the_rest_is_skipped_and_counted() {
        // Each read takes 2 ms; the budget is 1 ms: the first VMA is read
        // (the budget is not spent when it starts), the others are not.
        let (mut r, _, _) = reader(
            PagemapRead::Within(Duration::from_millis(1)),
            Duration::from_millis(2),
        );
        let mut vmas = walk();
        r.fill(&mut vmas);
        let read: Vec<bool> = vmas.iter().map(|v| v.anon_pages.is_some()).collect();
        assert_eq!(read, [true, false, false, false, false, false, false]);
        let mut c = WalkCounts::default();
        r.add_to(&mut c);
        assert_eq!(
            (c.pagemap_vmas, c.pagemap_skipped, c.pagemap_failed),
            (1, 5, 0)
        );
        assert!(c.pagemap_ns >= 2_000_000, "{}", c.pagemap_ns);
        // A budget of nothing reads nothing, and says so.
        let (mut r, opens, _) = reader(PagemapRead::Within(Duration::ZERO), Duration::ZERO);
        let mut vmas = walk();
        r.fill(&mut vmas);
        assert!(vmas.iter().all(|v| v.anon_pages.is_none()));
        assert_eq!(opens.get(), 0);
        let mut c = WalkCounts::default();
        r.add_to(&mut c);
        assert_eq!((c.pagemap_vmas, c.pagemap_skipped), (0, 6));
    }

    #[test]
    fn off_reads_nothing_and_counts_nothing() {
        let (mut r, opens, _) = reader(PagemapRead::Off, Duration::ZERO);
        let mut vmas = walk();
        r.fill(&mut vmas);
        assert!(vmas.iter().all(|v| v.anon_pages.is_none()));
        assert_eq!(opens.get(), 0);
        let mut c = WalkCounts::default();
        r.add_to(&mut c);
        assert_eq!(c, WalkCounts::default());
    }
}
