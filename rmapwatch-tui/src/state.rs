//! TUI state: plain data. Keys become [`Action`]s, [`App::update`] mutates,
//! rendering (`ui.rs`) only reads. No I/O, no aya.
use std::{collections::VecDeque, time::Duration};

use ratatui::crossterm::event::{Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use rmapwatch_common::site;

pub use rmapwatch_engine::view::Frame;
use rmapwatch_engine::{design::Outcome, rows::ProcRow};

/// What the collector can tell the UI.
#[derive(Debug)]
pub enum Update {
    /// New data.
    Frame(Box<Frame>),
    /// The collector stopped (signal or error); the UI exits.
    Stopped(String),
    /// The source ended by itself (the end of a recording): the last
    /// frame stays until the user quits.
    Ended(String),
}

/// Which screen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    /// Summary, rates and process table.
    Main,
    /// One process (Enter).
    Detail(u32),
}

/// Process table columns, in display order; the sort key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Column {
    /// tgid.
    Pid,
    /// Name.
    Comm,
    /// VMAs (snapshot).
    Vmas,
    /// Live anon_vma objects.
    AnonVma,
    /// Live AVC objects.
    Avc,
    /// Live KB.
    Kb,
    /// KB the selected design would hold (at the walk).
    DesignKb,
    /// KB the selected design would save against today (at the walk).
    Saving,
}

impl Column {
    /// All columns in display order.
    pub const ALL: [Self; 8] = [
        Self::Pid,
        Self::Comm,
        Self::Vmas,
        Self::AnonVma,
        Self::Avc,
        Self::Kb,
        Self::DesignKb,
        Self::Saving,
    ];

    /// Header text, with `design` the selected design.
    #[must_use]
    pub fn title(self, design: &str) -> String {
        match self {
            Self::Pid => "PID".into(),
            Self::Comm => "COMM".into(),
            Self::Vmas => "VMAs".into(),
            Self::AnonVma => "anon_vma".into(),
            Self::Avc => "AVC".into(),
            Self::Kb => "KB".into(),
            Self::DesignKb => format!("{} KB", short_name(design)),
            Self::Saving => "saving KB".into(),
        }
    }

    fn index(self) -> usize {
        Self::ALL.iter().position(|&c| c == self).unwrap_or(0)
    }
}

/// What a key (or the collector) asks for.
#[derive(Debug)]
pub enum Action {
    /// Leave.
    Quit,
    /// Selection up by n.
    Up(usize),
    /// Selection down by n.
    Down(usize),
    /// First row.
    Home,
    /// Last row.
    End,
    /// Open the selected process.
    Enter,
    /// Back to the main view / cancel the filter.
    Back,
    /// Next sort column.
    SortNext,
    /// Previous sort column.
    SortPrev,
    /// Reverse the sort.
    SortReverse,
    /// Next design in the process table, the chart and the header.
    DesignNext,
    /// The time panel (anon_vma lock waits, fork cost per design).
    ToggleTime,
    /// Freeze the display.
    TogglePause,
    /// Help overlay.
    ToggleHelp,
    /// Start typing a filter.
    FilterStart,
    /// A character of the filter.
    FilterChar(char),
    /// Delete a character of the filter.
    FilterBackspace,
    /// Stop typing the filter (keep it).
    FilterDone,
    /// New data.
    Update(Update),
}

/// Allocation and free rates per object and site.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Rates {
    /// Allocations per second, `[object][site]`.
    pub alloc: [[f64; site::COUNT]; 2],
    /// Frees per second, `[object][site]`.
    pub free: [[f64; site::COUNT]; 2],
    /// Decoded events per second.
    pub events: f64,
}

#[derive(Clone, Copy, Debug, Default)]
struct Counters {
    t: f64,
    alloc: [[u64; site::COUNT]; 2],
    free: [[u64; site::COUNT]; 2],
    events: u64,
}

impl Counters {
    fn of(f: &Frame) -> Self {
        Self {
            t: f.uptime_s,
            events: f.events,
            alloc: [f.totals[0].alloc_by_site, f.totals[1].alloc_by_site],
            free: [f.totals[0].free_by_site, f.totals[1].free_by_site],
        }
    }
}

/// Points kept for the history chart.
pub const HISTORY: usize = 300;

/// The design shown until the user picks another: ANON_VMA_LAZY, the
/// patch rmapwatch was first written to measure.
pub const FIRST_DESIGN: &str = "lazy";

/// The designs the selector cycles through before a walk names them.
const DEFAULT_DESIGNS: [&str; 3] = ["lazy", "cow_context", "ideal"];

/// A design's name cut for a column header of 9 characters
/// (`cow_context`: `cow`).
#[must_use]
pub fn short_name(design: &str) -> &str {
    design.split('_').next().unwrap_or(design)
}

/// One walk in the history chart.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    /// Seconds since attach at the end of the walk.
    pub t: f64,
    /// KB the kernel held (today).
    pub actual_kb: f64,
    /// KB each other design would hold, by name.
    pub designs: Vec<(String, f64)>,
}

impl Point {
    /// KB `design` would hold at this walk.
    #[must_use]
    pub fn kb(&self, design: &str) -> Option<f64> {
        self.designs
            .iter()
            .find(|(n, _)| n == design)
            .map(|&(_, kb)| kb)
    }
}

/// A process under the selected design, at the walk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DesignCell {
    /// Bytes the design would hold for it.
    pub bytes: u64,
    /// Today's bytes minus the design's (what it would save).
    pub saving: i128,
}

/// The whole UI state.
#[derive(Debug)]
pub struct App {
    /// Latest data.
    pub frame: Option<Box<Frame>>,
    /// Rates between the last two frames.
    pub rates: Rates,
    last: Option<Counters>,
    /// Actual KB and every design's, at the walk: one point per walk.
    pub history: VecDeque<Point>,
    /// The design the process table's design columns and the chart show
    /// (`lazy`, `cow_context`, `ideal`).
    pub design: String,
    /// Current screen.
    pub view: View,
    /// Help overlay shown.
    pub help: bool,
    /// The time panel shown (`w`): anon_vma lock waits per root family,
    /// fork cost per design.
    pub time: bool,
    /// Sort column.
    pub sort: Column,
    /// Sort descending.
    pub descending: bool,
    /// Filter text (pid or comm substring).
    pub filter: String,
    /// Typing the filter.
    pub editing_filter: bool,
    /// Selected row in the (filtered, sorted) table.
    pub selected: usize,
    /// First VMA row shown in the detail view.
    pub detail_scroll: usize,
    /// Display frozen.
    pub paused: bool,
    /// Refresh interval.
    pub delay: Duration,
    /// Leave the loop.
    pub quit: bool,
    /// Why the collector stopped, if it did.
    pub stopped: Option<String>,
    /// Where logs go.
    pub log_path: Option<String>,
    /// What is watched, when it is not this machine live: "replay of
    /// run.rmw", "remote: ssh host ...".
    pub source: Option<String>,
}

impl App {
    /// A new state.
    #[must_use]
    pub fn new(delay: Duration, log_path: Option<String>) -> Self {
        Self {
            frame: None,
            rates: Rates::default(),
            last: None,
            history: VecDeque::with_capacity(HISTORY),
            design: FIRST_DESIGN.to_owned(),
            view: View::Main,
            help: false,
            time: false,
            sort: Column::Saving,
            descending: true,
            filter: String::new(),
            editing_filter: false,
            selected: 0,
            detail_scroll: 0,
            paused: false,
            delay,
            quit: false,
            stopped: None,
            log_path,
            source: None,
        }
    }

    /// The process whose detail the collector should compute.
    #[must_use]
    pub fn detail_pid(&self) -> Option<u32> {
        match self.view {
            View::Detail(pid) => Some(pid),
            View::Main => None,
        }
    }

    /// Every design's outcome at the latest walk (empty before it).
    #[must_use]
    pub fn outcomes(&self) -> &[Outcome] {
        self.frame
            .as_ref()
            .and_then(|f| f.walk.as_ref())
            .map_or(&[], |w| w.designs.as_slice())
    }

    /// The designs the selector cycles through: the walk's, but today.
    #[must_use]
    pub fn design_names(&self) -> Vec<&str> {
        let names: Vec<&str> = self
            .outcomes()
            .iter()
            .map(|o| o.name.as_str())
            .filter(|&n| n != "today")
            .collect();
        if names.is_empty() {
            DEFAULT_DESIGNS.to_vec()
        } else {
            names
        }
    }

    /// The selected design's bytes and saving for `pid` at the latest walk
    /// (0 for a process the walk did not see; `None` without a walk or
    /// when the walk has no such design).
    #[must_use]
    pub fn design_cell(&self, pid: u32) -> Option<DesignCell> {
        let outcomes = self.outcomes();
        let bytes = |o: &Outcome| o.processes.get(&pid).map_or(0, |h| h.bytes);
        let today = outcomes.iter().find(|o| o.name == "today")?;
        let design = outcomes.iter().find(|o| o.name == self.design)?;
        let (today, bytes) = (bytes(today), bytes(design));
        Some(DesignCell {
            bytes,
            saving: i128::from(today) - i128::from(bytes),
        })
    }

    /// Processes shown: filtered, then sorted.
    #[must_use]
    pub fn rows(&self) -> Vec<&ProcRow> {
        let Some(f) = &self.frame else {
            return Vec::new();
        };
        let sizes = f.facts.sizes;
        let needle = self.filter.to_lowercase();
        let mut rows: Vec<&ProcRow> = f
            .processes
            .iter()
            .filter(|p| !p.exited)
            .filter(|p| {
                needle.is_empty()
                    || p.pid.to_string().starts_with(&needle)
                    || p.comm.to_lowercase().contains(&needle)
            })
            .collect();
        let key = |p: &ProcRow| -> i128 {
            match self.sort {
                Column::Pid => i128::from(p.pid),
                Column::Comm => 0,
                Column::Vmas => i128::from(p.vmas.unwrap_or(0)),
                Column::AnonVma => i128::from(p.live.anon_vma),
                Column::Avc => i128::from(p.live.avc),
                Column::Kb => i128::from(p.live_bytes(sizes)),
                Column::DesignKb => self.design_cell(p.pid).map_or(0, |c| i128::from(c.bytes)),
                Column::Saving => self.design_cell(p.pid).map_or(0, |c| c.saving),
            }
        };
        if self.sort == Column::Comm {
            rows.sort_by(|a, b| {
                let o = a.comm.cmp(&b.comm);
                let o = if self.descending { o.reverse() } else { o };
                o.then(a.pid.cmp(&b.pid))
            });
            return rows;
        }
        // Each row's key once (a design's is two map lookups), then sorted.
        let mut keyed: Vec<(i128, &ProcRow)> = rows.into_iter().map(|p| (key(p), p)).collect();
        keyed.sort_unstable_by(|(ka, a), (kb, b)| {
            let o = ka.cmp(kb);
            let o = if self.descending { o.reverse() } else { o };
            o.then(a.pid.cmp(&b.pid))
        });
        keyed.into_iter().map(|(_, p)| p).collect()
    }

    /// Applies an action.
    pub fn update(&mut self, action: Action) {
        let n = self.rows().len();
        match action {
            Action::Quit => self.quit = true,
            Action::Up(_) | Action::Down(_) | Action::Home | Action::End
                if matches!(self.view, View::Detail(_)) =>
            {
                let vmas = self
                    .frame
                    .as_ref()
                    .and_then(|f| f.detail.as_ref())
                    .map_or(0, |d| {
                        d.vmas.iter().filter(|v| v.anon_vma.is_some()).count()
                    });
                self.detail_scroll = match action {
                    Action::Up(k) => self.detail_scroll.saturating_sub(k),
                    Action::Down(k) => (self.detail_scroll + k).min(vmas.saturating_sub(1)),
                    Action::Home => 0,
                    _ => vmas.saturating_sub(1),
                };
            }
            Action::Up(k) => self.selected = self.selected.saturating_sub(k),
            Action::Down(k) => self.selected = (self.selected + k).min(n.saturating_sub(1)),
            Action::Home => self.selected = 0,
            Action::End => self.selected = n.saturating_sub(1),
            Action::Enter => {
                if self.view == View::Main
                    && let Some(p) = self.rows().get(self.selected)
                {
                    self.view = View::Detail(p.pid);
                    self.detail_scroll = 0;
                }
            }
            Action::Back => {
                if self.help {
                    self.help = false;
                } else if self.editing_filter {
                    self.editing_filter = false;
                    self.filter.clear();
                } else {
                    self.view = View::Main;
                }
            }
            Action::SortNext | Action::SortPrev => {
                let i = self.sort.index();
                let len = Column::ALL.len();
                let next = if matches!(action, Action::SortNext) {
                    i + 1
                } else {
                    i + len - 1
                };
                self.sort = Column::ALL[next % len];
                // Text sorts ascending, numbers biggest first.
                self.descending = self.sort != Column::Comm;
            }
            Action::SortReverse => self.descending = !self.descending,
            Action::DesignNext => {
                let names = self.design_names();
                let next = names
                    .iter()
                    .position(|&n| n == self.design)
                    .map_or(0, |i| (i + 1) % names.len());
                if let Some(n) = names.get(next) {
                    self.design = (*n).to_owned();
                }
            }
            Action::ToggleTime => self.time = !self.time,
            Action::TogglePause => self.paused = !self.paused,
            Action::ToggleHelp => self.help = !self.help,
            Action::FilterStart => {
                self.editing_filter = true;
            }
            Action::FilterChar(c) => {
                self.filter.push(c);
                self.selected = 0;
            }
            Action::FilterBackspace => {
                self.filter.pop();
                self.selected = 0;
            }
            Action::FilterDone => self.editing_filter = false,
            Action::Update(Update::Ended(why)) => {
                self.stopped = Some(why);
            }
            Action::Update(Update::Stopped(why)) => {
                self.stopped = Some(why);
                self.quit = true;
            }
            Action::Update(Update::Frame(frame)) => {
                if !self.paused {
                    self.ingest(frame);
                }
            }
        }
        let n = self.rows().len();
        if self.selected >= n {
            self.selected = n.saturating_sub(1);
        }
    }

    fn ingest(&mut self, frame: Box<Frame>) {
        let now = Counters::of(&frame);
        if let Some(last) = self.last {
            let dt = now.t - last.t;
            if dt > 0.0 {
                let per_s = |a: u64, b: u64| a.saturating_sub(b) as f64 / dt;
                for o in 0..2 {
                    for s in 0..site::COUNT {
                        self.rates.alloc[o][s] = per_s(now.alloc[o][s], last.alloc[o][s]);
                        self.rates.free[o][s] = per_s(now.free[o][s], last.free[o][s]);
                    }
                }
                self.rates.events = per_s(now.events, last.events);
            }
        }
        self.last = Some(now);
        // One point per walk, at the time the walk ended: actual and every
        // design on the same basis (the walk).
        let walks = self
            .frame
            .as_ref()
            .and_then(|f| f.walk.as_ref())
            .map(|w| w.walks);
        if let Some(w) = &frame.walk
            && walks != Some(w.walks)
        {
            let sizes = frame.facts.sizes;
            let kb = |o| sizes.bytes(o) as f64 / 1024.0;
            if self.history.len() == HISTORY {
                self.history.pop_front();
            }
            self.history.push_back(Point {
                t: frame.uptime_s - w.age_s,
                actual_kb: kb(w.actual),
                designs: w
                    .designs
                    .iter()
                    .filter(|o| o.name != "today")
                    .map(|o| (o.name.clone(), o.system.bytes as f64 / 1024.0))
                    .collect(),
            });
        }
        self.frame = Some(frame);
    }
}

/// Maps a terminal event to an action (`None`: ignored).
#[must_use]
pub fn action_for(event: &Event, app: &App) -> Option<Action> {
    let Event::Key(KeyEvent {
        code,
        modifiers,
        kind,
        ..
    }) = event
    else {
        return None;
    };
    if *kind == KeyEventKind::Release {
        return None;
    }
    if modifiers.contains(KeyModifiers::CONTROL) && *code == KeyCode::Char('c') {
        return Some(Action::Quit);
    }
    if app.editing_filter {
        return Some(match code {
            KeyCode::Esc => Action::Back,
            KeyCode::Enter => Action::FilterDone,
            KeyCode::Backspace => Action::FilterBackspace,
            KeyCode::Char(c) => Action::FilterChar(*c),
            _ => return None,
        });
    }
    Some(match code {
        KeyCode::Char('q') => Action::Quit,
        KeyCode::Up | KeyCode::Char('k') => Action::Up(1),
        KeyCode::Down | KeyCode::Char('j') => Action::Down(1),
        KeyCode::PageUp => Action::Up(10),
        KeyCode::PageDown => Action::Down(10),
        KeyCode::Home | KeyCode::Char('g') => Action::Home,
        KeyCode::End | KeyCode::Char('G') => Action::End,
        KeyCode::Enter => Action::Enter,
        KeyCode::Esc | KeyCode::Backspace => Action::Back,
        KeyCode::Char('s' | '>') => Action::SortNext,
        KeyCode::Char('<') => Action::SortPrev,
        KeyCode::Char('r') => Action::SortReverse,
        KeyCode::Char('d') => Action::DesignNext,
        KeyCode::Char('w') => Action::ToggleTime,
        KeyCode::Char('p' | ' ') => Action::TogglePause,
        KeyCode::Char('?' | 'h') => Action::ToggleHelp,
        KeyCode::Char('/') => Action::FilterStart,
        _ => return None,
    })
}
