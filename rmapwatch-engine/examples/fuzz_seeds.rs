//! Writes small seed streams for the fuzzer (`fuzz/corpus/stream`): one
//! of every message kind, in one block and in many, and a requests stream.
//! `cargo run -p rmapwatch-engine --example fuzz_seeds -- DIR`.
use rmapwatch_common::{object, site};
use rmapwatch_engine::{
    event::{Comm, Event},
    facts::Facts,
    input::{
        Counters, Input, KernelCounters, Notice, Paths, Request, RmapUpdate, SlabCounts, SlabRead,
    },
    snapshot::{Vma, WalkCounts},
    stream::{Kind, Writer},
};

fn inputs() -> Vec<Input> {
    let vma = |tgid: u32, i: u64| Vma {
        tgid,
        mm: 0xffff_8880_2000_0000 + u64::from(tgid) * 0x400,
        addr: 0xffff_8880_3000_0000 + i * 0xc0,
        start: 0x7f00_0000_0000 + i * 0x1000,
        end: 0x7f00_0000_1000 + i * 0x1000,
        flags: 0x100073,
        anon_vma: 0xffff_8880_1000_0000 + i * 104,
        av_root: 0xffff_8880_1000_0000,
        av_parent: 0xffff_8880_1000_0000,
        av_num_children: 2,
        av_refcount: 1,
        chain: vec![(
            0xffff_8880_4000_0000 + i * 64,
            0xffff_8880_1000_0000 + i * 104,
        )],
        ..Vma::default()
    };
    vec![
        Input::Notice(Notice {
            warning: false,
            text: "seed".into(),
        }),
        Input::Events {
            t: 1,
            events: vec![
                Event::alloc(
                    object::ANON_VMA,
                    site::PREPARE,
                    10,
                    0xffff_8880_1000_0000,
                    false,
                ),
                Event::alloc(object::AVC, site::FORK, 10, 0xffff_8880_4000_0000, true),
                Event::fork(10, 11, "kid"),
                Event::free(object::AVC, site::UNLINK, 11, 0xffff_8880_4000_0000),
                Event::Exec {
                    tid: 11,
                    tgid: 11,
                    comm: Comm::new("sh"),
                },
                Event::Exit {
                    tid: 11,
                    tgid: 11,
                    comm: Comm::new("sh"),
                },
            ],
        },
        Input::Slab(SlabCounts {
            anon_vma: Some(10),
            anon_vma_chain: Some(20),
            shrunk: false,
        }),
        Input::WalkBegin { t: 2 },
        Input::WalkVmas {
            comms: vec![(10, "parent".into()), (11, "kid".into())],
            parents: Vec::new(),
            vmas: vec![vma(10, 0), vma(10, 1), vma(11, 2)],
        },
        Input::MapPaths {
            pid: 10,
            paths: vec![(0x7f00_0000_0000, "/lib/x".into())],
        },
        Input::WalkEnd {
            t: 3,
            counts: WalkCounts {
                vmas: 3,
                ..WalkCounts::default()
            },
            error: None,
        },
        Input::Counters {
            t: 4,
            counters: Counters {
                kernel: Some(KernelCounters {
                    dropped: 1,
                    hook_calls: vec![0; 8],
                    ..KernelCounters::default()
                }),
                ..Counters::default()
            },
        },
        Input::Rmap(RmapUpdate::default()),
        Input::Names(vec![(10, "parent".into())]),
        Input::Tick { t: 5 },
        Input::End {
            t: 6,
            reason: "seed".into(),
        },
    ]
}

fn main() -> std::io::Result<()> {
    let dir = std::path::PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "fuzz/corpus/stream".into()),
    );
    std::fs::create_dir_all(&dir)?;
    for (name, block, compress) in [
        ("every-input-one-block", 1 << 20, true),
        ("every-input-blocks", 16, true),
        ("every-input-uncompressed", 64, false),
    ] {
        let mut w = Writer::new(Vec::new(), Kind::Inputs, "seed", Some(&Facts::default()))?
            .with_block_bytes(block);
        if !compress {
            w = w.uncompressed();
        }
        for i in inputs() {
            w.input(&i)?;
        }
        w.flush()?;
        std::fs::write(dir.join(name), w.into_inner())?;
    }
    let mut w = Writer::new(Vec::new(), Kind::Requests, "seed", None)?;
    for r in [
        Request::Walk {
            slab: SlabRead::Shrink,
            paths: Paths::All,
        },
        Request::Names { pids: vec![1] },
        Request::Stop,
    ] {
        w.request(&r)?;
    }
    w.flush()?;
    std::fs::write(dir.join("requests"), w.into_inner())?;
    Ok(())
}
