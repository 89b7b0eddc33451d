//! TUI tests: state transitions, whole-screen snapshots (insta, TestBackend)
//! at 80x24 and 160x48, and the real loop driven by scripted keys.
use std::{sync::mpsc, time::Duration};

use ratatui::{
    Terminal,
    backend::TestBackend,
    crossterm::event::{Event, KeyCode, KeyEvent, KeyModifiers},
};

use super::{
    Events,
    state::{Action, App, Column, Frame, Update, View, action_for},
};
use rmapwatch_engine::{
    engine::{self, Engine},
    facts::{Facts, KernelId, Sizes},
    input::{Counters, Input, KernelCounters},
    model::sim::Sim,
    snapshot::{Snapshot, WalkCounts},
};

const SIZES: Sizes = Sizes {
    anon_vma: 104,
    anon_vma_chain: 64,
};

/// A deterministic system: a parent with 20 regions and 3 children, an
/// unrelated process with 5 regions.
fn snapshot() -> Snapshot {
    let mut sim = Sim::default();
    for i in 0..20 {
        let v = sim.map(100, i * 0x10000);
        sim.fault(v);
    }
    for c in 0..3 {
        sim.fork(100, 101 + c);
    }
    for i in 0..5 {
        let v = sim.map(200, 0x7f00_0000 + i * 0x10000);
        sim.fault(v);
    }
    let mut snap = sim.snapshot();
    for (pid, p) in &mut snap.procs {
        p.pid = *pid;
        p.comm = if *pid == 200 {
            "postgres".into()
        } else {
            "zygote64".into()
        };
    }
    snap
}

/// An engine that walked `snapshot()` once a second up to `secs`, with
/// `detail` inspected; the frame after its last tick.
fn engine(secs: u64, detail: Option<u32>) -> Engine {
    let snap = snapshot();
    let mut e = Engine::new(engine::Options::default());
    e.apply(Input::Facts(Box::new(Facts {
        kernel: KernelId {
            release: "6.18.0-test".into(),
            arch: "x86_64".into(),
        },
        sizes: SIZES,
        hooks: rmapwatch_engine::hooks::tracepoint_only("fentry: refused"),
        fork_window: true,
        ring_bytes: 8 << 20,
        source: "live".into(),
        ..Facts::default()
    })))
    .unwrap();
    e.want_detail(detail);
    e.apply(Input::Counters {
        t: 0,
        counters: Counters {
            kernel: Some(KernelCounters::default()),
            ring_peak_bytes: 64 << 10,
            fork_windows_dropped: 0,
            ..Counters::default()
        },
    })
    .unwrap();
    let comms: Vec<(u32, String)> = snap
        .procs
        .values()
        .map(|p| (p.pid, p.comm.clone()))
        .collect();
    let s = 1_000_000_000;
    for t in 0..=secs {
        e.apply(Input::WalkBegin { t: t * s }).unwrap();
        e.apply(Input::WalkVmas {
            comms: comms.clone(),
            parents: Vec::new(),
            vmas: snap.vmas.clone(),
        })
        .unwrap();
        e.apply(Input::WalkEnd {
            t: t * s + 1_500_000,
            counts: WalkCounts {
                vmas: snap.vmas.len() as u64,
                ..WalkCounts::default()
            },
            error: None,
        })
        .unwrap();
        e.apply(Input::Tick {
            t: t * s + 2_000_000,
        })
        .unwrap();
    }
    e
}

fn frame(t: u64, detail: Option<u32>) -> Frame {
    engine(t, detail).frame()
}

fn app_with_frames() -> App {
    let mut app = App::new(Duration::from_secs(1), Some("/tmp/rmapwatch.log".into()));
    for t in 0..5 {
        app.update(Action::Update(Update::Frame(Box::new(frame(t, None)))));
    }
    app
}

fn draw(app: &App, w: u16, h: u16) -> Terminal<TestBackend> {
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|f| f.render_widget(app, f.area())).unwrap();
    t
}

fn key(c: KeyCode) -> Event {
    Event::Key(KeyEvent::new(c, KeyModifiers::NONE))
}

#[test]
fn main_view_snapshots() {
    let app = app_with_frames();
    insta::assert_snapshot!("main_80x24", draw(&app, 80, 24).backend());
    insta::assert_snapshot!("main_160x48", draw(&app, 160, 48).backend());
}

#[test]
fn detail_and_help_snapshots() {
    let mut app = app_with_frames();
    app.update(Action::Enter);
    let View::Detail(pid) = app.view else {
        panic!("Enter opens the detail view")
    };
    app.update(Action::Update(Update::Frame(Box::new(frame(5, Some(pid))))));
    insta::assert_snapshot!("detail_80x24", draw(&app, 80, 24).backend());
    insta::assert_snapshot!("detail_160x48", draw(&app, 160, 48).backend());
    app.update(Action::ToggleHelp);
    insta::assert_snapshot!("help_80x24", draw(&app, 80, 24).backend());
}

#[test]
fn too_small_and_waiting_snapshots() {
    insta::assert_snapshot!(
        "too_small_40x10",
        draw(&app_with_frames(), 40, 10).backend()
    );
    let empty = App::new(Duration::from_secs(1), None);
    insta::assert_snapshot!("waiting_80x24", draw(&empty, 80, 24).backend());
}

#[test]
fn biggest_saving_comes_first_and_sorting_cycles() {
    let mut app = app_with_frames();
    let first = app.rows()[0].pid;
    assert!(
        (101..=103).contains(&first),
        "a fork child saves most: {first}"
    );
    assert_eq!(app.sort, Column::Saving);
    app.update(Action::SortNext);
    assert_eq!(app.sort, Column::Pid);
    assert_eq!(app.rows()[0].pid, 200, "numbers sort biggest first");
    app.update(Action::SortReverse);
    assert_eq!(app.rows()[0].pid, 100);
    app.update(Action::SortNext);
    assert_eq!(app.sort, Column::Comm);
    assert_eq!(app.rows()[0].comm, "postgres", "text sorts ascending");
    app.update(Action::SortPrev);
    app.update(Action::SortPrev);
    assert_eq!(app.sort, Column::Saving);
}

#[test]
fn filter_selection_detail_and_back() {
    let mut app = app_with_frames();
    app.update(Action::FilterStart);
    for c in "postg".chars() {
        app.update(Action::FilterChar(c));
    }
    assert_eq!(app.rows().len(), 1);
    app.update(Action::FilterDone);
    assert!(!app.editing_filter);
    app.update(Action::Down(5));
    assert_eq!(app.selected, 0, "the selection stays inside the rows");
    app.update(Action::Enter);
    assert_eq!(app.view, View::Detail(200));
    assert_eq!(app.detail_pid(), Some(200));
    app.update(Action::Back);
    assert_eq!(app.view, View::Main);
    app.update(Action::FilterStart);
    app.update(Action::Back);
    assert!(app.filter.is_empty(), "Esc while typing clears the filter");
    assert_eq!(app.rows().len(), 5);
}

#[test]
fn pause_freezes_the_display_and_rates_follow_frames() {
    let mut app = app_with_frames();
    let before = app.history.len();
    app.update(Action::TogglePause);
    app.update(Action::Update(Update::Frame(Box::new(frame(9, None)))));
    assert_eq!(app.history.len(), before);
    app.update(Action::TogglePause);
    app.update(Action::Update(Update::Frame(Box::new(frame(10, None)))));
    assert_eq!(app.history.len(), before + 1);
    assert_eq!(app.rates.events, 0.0);
}

#[test]
fn keys_map_to_actions_like_htop() {
    let app = App::new(Duration::from_secs(1), None);
    let a = |e: Event| format!("{:?}", action_for(&e, &app));
    assert_eq!(a(key(KeyCode::Char('q'))), "Some(Quit)");
    assert_eq!(
        a(Event::Key(KeyEvent::new(
            KeyCode::Char('c'),
            KeyModifiers::CONTROL
        ))),
        "Some(Quit)"
    );
    assert_eq!(a(key(KeyCode::PageDown)), "Some(Down(10))");
    assert_eq!(a(key(KeyCode::Char('>'))), "Some(SortNext)");
    assert_eq!(a(key(KeyCode::Char('/'))), "Some(FilterStart)");
    assert_eq!(a(key(KeyCode::Char('?'))), "Some(ToggleHelp)");
    assert_eq!(a(key(KeyCode::Char('x'))), "None");
    let mut typing = App::new(Duration::from_secs(1), None);
    typing.editing_filter = true;
    assert_eq!(
        format!("{:?}", action_for(&key(KeyCode::Char('q')), &typing)),
        "Some(FilterChar('q'))"
    );
}

#[test]
fn an_ended_recording_stays_on_screen_until_the_user_quits() {
    let mut app = app_with_frames();
    app.update(Action::Update(Update::Ended("replay ended".into())));
    assert!(!app.quit);
    let t = draw(&app, 160, 48);
    let last: String = (0..160)
        .map(|x| t.backend().buffer()[(x, 47)].symbol())
        .collect();
    assert!(last.contains("replay ended"), "{last}");
    app.update(Action::Quit);
    assert!(app.quit);
}

#[test]
fn a_stopped_collector_ends_the_loop() {
    let mut app = app_with_frames();
    app.update(Action::Update(Update::Stopped(
        "stopped (Terminate)".into(),
    )));
    assert!(app.quit);
    assert_eq!(app.stopped.as_deref(), Some("stopped (Terminate)"));
}

struct Script(Vec<Event>);

impl Events for Script {
    fn next(&mut self, _timeout: Duration) -> std::io::Result<Option<Event>> {
        Ok(if self.0.is_empty() {
            None
        } else {
            Some(self.0.remove(0))
        })
    }
}

#[test]
fn the_real_loop_runs_on_a_test_backend() {
    let (utx, urx) = mpsc::channel();
    let (dtx, drx) = mpsc::channel();
    utx.send(Update::Frame(Box::new(frame(1, None)))).unwrap();
    let mut script = Script(
        [
            KeyCode::Char('/'),
            KeyCode::Char('p'),
            KeyCode::Char('o'),
            KeyCode::Enter,
            KeyCode::Enter,
            KeyCode::Esc,
            KeyCode::Char('q'),
        ]
        .into_iter()
        .map(key)
        .collect(),
    );
    let mut terminal = Terminal::new(TestBackend::new(100, 30)).unwrap();
    let mut app = App::new(Duration::from_secs(1), None);
    super::run(&mut terminal, &mut app, &mut script, &urx, &dtx).unwrap();
    assert!(app.quit);
    assert_eq!(app.filter, "po");
    assert_eq!(app.view, View::Main);
    let asked: Vec<super::Command> = drx.try_iter().collect();
    assert_eq!(
        asked,
        vec![
            super::Command::Detail(Some(200)),
            super::Command::Detail(None)
        ],
        "the collector is told which detail to compute"
    );
}

#[test]
fn the_header_shows_the_tools_own_cost_and_a_degraded_model() {
    let mut f = frame(10, None);
    let mut programs = std::collections::BTreeMap::new();
    programs.insert(
        "kmem_cache_alloc".to_owned(),
        rmapwatch_engine::input::ProgramStats {
            runs: 1000,
            run_time_ns: 37_000,
            recursion_misses: 0,
        },
    );
    f.cost = Some(
        rmapwatch_engine::report::CostReport::new(&programs, 10.0).against(Some(
            &rmapwatch_engine::facts::Floor {
                ns_per_run: 25.0,
                measured_unix: 0,
                by: "rmw-bench cost".into(),
            },
        )),
    );
    f.dropped = Some(42);
    f.resync.degraded = true;
    let mut app = App::new(Duration::from_secs(1), None);
    app.update(Action::Update(Update::Frame(Box::new(f))));
    let t = draw(&app, 160, 48);
    let text: String = (0..2)
        .map(|y| {
            (0..160)
                .map(|x| t.backend().buffer()[(x, y)].symbol())
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert!(text.contains("cost 37 ns/ev"), "{text}");
    assert!(text.contains("slab 1.48x floor"), "{text}");
    assert!(text.contains("dropped 42"), "{text}");
    assert!(text.contains("DEGRADED"), "{text}");
}

#[test]
fn the_header_names_the_slab_path_and_warns_of_inlining() {
    let mut app = app_with_frames();
    let mut f = frame(6, None);
    f.facts.slab.path = "perf".into();
    f.inlined_warning =
        Some("3 anon_vma allocations at call sites outside the rmap functions".into());
    app.update(Action::Update(Update::Frame(Box::new(f))));
    let screen = format!("{}", draw(&app, 250, 30).backend());
    assert!(screen.contains("slab:perf"), "{screen}");
    assert!(
        screen.contains("WARNING: 3 anon_vma allocations"),
        "{screen}"
    );
}

#[test]
fn folded_exits_are_counted_in_the_process_table_title() {
    let mut app = app_with_frames();
    let screen = format!("{}", draw(&app, 160, 48).backend());
    assert!(!screen.contains("folded"), "{screen}");
    let mut f = frame(6, None);
    f.exited.processes = 1234;
    app.update(Action::Update(Update::Frame(Box::new(f))));
    let screen = format!("{}", draw(&app, 160, 48).backend());
    assert!(screen.contains("; 1234 exited, folded) "), "{screen}");
}

/// The screen's line `y`.
fn line(t: &Terminal<TestBackend>, y: u16) -> String {
    let w = t.backend().buffer().area.width;
    (0..w)
        .map(|x| t.backend().buffer()[(x, y)].symbol())
        .collect()
}

#[test]
fn d_cycles_the_design_of_the_table_chart_and_header() {
    let mut app = app_with_frames();
    assert_eq!(
        format!("{:?}", action_for(&key(KeyCode::Char('d')), &app)),
        "Some(DesignNext)"
    );
    assert_eq!(app.design, "lazy");
    app.update(Action::DesignNext);
    assert_eq!(app.design, "cow_context");
    insta::assert_snapshot!("main_cow_context_80x24", draw(&app, 80, 24).backend());

    // Every row shows the design's bytes for its process and what it
    // saves against today, as `design::shares` computes them.
    let outcomes = app
        .frame
        .as_ref()
        .unwrap()
        .walk
        .as_ref()
        .unwrap()
        .designs
        .clone();
    let t = draw(&app, 160, 48);
    let screen = format!("{}", t.backend());
    assert!(line(&t, 0).contains("design cow_context"), "{screen}");
    assert!(screen.contains("━ cow_context"), "the chart: {screen}");
    assert!(
        screen.contains("▶ cow_context"),
        "the designs panel: {screen}"
    );
    let header = (0..48)
        .map(|y| line(&t, y))
        .position(|l| l.contains("PID"))
        .unwrap();
    assert!(line(&t, header as u16).contains("cow KB"), "{screen}");
    let rows = app.rows();
    assert_eq!(rows.len(), 5);
    let mut savings = Vec::new();
    for (i, p) in rows.iter().enumerate() {
        let shares = rmapwatch_engine::design::shares(&outcomes, p.pid);
        let share = |n: &str| shares.iter().find(|s| s.name == n).unwrap().holding.bytes;
        let (today, cow) = (share("today"), share("cow_context"));
        let saving = i128::from(today) - i128::from(cow);
        savings.push(saving);
        let cells: Vec<String> = line(&t, header as u16 + 1 + i as u16)
            .trim_matches('│')
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        assert_eq!(cells[0], p.pid.to_string(), "{screen}");
        assert_eq!(cells[6], format!("{:.1}", cow as f64 / 1024.0), "{screen}");
        assert_eq!(
            cells[7],
            format!("{:.1}", saving as f64 / 1024.0),
            "{screen}"
        );
    }
    assert!(
        savings.windows(2).all(|w| w[0] >= w[1]),
        "sorted by the design's saving: {savings:?}"
    );
    assert_ne!(
        savings,
        vec![savings[0]; savings.len()],
        "the processes differ under this design"
    );

    app.update(Action::DesignNext);
    assert_eq!(app.design, "ideal");
    assert!(format!("{}", draw(&app, 80, 24).backend()).contains("ideal KB"));
    app.update(Action::DesignNext);
    assert_eq!(app.design, "lazy", "the selector cycles");
}

#[test]
fn the_chart_plots_the_selected_designs_history() {
    let mut app = app_with_frames();
    assert_eq!(app.history.len(), 5);
    let last = app.history.back().unwrap();
    let outcomes = app
        .frame
        .as_ref()
        .unwrap()
        .walk
        .as_ref()
        .unwrap()
        .designs
        .clone();
    for o in outcomes.iter().filter(|o| o.name != "today") {
        assert_eq!(last.kb(&o.name), Some(o.system.bytes as f64 / 1024.0));
    }
    assert_eq!(last.kb("today"), None, "today is the actual line");
    app.update(Action::DesignNext);
    let screen = format!("{}", draw(&app, 160, 48).backend());
    assert!(screen.contains("━ actual ━ cow_context"), "{screen}");
}

/// `frame(5)` with lock waits on 10 roots, timed forks and rmap walks.
fn time_frame() -> Frame {
    use rmapwatch_engine::time::{CallerWalks, ForkObjects, RootWaits};
    let mut f = frame(5, None);
    f.facts.time.lock_mode = "tracepoint".into();
    f.facts.time.fork_mode = "tracepoint".into();
    f.facts.time.rmap_mode = "kprobe".into();
    let t = f.time.as_mut().unwrap();
    t.rmap_walks.source = "kprobe rmap_walk_anon".into();
    t.rmap_walks.by_caller = vec![
        CallerWalks {
            caller: "try_to_unmap_one".into(),
            purpose: "reclaim (unmap)".into(),
            walks: 200,
            avcs: 600,
            lazy_avcs: 200,
            cow_context_visits: 400,
        },
        CallerWalks {
            caller: "folio_referenced_one".into(),
            purpose: "reclaim (aging)".into(),
            walks: 10,
            avcs: 30,
            lazy_avcs: 10,
            cow_context_visits: 20,
        },
    ];
    let l = &mut t.anon_vma_lock;
    l.source = "tracepoint lock:contention_begin/end".into();
    l.available = true;
    l.waits = 40;
    l.read_waits = 30;
    l.write_waits = 10;
    l.wait_ns = 12_000_000;
    l.by_root = (0..10)
        .map(|i| RootWaits {
            root: format!("{:#x}", 0xffff_8880_0001_0000_u64 + i * 0x100),
            family: (100..104).collect(),
            family_size: if i == 0 { 40 } else { 4 },
            waits: 10 - i,
            wait_ns: (10 - i) * 300_000,
            write_waits: 1,
            lazy_has_it: i != 2,
        })
        .collect();
    l.avoided[0].waits = 8;
    l.avoided[0].wait_ns = 2_400_000;
    l.avoided[1].waits = 40;
    l.avoided[1].wait_ns = 12_000_000;
    let k = &mut t.fork;
    k.forks = 3;
    k.syscall_ns = 450_000;
    k.objects = ForkObjects {
        anon_vma: 60,
        anon_vma_chain: 120,
    };
    k.objects_per_fork = Some(60.0);
    k.designs[0].objects_not_allocated = ForkObjects {
        anon_vma: 60,
        anon_vma_chain: 60,
    };
    k.designs[1].objects_not_allocated = k.objects;
    k.designs[1].added = [
        ("cow_context".to_owned(), 3),
        ("remap_entries_copied".to_owned(), 6),
    ]
    .into();
    f
}

#[test]
fn w_shows_the_time_panel_in_the_rates_place() {
    let mut app = app_with_frames();
    app.update(Action::Update(Update::Frame(Box::new(time_frame()))));
    let screen = format!("{}", draw(&app, 160, 48).backend());
    assert!(!screen.contains("time: anon_vma lock waits"), "{screen}");
    assert!(screen.contains("rates by call path"));
    let a = action_for(&key(KeyCode::Char('w')), &app).unwrap();
    assert_eq!(format!("{a:?}"), "ToggleTime");
    app.update(a);
    assert!(app.time);
    let screen = format!("{}", draw(&app, 160, 48).backend());
    for want in [
        "seen by lock tracepoint · fork tracepoint · rmap kprobe",
        "rmap walks 210 · try_to_unmap_one 200 (AVCs 600, lazy 200, cow 400) · \
         folio_referenced_one 10",
        "waits 40 (read 30, write 10) 12.00 ms mean 300.0 µs · lazy avoids 8 (2.40 ms)",
        "cow_context avoids 40 (12.00 ms; spinlocks not modelled)",
        "forks 3 mean 150.0 µs 60.0 objects/fork · lazy: -60 anon_vma -60 AVC",
        "cow_context: -60 anon_vma -120 AVC +3 cow_context +6 remap_entries_copied",
        "0xffff888000010000 10      3.00 ms    1      waits  100 101 102 103 (+36 more)",
        "0xffff888000010200 8       2.40 ms    1      avoids",
        "0xffff888000010700",
    ] {
        assert!(screen.contains(want), "{want:?} not in\n{screen}");
    }
    assert!(!screen.contains("0xffff888000010800"), "8 roots at most");
    assert!(!screen.contains("rates by call path"));
    insta::assert_snapshot!("time_160x48", draw(&app, 160, 48).backend());
    insta::assert_snapshot!("time_80x24", draw(&app, 80, 24).backend());
    // Every size down to the smallest draws (the panel shrinks first).
    for (w, h) in [(60, 16), (61, 17), (80, 20), (100, 30), (200, 60)] {
        let _ = draw(&app, w, h);
    }
    app.update(Action::ToggleTime);
    assert!(format!("{}", draw(&app, 160, 48).backend()).contains("rates by call path"));
}
