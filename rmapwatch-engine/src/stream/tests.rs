//! The stream format: round trips, and every kind of bad input.
use rmapwatch_common::{object, site};

use super::*;
use crate::{
    event::Comm,
    input::{Counters, KernelCounters, Notice, Paths, RmapUpdate, SlabCounts, SlabRead},
    snapshot::WalkCounts,
};

fn facts() -> Facts {
    Facts {
        tool: "rmapwatch test".into(),
        page_size: 16384,
        ring_bytes: 1 << 20,
        source: "test".into(),
        ..Facts::default()
    }
}

fn vma(tgid: u32, i: u64) -> Vma {
    let av = 0xffff_8880_1000_0000 + i * 104;
    Vma {
        tgid,
        mm: 0xffff_8880_2000_0000 + u64::from(tgid) * 0x400,
        addr: 0xffff_8880_3000_0000 + i * 0xc0,
        start: 0x7f00_0000_0000 + i * 0x1000,
        end: 0x7f00_0000_1000 + i * 0x1000,
        flags: 0x100073,
        file: i.is_multiple_of(3),
        anon_vma: if i.is_multiple_of(5) { 0 } else { av },
        av_root: av,
        av_parent: av - 104,
        av_num_children: i % 4,
        av_refcount: 2,
        chain: (0..i % 3)
            .map(|k| (0xffff_8880_4000_0000 + i * 128 + k * 64, av - k * 104))
            .collect(),
        chain_truncated: i == 7,
        ppid: 0,
        pgoff: (i % 4 != 1).then_some(if i.is_multiple_of(3) {
            i * 7
        } else {
            0x7f00_0000 + i
        }),
        anon_pages: (i % 4 == 2).then_some(crate::snapshot::AnonPages {
            present: i * 3,
            shared: i,
        }),
    }
}

/// One input of every kind.
pub fn every_input() -> Vec<Input> {
    vec![
        Input::Facts(Box::new(facts())),
        Input::Notice(Notice {
            warning: true,
            text: "fentry: refused".into(),
        }),
        Input::Events {
            t: 5,
            events: vec![
                Event::alloc(
                    object::ANON_VMA,
                    site::PREPARE,
                    100,
                    0xffff_8880_1000_0068,
                    false,
                ),
                Event::alloc(object::AVC, site::FORK, 100, 0xffff_8880_4000_0040, true),
                Event::Free(Slab {
                    object: object::AVC,
                    site: site::UNLINK,
                    in_fork: false,
                    tid: 4_194_303,
                    tgid: 1,
                    ptr: 0x40,
                }),
                Event::fork(100, 4_000_000, "kid"),
                Event::Exec {
                    tid: 101,
                    tgid: 100,
                    comm: Comm::new("exactly15chars!"),
                },
                Event::Exit {
                    tid: 7,
                    tgid: 7,
                    comm: Comm([b'z'; 16]),
                },
            ],
        },
        Input::Slab(SlabCounts {
            anon_vma: Some(3),
            anon_vma_chain: None,
            shrunk: true,
        }),
        Input::WalkBegin { t: 6 },
        Input::WalkVmas {
            comms: vec![(100, "zygote64".into()), (200, "".into())],
            parents: vec![(100, 1)],
            vmas: (0..10).map(|i| vma(100, i)).chain([vma(200, 11)]).collect(),
        },
        Input::Events {
            t: 7,
            events: vec![Event::free(object::ANON_VMA, site::PUT, 100, 0)],
        },
        Input::MapPaths {
            pid: 100,
            paths: vec![(0x7f00_0000_0000, "/system/lib64/libc.so".into())],
        },
        Input::WalkEnd {
            t: 8,
            counts: WalkCounts {
                vmas: 11,
                duplicate_vmas: 2,
                short_chains: 1,
                truncated_chains: 1,
                pagemap_vmas: 7,
                pagemap_skipped: 1,
                pagemap_failed: 1,
                pagemap_pages: 300,
                pagemap_ns: 450_000,
            },
            error: None,
        },
        Input::Counters {
            t: 9,
            counters: Counters {
                kernel: Some(KernelCounters {
                    dropped: 3,
                    hook_calls: vec![1, 2, 3, 4, 5, 6, 7, 8],
                    rmap_ptes_pages: 9,
                    rmap_vmas_full: 0,
                    ..KernelCounters::default()
                }),
                programs: None,
                undecodable: 0,
                ring_peak_bytes: 4096,
                fork_windows_dropped: 0,
            },
        },
        Input::Rmap(RmapUpdate {
            current: vec![((100, 0x7f00_0000_0000), 4)],
            retired: vec![((99, 0x1000), 1)],
        }),
        Input::Names(vec![(300, "sh".into())]),
        Input::Tick { t: 10 },
        Input::WalkBegin { t: 11 },
        Input::WalkEnd {
            t: 12,
            counts: WalkCounts::default(),
            error: Some("snapshots unavailable".into()),
        },
        Input::End {
            t: 13,
            reason: "stopped".into(),
        },
    ]
}

fn encode(inputs: &[Input], block_bytes: usize) -> Vec<u8> {
    let Input::Facts(f) = &inputs[0] else {
        panic!("facts first")
    };
    let mut w = Writer::new(Vec::new(), Kind::Inputs, "rmapwatch test", Some(f))
        .unwrap()
        .with_block_bytes(block_bytes);
    for i in &inputs[1..] {
        w.input(i).unwrap();
    }
    w.flush().unwrap();
    w.into_inner()
}

#[test]
fn every_input_round_trips_in_one_block_and_in_many() {
    let all = every_input();
    for block in [1, 64, BLOCK_BYTES] {
        let bytes = encode(&all, block);
        assert_eq!(decode_all(&bytes).unwrap(), all, "blocks of {block} bytes");
    }
    // Uncompressed blocks (codec 0) read the same.
    let Input::Facts(f) = &all[0] else {
        unreachable!()
    };
    let mut w = Writer::new(Vec::new(), Kind::Inputs, "t", Some(f))
        .unwrap()
        .uncompressed()
        .with_block_bytes(64);
    for i in &all[1..] {
        w.input(i).unwrap();
    }
    w.flush().unwrap();
    assert_eq!(decode_all(&w.into_inner()).unwrap(), all);
}

#[test]
fn the_fuzz_corpus_decodes_without_a_panic() {
    // Regression: every input the fuzzer kept (fuzz/corpus/stream) and its
    // seeds (fuzz/seeds/stream) are an error or inputs, never a panic; the
    // engine takes what decodes.
    let fuzz = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let archive = std::fs::File::open(fuzz.join("corpus/stream.tar.zst")).unwrap();
    let zst = ruzstd::decoding::StreamingDecoder::new(archive).unwrap();
    let mut files: Vec<Vec<u8>> = Vec::new();
    for entry in tar::Archive::new(zst).entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.header().entry_type().is_file() {
            let mut b = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut b).unwrap();
            files.push(b);
        }
    }
    for e in std::fs::read_dir(fuzz.join("seeds/stream")).unwrap() {
        files.push(std::fs::read(e.unwrap().path()).unwrap());
    }
    let mut n = 0;
    for bytes in files {
        let inputs = match decode_all(&bytes) {
            Ok(i) | Err((i, _)) => i,
        };
        let mut engine = crate::engine::Engine::new(crate::engine::Options::default());
        for i in inputs {
            let _ = engine.apply(i);
        }
        let _ = engine.report(true);
        n += 1;
    }
    assert!(n >= 1000, "{n} corpus files in {}", fuzz.display());
}

#[test]
fn requests_round_trip_and_a_stream_of_the_wrong_kind_is_refused() {
    let reqs = [
        Request::Walk {
            slab: SlabRead::Shrink,
            paths: Paths::All,
        },
        Request::Detail { pid: Some(7) },
        Request::Names { pids: vec![1, 2] },
        Request::Pause { paused: true },
        Request::Stop,
    ];
    let mut w = Writer::new(Vec::new(), Kind::Requests, "t", None).unwrap();
    for r in &reqs {
        w.request(r).unwrap();
        w.flush().unwrap();
    }
    let bytes = w.into_inner();
    let mut r = Reader::open(&bytes[..], Kind::Requests).unwrap();
    for want in &reqs {
        assert_eq!(&r.next_request().unwrap().unwrap(), want);
    }
    assert!(r.next_request().unwrap().is_none());
    assert!(matches!(
        Reader::open(&bytes[..], Kind::Inputs),
        Err(StreamError::WrongKind(Kind::Requests, Kind::Inputs))
    ));
}

#[test]
fn empty_foreign_and_other_version_files_say_so() {
    assert!(matches!(decode_all(b""), Err((_, StreamError::Empty))));
    assert!(matches!(
        decode_all(b"{\"schema\": \"rmapwatch.report/1\"}"),
        Err((_, StreamError::NotOurs))
    ));
    assert!(matches!(
        decode_all(b"RMAP"),
        Err((_, StreamError::NotOurs))
    ));
    let mut bytes = encode(&every_input(), 64);
    bytes[8] = 2;
    assert!(matches!(
        decode_all(&bytes),
        Err((_, StreamError::Version(2, m))) if m == VERSION.1
    ));
}

#[test]
fn a_truncated_stream_replays_up_to_the_cut_and_says_where() {
    let all = every_input();
    let bytes = encode(&all, 64);
    let whole = decode_all(&bytes).unwrap().len();
    let mut partial_seen = false;
    for cut in (1..bytes.len()).step_by(7) {
        let Err((got, e)) = decode_all(&bytes[..cut]) else {
            panic!("a cut at {cut} decoded")
        };
        assert!(got.len() < whole);
        assert_eq!(&all[..got.len()], &got[..], "what came is right");
        partial_seen |= got.len() > 3;
        match e {
            StreamError::Truncated(o) | StreamError::NoEnd(o) => {
                assert!(o <= cut as u64, "offset {o} within the {cut} bytes");
            }
            StreamError::NotOurs => assert!(cut < 8),
            e => panic!("cut at {cut}: {e}"),
        }
    }
    assert!(partial_seen);
}

#[test]
fn a_damaged_block_stops_the_replay_there_with_its_offset() {
    let all = every_input();
    let bytes = encode(&all, 64);
    let good = decode_all(&bytes).unwrap();
    // Flip one byte in the middle: every block before it replays.
    let mid = bytes.len() / 2;
    let mut bad = bytes.clone();
    bad[mid] ^= 0x40;
    let Err((got, e)) = decode_all(&bad) else {
        panic!("damage went unnoticed")
    };
    assert!(!got.is_empty() && got.len() < good.len());
    let Some(offset) = e.offset() else {
        panic!("no offset: {e}")
    };
    assert!(offset <= mid as u64, "{e}");
    assert!(e.to_string().contains(&format!("byte {offset}")), "{e}");
    // The header's checksum.
    let mut bad = bytes;
    bad[25] ^= 1;
    assert!(matches!(
        decode_all(&bad),
        Err((_, StreamError::Corrupt { offset: 0, .. }))
    ));
}

#[test]
fn hostile_lengths_and_counts_are_refused_before_anything_is_allocated() {
    let bytes = encode(&every_input(), 64);
    // A header claiming 4 GiB.
    let mut h = bytes.clone();
    h[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        decode_all(&h),
        Err((_, StreamError::Corrupt { offset: 0, .. }))
    ));
    // A block claiming 4 GiB, raw and compressed.
    let header_len = HEADER_FIXED + u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
    for field in [4, 8] {
        let mut b = bytes.clone();
        b[header_len + field..header_len + field + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        let Err((_, e)) = decode_all(&b) else {
            panic!("accepted")
        };
        assert!(
            matches!(e, StreamError::Corrupt { offset, .. } if offset == header_len as u64),
            "{e}"
        );
    }
    // A block whose (checksummed) payload claims a billion events.
    let mut raw = vec![tag::EVENTS];
    put_varint(&mut raw, 1);
    put_varint(&mut raw, 1_000_000_000);
    raw.extend_from_slice(&[1, 0, 0, 0]);
    let e = block_of(&raw);
    assert!(e.to_string().contains("cannot hold"), "{e}");
    // A name longer than a comm, a varint of eleven bytes, an unknown kind.
    let mut raw = vec![tag::EVENTS];
    put_varint(&mut raw, 1);
    put_varint(&mut raw, 1);
    raw.extend_from_slice(&[5, 0, 0]);
    put_bytes(&mut raw, &[b'a'; 40]);
    assert!(block_of(&raw).to_string().contains("longer than 16"));
    let raw = [
        tag::TICK,
        0xff,
        0xff,
        0xff,
        0xff,
        0xff,
        0xff,
        0xff,
        0xff,
        0xff,
        0xff,
        0x01,
    ];
    assert!(block_of(&raw).to_string().contains("64 bits"));
    assert!(block_of(&[33]).to_string().contains("unknown kind 33"));
    // From tag 64 on, an unknown message is skipped (a newer minor version).
    let mut raw = vec![99];
    put_bytes(&mut raw, b"whatever");
    raw.push(tag::TICK);
    put_varint(&mut raw, 3);
    let facts = facts();
    let mut w = Writer::new(Vec::new(), Kind::Inputs, "t", Some(&facts)).unwrap();
    w.enc.raw = raw;
    w.flush().unwrap();
    w.input(&Input::End {
        t: 4,
        reason: "x".into(),
    })
    .unwrap();
    let got = decode_all(&w.into_inner()).unwrap();
    assert_eq!(got[1], Input::Tick { t: 3 });
}

/// The error of a stream whose one block holds `raw`.
fn block_of(raw: &[u8]) -> StreamError {
    let facts = facts();
    let mut w = Writer::new(Vec::new(), Kind::Inputs, "t", Some(&facts)).unwrap();
    w.enc.raw = raw.to_vec();
    w.flush().unwrap();
    match decode_all(&w.into_inner()) {
        Err((_, e)) => e,
        Ok(v) => panic!("decoded {v:?}"),
    }
}

#[test]
fn events_take_a_few_bytes_each() {
    // A fork storm's shape: allocations at nearby addresses, one process.
    let events: Vec<Event> = (0..10_000u64)
        .map(|i| {
            Event::alloc(
                (i % 2) as u32,
                site::FORK,
                4242,
                0xffff_8880_1234_0000 + i * 64,
                true,
            )
        })
        .collect();
    let inputs = vec![
        Input::Facts(Box::new(facts())),
        Input::Events { t: 1, events },
        Input::End {
            t: 2,
            reason: "x".into(),
        },
    ];
    let bytes = encode(&inputs, BLOCK_BYTES);
    let per_event = bytes.len() as f64 / 10_000.0;
    assert!(per_event < 4.0, "{per_event} bytes per event");
}
