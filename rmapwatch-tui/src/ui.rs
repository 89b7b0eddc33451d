//! Rendering: reads [`App`], draws, does no I/O.
use ratatui::{
    buffer::Buffer,
    layout::{Constraint, Layout, Rect},
    style::{Color, Modifier, Style, Stylize},
    symbols::Marker,
    text::{Line, Span},
    widgets::{
        Axis, Block, Borders, Cell, Chart, Clear, Dataset, GraphType, Paragraph, Row, Table, Widget,
    },
};
use rmapwatch_common::site;
use std::fmt::Write as _;

use rmapwatch_engine::{
    design::Outcome,
    hooks::HookMode,
    model::change_pct,
    report::{duration, family_text},
    view::Frame,
};

use super::state::{App, Column, View};

/// Smallest terminal the UI draws into.
pub const MIN_SIZE: (u16, u16) = (60, 16);

fn kb(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / 1024.0)
}

fn pct(p: Option<f64>) -> String {
    p.map_or_else(|| "-".into(), |c| format!("{c:+.1}%"))
}

fn uptime(s: f64) -> String {
    let s = s as u64;
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

impl Widget for &App {
    fn render(self, area: Rect, buf: &mut Buffer) {
        if area.width < MIN_SIZE.0 || area.height < MIN_SIZE.1 {
            let msg = format!(
                "terminal too small ({}x{}); rmapwatch needs at least {}x{} (q quits)",
                area.width, area.height, MIN_SIZE.0, MIN_SIZE.1
            );
            Paragraph::new(msg)
                .wrap(ratatui::widgets::Wrap { trim: true })
                .render(area, buf);
            return;
        }
        let [header, body, footer] = Layout::vertical([
            Constraint::Length(2),
            Constraint::Min(0),
            Constraint::Length(1),
        ])
        .areas(area);
        self.render_header(header, buf);
        match (&self.frame, self.view) {
            (None, _) => Paragraph::new("waiting for the first snapshot...").render(body, buf),
            (Some(_), View::Main) => self.render_main(body, buf),
            (Some(_), View::Detail(pid)) => self.render_detail(pid, body, buf),
        }
        self.render_footer(footer, buf);
        if self.help {
            render_help(area, buf);
        }
    }
}

impl App {
    fn render_header(&self, area: Rect, buf: &mut Buffer) {
        let Some(f) = &self.frame else {
            Paragraph::new(Line::from(vec![
                "rmapwatch".bold(),
                "  attaching...".into(),
            ]))
            .render(area, buf);
            return;
        };
        let mut l1 = vec![
            "rmapwatch".bold().cyan(),
            format!("  {} {}", f.facts.kernel.release, f.facts.kernel.arch).into(),
            format!("  up {}", uptime(f.uptime_s)).into(),
            format!("  refresh {:.1}s", self.delay.as_secs_f64()).into(),
        ];
        // Before what may be long (a replayed file's name): always seen.
        if self.paused {
            l1.push("  PAUSED".bold().yellow());
        }
        if let Some(source) = &self.source {
            l1.push(format!("  {source}").yellow());
        }
        if let Some(l) = &f.link {
            // A remote agent's link: its throughput and queueing lag.
            l1.push(
                format!(
                    "  link {:.1} KB/s lag {:.0} ms",
                    l.recent_bytes_per_s / 1024.0,
                    l.lag_ms
                )
                .yellow(),
            );
        }
        if let Some(c) = &f.cost {
            // The tool's own CPU cost, from the kernel's bpf_stats.
            let ns = c
                .ns_per_event
                .map_or_else(|| "-".to_owned(), |n| format!("{n:.0}"));
            l1.push(format!("  cost {ns} ns/ev {:.2}% CPU", c.cpu_pct).into());
            // Our slab programs against the empty program's floor that
            // rmw-bench measured on this machine, when it did.
            if let Some(r) = c.floor.as_ref().and_then(|f| f.ratio) {
                l1.push(format!(" slab {r:.2}x floor").into());
            }
            if c.recursion_misses > 0 {
                l1.push(format!(" {} recursion misses", c.recursion_misses).red());
            }
        }
        // Last: a narrow screen may cut it; the designs' panel marks the
        // selected design too (a remote's link, before it, must be seen).
        l1.push(format!("  design {}", self.design).green());
        let dropped = match f.dropped {
            Some(0) => Span::raw("dropped 0"),
            Some(n) => Span::styled(
                format!("dropped {n}"),
                Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
            ),
            None => Span::styled("dropped ?", Style::new().fg(Color::Yellow)),
        };
        let mut l2 = vec![
            format!("events/s {:.0}  ", self.rates.events).into(),
            dropped,
        ];
        if let Some(p) = f.ring_peak_pct {
            // How close the ring came to dropping: past half, say so.
            let s = format!("  ring peak {p:.0}%");
            l2.push(if p >= 50.0 { s.yellow() } else { s.dim() });
        }
        if f.resync.degraded {
            l2.push(" DEGRADED until the next snapshot".red().bold());
        } else if f.resync.resyncs > 0 {
            l2.push(format!(" (re-seeded {}x)", f.resync.resyncs).yellow());
        }
        l2.push("  probes ".into());
        let mut hooks: Vec<_> = f.facts.hooks.iter().collect();
        hooks.sort_by(|a, b| a.name.cmp(&b.name));
        for h in hooks {
            let short = match h.mode {
                HookMode::Fentry => "fentry",
                HookMode::Kprobe => "kprobe",
                HookMode::Tracepoint => "tp",
                HookMode::Unavailable => "-",
            };
            let label = h
                .name
                .trim_start_matches("__")
                .trim_start_matches("folio_add_")
                .trim_start_matches("anon_vma_")
                .trim_end_matches("_anon_vmas")
                .trim_end_matches("_anon_vma");
            l2.push(format!("{label}:{short} ").dim());
        }
        let slab = if f.facts.slab.path.is_empty() {
            "raw"
        } else {
            &f.facts.slab.path
        };
        l2.push(format!("slab:{slab} ").dim());
        if let Some(w) = &f.walk {
            l2.push(format!(" snapshot {:.1}ms", w.walk_ms).dim());
        }
        if let Some(w) = &f.inlined_warning {
            l2.push(format!("  WARNING: {w}").red().bold());
        }
        Paragraph::new(vec![Line::from(l1), Line::from(l2)]).render(area, buf);
    }

    fn render_footer(&self, area: Rect, buf: &mut Buffer) {
        let line = if self.editing_filter {
            Line::from(vec![
                "filter: ".bold(),
                self.filter.clone().into(),
                "_  (Enter keeps, Esc clears)".dim(),
            ])
        } else {
            let mut v = vec![
                "q".bold(),
                " quit ".into(),
                "?".bold(),
                " help ".into(),
                "/".bold(),
                " filter ".into(),
                "s".bold(),
                format!(" sort:{} ", self.sort.title(&self.design)).into(),
                "d".bold(),
                " design ".into(),
                "w".bold(),
                " time ".into(),
                "Enter".bold(),
                " detail ".into(),
                "p".bold(),
                " pause".into(),
            ];
            if !self.filter.is_empty() {
                v.push(format!("  [filter: {}]", self.filter).yellow());
            }
            if let Some(why) = &self.stopped {
                v.push(format!("  {why}").bold().yellow());
            }
            if let Some(log) = &self.log_path {
                v.push(format!("  log: {log}").dim());
            }
            Line::from(v)
        };
        Paragraph::new(line).render(area, buf);
    }

    fn render_main(&self, area: Rect, buf: &mut Buffer) {
        let Some(f) = &self.frame else { return };
        // The designs below the seed table: a title line and one line per
        // design but today (nothing before the first walk).
        let designs = f.walk.as_ref().map_or(0, |w| {
            w.designs.iter().filter(|o| o.name != "today").count() + 1
        });
        let designs = u16::try_from(designs).unwrap_or(u16::MAX);
        // The time panel (w) in the rates' place, as high as its rows want
        // and the process table leaves (its borders, header and one row:
        // the selection stays in sight).
        let (time, rates) = if self.time {
            let room = area.height.saturating_sub(6 + designs + 4);
            (time_height(f).min(room), 0)
        } else {
            (0, 3)
        };
        let [summary, designs, time, rates, table] = Layout::vertical([
            Constraint::Length(6),
            Constraint::Length(designs),
            Constraint::Length(time),
            Constraint::Length(rates),
            Constraint::Min(3),
        ])
        .areas(area);
        if summary.width >= 110 {
            let [left, right] =
                Layout::horizontal([Constraint::Length(72), Constraint::Min(20)]).areas(summary);
            render_seed_table(f, left, buf);
            self.render_chart(right, buf);
        } else {
            render_seed_table(f, summary, buf);
        }
        render_designs(
            self.outcomes(),
            &self.design,
            &f.facts.pagemap,
            designs,
            buf,
        );
        if self.time {
            render_time(f, time, buf);
        } else {
            self.render_rates(rates, buf);
        }
        self.render_processes(table, buf);
    }

    /// Actual and the selected design at each walk.
    fn render_chart(&self, area: Rect, buf: &mut Buffer) {
        let actual: Vec<(f64, f64)> = self.history.iter().map(|p| (p.t, p.actual_kb)).collect();
        let design: Vec<(f64, f64)> = self
            .history
            .iter()
            .filter_map(|p| Some((p.t, p.kb(&self.design)?)))
            .collect();
        let (t0, t1) = match (self.history.front(), self.history.back()) {
            (Some(a), Some(b)) => (a.t, b.t.max(a.t + 1.0)),
            _ => (0.0, 1.0),
        };
        // A design may hold more than today (LAZY's vm_area_struct growth).
        let ymax = actual
            .iter()
            .chain(&design)
            .map(|&(_, kb)| kb)
            .fold(1.0, f64::max)
            * 1.1;
        let chart = Chart::new(vec![
            Dataset::default()
                .name("actual")
                .marker(Marker::Braille)
                .graph_type(GraphType::Line)
                .style(Style::new().fg(Color::Red))
                .data(&actual),
            Dataset::default()
                .name(self.design.clone())
                .marker(Marker::Braille)
                .graph_type(GraphType::Line)
                .style(Style::new().fg(Color::Green))
                .data(&design),
        ])
        // The legend and the units in the title: the chart is four rows
        // high, too few for ratatui's legend box and axis titles.
        .block(
            Block::default()
                .borders(Borders::ALL)
                .title(Line::from(vec![
                    " KB at each walk: ".into(),
                    "━ actual".red(),
                    " ".into(),
                    format!("━ {}", self.design).green(),
                    " (x: uptime) ".into(),
                ])),
        )
        .legend_position(None)
        .x_axis(
            Axis::default()
                .bounds([t0, t1])
                .labels([Line::from(uptime(t0)), Line::from(uptime(t1))]),
        )
        .y_axis(
            Axis::default()
                .bounds([0.0, ymax])
                .labels([Line::from("0 KB"), Line::from(format!("{ymax:.0} KB"))]),
        );
        chart.render(area, buf);
    }

    fn render_rates(&self, area: Rect, buf: &mut Buffer) {
        let names = ["prepare", "clone", "fork", "unlink", "put"];
        let line = |o: usize, label: &'static str| {
            let mut v: Vec<Span> = vec![format!("{label:<9}").bold()];
            v.push("alloc/s ".dim());
            for s in [site::PREPARE, site::CLONE, site::FORK] {
                v.push(
                    format!(
                        "{} {:<4.0} ",
                        names[s as usize], self.rates.alloc[o][s as usize]
                    )
                    .into(),
                );
            }
            v.push("free/s ".dim());
            for s in [site::UNLINK, site::PUT] {
                v.push(
                    format!(
                        "{} {:<4.0} ",
                        names[s as usize], self.rates.free[o][s as usize]
                    )
                    .into(),
                );
            }
            Line::from(v)
        };
        Paragraph::new(vec![line(0, "anon_vma"), line(1, "AVC")])
            .block(
                Block::default()
                    .borders(Borders::TOP)
                    .title(" rates by call path "),
            )
            .render(area, buf);
    }

    fn render_processes(&self, area: Rect, buf: &mut Buffer) {
        let rows = self.rows();
        let sizes = self
            .frame
            .as_ref()
            .map(|f| f.facts.sizes)
            .unwrap_or_default();
        let inner_h = area.height.saturating_sub(3) as usize; // borders + header
        let offset = if self.selected >= inner_h {
            self.selected + 1 - inner_h
        } else {
            0
        };
        let header = Row::new(Column::ALL.iter().map(|c| {
            let mut t = c.title(&self.design);
            if *c == self.sort {
                t.push(if self.descending { '▼' } else { '▲' });
            }
            Cell::from(t)
        }))
        .style(Style::new().add_modifier(Modifier::BOLD));
        let body = rows
            .iter()
            .enumerate()
            .skip(offset)
            .take(inner_h)
            .map(|(i, p)| {
                // The selected design's numbers, for the rows shown only.
                let design = self.design_cell(p.pid);
                let saving = design.map_or(0, |d| d.saving);
                let cells = vec![
                    Cell::from(p.pid.to_string()),
                    Cell::from(p.comm.clone()),
                    Cell::from(p.vmas.map_or_else(|| "-".into(), |v| v.to_string())),
                    Cell::from(p.live.anon_vma.to_string()),
                    Cell::from(p.live.avc.to_string()),
                    Cell::from(kb(p.live_bytes(sizes))),
                    Cell::from(design.map_or_else(|| "-".into(), |d| kb(d.bytes))),
                    Cell::from(format!("{:.1}", saving as f64 / 1024.0)).style(if saving > 0 {
                        Style::new().fg(Color::Green)
                    } else {
                        Style::new()
                    }),
                ];
                let row = Row::new(cells);
                if i == self.selected {
                    row.style(Style::new().add_modifier(Modifier::REVERSED))
                } else {
                    row
                }
            });
        let widths = [
            Constraint::Length(8),
            Constraint::Length(16),
            Constraint::Length(6),
            Constraint::Length(9),
            Constraint::Length(7),
            Constraint::Length(9),
            Constraint::Length(9),
            Constraint::Min(10),
        ];
        let folded = self.frame.as_ref().map_or(0, |f| f.exited.processes);
        let title = if folded > 0 {
            format!(" processes ({}; {folded} exited, folded) ", rows.len())
        } else {
            format!(" processes ({}) ", rows.len())
        };
        Table::new(body, widths)
            .header(header)
            .block(Block::default().borders(Borders::ALL).title(title))
            .render(area, buf);
    }

    fn render_detail(&self, pid: u32, area: Rect, buf: &mut Buffer) {
        let detail = self
            .frame
            .as_ref()
            .and_then(|f| f.detail.as_ref())
            .filter(|d| d.pid == pid);
        let Some(d) = detail else {
            Paragraph::new(format!(
                "pid {pid}: waiting for the next snapshot... (Esc: back)"
            ))
            .render(area, buf);
            return;
        };
        let [top, vmas, fam] = Layout::vertical([
            Constraint::Length(5),
            Constraint::Min(3),
            Constraint::Length(3),
        ])
        .areas(area);
        let row = |name: &str, a: u64, l: u64, c: Option<f64>| {
            Row::new(vec![
                Cell::from(name.to_owned()),
                Cell::from(kb(a)),
                Cell::from(kb(l)),
                Cell::from(pct(c)),
            ])
        };
        Table::new(
            vec![
                row(
                    "anon_vma",
                    d.live.anon_vma.bytes,
                    d.lazy.anon_vma.bytes,
                    d.lazy.anon_vma.change_pct,
                ),
                row(
                    "anon_vma_chain",
                    d.live.anon_vma_chain.bytes,
                    d.lazy.anon_vma_chain.bytes,
                    d.lazy.anon_vma_chain.change_pct,
                ),
            ],
            [
                Constraint::Length(16),
                Constraint::Length(12),
                Constraint::Length(12),
                Constraint::Length(9),
            ],
        )
        .header(Row::new(["Object", "Actual (KB)", "Lazy (KB)", "Change"]).bold())
        .block(Block::default().borders(Borders::ALL).title(format!(
            " pid {} ({}): {} VMAs ",
            d.pid,
            d.comm,
            d.vmas.len()
        )))
        .render(top, buf);
        let with_av: Vec<_> = d.vmas.iter().filter(|v| v.anon_vma.is_some()).collect();
        let h = vmas.height.saturating_sub(3) as usize;
        let offset = self.detail_scroll.min(with_av.len().saturating_sub(h));
        let body = with_av.iter().skip(offset).take(h).map(|v| {
            Row::new(vec![
                Cell::from(v.start.trim_start_matches("0x").to_owned()),
                Cell::from(v.end.trim_start_matches("0x").to_owned()),
                Cell::from(v.perms.clone()),
                Cell::from(v.avc.to_string()),
                Cell::from(v.lazy_avc.to_string()),
                Cell::from(v.lazy_state.clone()),
                Cell::from(v.file.clone().unwrap_or_default()),
            ])
        });
        Table::new(
            body,
            [
                Constraint::Length(13),
                Constraint::Length(13),
                Constraint::Length(5),
                Constraint::Length(5),
                Constraint::Length(5),
                Constraint::Length(5),
                Constraint::Min(10),
            ],
        )
        .header(Row::new(["start", "end", "perm", "AVCs", "lazy", "state", "file"]).bold())
        .block(Block::default().borders(Borders::ALL).title(format!(
            " VMAs with an anon_vma ({}; U/L/P/R: unfaulted, lazy, tree-parent, regular) ",
            with_av.len()
        )))
        .render(vmas, buf);
        let family: Vec<String> = d
            .family
            .iter()
            .take(12)
            .map(|f| format!("{} {} ({})", f.pid, f.comm, f.shared_anon_vmas))
            .collect();
        Paragraph::new(if family.is_empty() {
            "none".to_owned()
        } else {
            family.join(", ")
        })
        .block(
            Block::default()
                .borders(Borders::ALL)
                .title(" anon_vma family (shared anon_vmas) "),
        )
        .render(fam, buf);
    }
}

/// Every design but today at the latest walk, one line each: KB, change in
/// bytes against today, objects by type; the selected one marked.
fn render_designs(
    outcomes: &[Outcome],
    selected: &str,
    pagemap: &str,
    area: Rect,
    buf: &mut Buffer,
) {
    if area.height == 0 {
        return;
    }
    let today = outcomes
        .iter()
        .find(|o| o.name == "today")
        .map_or(0, |o| o.system.bytes);
    let rows = outcomes.iter().filter(|o| o.name != "today").map(|o| {
        // The types it holds (all of them, at 0, when it holds none): the
        // line fits 80 columns; `report` lists every type.
        let held = o.system.objects.values().any(|&n| n > 0);
        let objects: Vec<String> = o
            .system
            .objects
            .iter()
            .filter(|&(_, &n)| n > 0 || !held)
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        let mut objects = objects.join(", ");
        // The ideal's reading, within the walk's pagemap budget.
        if let Some(c) = o.coverage {
            let _ = write!(
                objects,
                " · pagemap {}/{} VMAs {:.0} ms{}",
                c.read,
                c.needed,
                c.ms,
                if pagemap.is_empty() {
                    String::new()
                } else {
                    format!(" (budget {pagemap})")
                }
            );
        }
        let mark = if o.name == selected { "▶ " } else { "  " };
        let row = Row::new(vec![
            Cell::from(format!("{mark}{}", o.name)),
            Cell::from(format!("{} KB", kb(o.system.bytes))),
            Cell::from(pct(o.change_vs_today.map(|c| c * 100.0)))
                .style(Style::new().fg(Color::Green)),
            Cell::from(objects),
        ]);
        if o.name == selected {
            row.style(Style::new().add_modifier(Modifier::BOLD))
        } else {
            row
        }
    });
    Table::new(
        rows,
        [
            Constraint::Length(13),
            Constraint::Length(10),
            Constraint::Length(8),
            Constraint::Min(10),
        ],
    )
    .block(Block::default().borders(Borders::TOP).title(format!(
        " designs at the walk: KB, change vs today's {} KB, objects (d selects) ",
        kb(today)
    )))
    .render(area, buf);
}

/// The time panel's rmap walks: in all, then the callers walking most,
/// with the AVCs today's walks visit and LAZY's and COW context's.
fn rmap_line(r: &rmapwatch_engine::time::RmapReport) -> Line<'static> {
    if r.by_caller.is_empty() {
        let why = if r.source.starts_with("fentry") || r.source.starts_with("kprobe") {
            "none seen".to_owned()
        } else {
            format!("not measured ({})", r.source)
        };
        return Line::from(vec!["rmap walks ".bold(), why.dim()]);
    }
    let walks: u64 = r.by_caller.iter().map(|c| c.walks).sum();
    let mut v: Vec<Span> = vec!["rmap walks ".bold(), walks.to_string().into()];
    for c in r.by_caller.iter().take(3) {
        v.push(
            format!(
                " · {} {} (AVCs {}, lazy {}, cow {})",
                c.caller, c.walks, c.avcs, c.lazy_avcs, c.cow_context_visits
            )
            .into(),
        );
    }
    Line::from(v)
}

/// Rows of the time panel's root table at most.
const TIME_ROOTS: usize = 8;

/// Lines the time panel wants: its title, four lines, the roots' header
/// and rows.
fn time_height(f: &Frame) -> u16 {
    let roots = f
        .time
        .as_ref()
        .filter(|t| t.anon_vma_lock.available)
        .map_or(0, |t| t.anon_vma_lock.by_root.len().min(TIME_ROOTS));
    5 + if roots > 0 { 1 + roots as u16 } else { 0 }
}

/// The time panel: how each source is seen, anon_vma lock waits and what
/// each design would not have waited, fork cost per design, then the roots
/// waited on most with their families.
fn render_time(f: &Frame, area: Rect, buf: &mut Buffer) {
    if area.height == 0 {
        return;
    }
    let block = Block::default()
        .borders(Borders::TOP)
        .title(" time: anon_vma lock waits, fork cost per design (w hides) ");
    let inner = block.inner(area);
    block.render(area, buf);
    let Some(t) = &f.time else {
        Paragraph::new("no time figures (an older recording)").render(inner, buf);
        return;
    };
    let mode = |m: &str| if m.is_empty() { "-" } else { m }.to_owned();
    let h = &f.facts.time;
    let mut lines = vec![Line::from(vec![
        "seen by ".dim(),
        format!(
            "lock {} · fork {} · rmap {}",
            mode(&h.lock_mode),
            mode(&h.fork_mode),
            mode(&h.rmap_mode)
        )
        .into(),
    ])];
    let l = &t.anon_vma_lock;
    if l.available {
        let mut v: Vec<Span> = vec![
            "waits ".bold(),
            format!(
                "{} (read {}, write {}) {} mean {}",
                l.waits,
                l.read_waits,
                l.write_waits,
                duration(l.wait_ns),
                duration(l.wait_ns.checked_div(l.waits).unwrap_or(0))
            )
            .into(),
        ];
        let held: Vec<String> = ["fork", "reader", "writer", "?"]
            .iter()
            .zip(&l.by_holder)
            .filter(|(_, h)| h.waits > 0)
            .map(|(name, h)| format!("{name} {}", h.waits))
            .collect();
        if !held.is_empty() {
            v.push(format!(" · held by {}", held.join(", ")).into());
        }
        for a in &l.avoided {
            v.push(
                format!(
                    " · {} avoids {} ({}{})",
                    a.design,
                    a.waits,
                    duration(a.wait_ns),
                    if a.design == "cow_context" {
                        "; spinlocks not modelled"
                    } else {
                        ""
                    }
                )
                .green(),
            );
        }
        lines.push(Line::from(v));
    } else {
        lines.push(Line::from(vec![
            "waits ".bold(),
            format!("not measured ({})", t.anon_vma_lock.source).dim(),
        ]));
    }
    let k = &t.fork;
    if k.forks == 0 {
        lines.push(Line::from(vec!["forks ".bold(), "none timed".dim()]));
    } else {
        let mut v: Vec<Span> = vec![
            "forks ".bold(),
            format!(
                "{} mean {} {} objects/fork",
                k.forks,
                duration(k.syscall_ns / k.forks),
                k.objects_per_fork
                    .map_or_else(|| "-".to_owned(), |o| format!("{o:.1}"))
            )
            .into(),
        ];
        for d in &k.designs {
            let o = d.objects_not_allocated;
            let mut x = format!(
                " · {}: -{} anon_vma -{} AVC",
                d.design, o.anon_vma, o.anon_vma_chain
            );
            for (name, n) in &d.added {
                let _ = write!(x, " +{n} {name}");
            }
            v.push(x.green());
        }
        lines.push(Line::from(v));
    }
    lines.push(rmap_line(&t.rmap_walks));
    let [top, roots] = Layout::vertical([Constraint::Length(4), Constraint::Min(0)]).areas(inner);
    Paragraph::new(lines).render(top, buf);
    if roots.height < 2 || !l.available {
        return;
    }
    let body = l
        .by_root
        .iter()
        .take(TIME_ROOTS.min(usize::from(roots.height - 1)))
        .map(|r| {
            Row::new(vec![
                Cell::from(r.root.clone()),
                Cell::from(r.waits.to_string()),
                Cell::from(duration(r.wait_ns)),
                Cell::from(r.write_waits.to_string()),
                Cell::from(if r.lazy_has_it { "waits" } else { "avoids" }),
                Cell::from(family_text(r)),
            ])
        });
    Table::new(
        body,
        [
            Constraint::Length(18),
            Constraint::Length(7),
            Constraint::Length(10),
            Constraint::Length(6),
            Constraint::Length(6),
            Constraint::Min(10),
        ],
    )
    .header(
        Row::new([
            "root anon_vma",
            "waits",
            "wait",
            "writes",
            "lazy",
            "family (pids)",
        ])
        .bold(),
    )
    .render(roots, buf);
}

/// Actual and lazy on one basis, the latest walk (what the model saw);
/// the events' live counts beside it.
fn render_seed_table(f: &Frame, area: Rect, buf: &mut Buffer) {
    let Some(w) = &f.walk else {
        let msg = f.facts.snapshot_error.as_ref().map_or_else(
            || "waiting for the first walk...".to_owned(),
            |e| format!("no walk: live and lazy figures unavailable ({e})"),
        );
        Paragraph::new(msg)
            .block(Block::default().borders(Borders::ALL))
            .render(area, buf);
        return;
    };
    let sizes = f.facts.sizes;
    let row = |name: &str, obj: u64, bytes: u64, lobj: u64, lbytes: u64, now: u64| {
        Row::new(vec![
            Cell::from(name.to_owned()),
            Cell::from(obj.to_string()),
            Cell::from(kb(bytes)),
            Cell::from(lobj.to_string()),
            Cell::from(kb(lbytes)),
            Cell::from(pct(change_pct(bytes, lbytes))).style(Style::new().fg(Color::Green)),
            Cell::from(now.to_string()).style(Style::new().add_modifier(Modifier::DIM)),
        ])
    };
    let (a, l) = (w.actual, w.lazy);
    let ([a_av, a_avc], [l_av, l_avc]) = (sizes.per_type(a), sizes.per_type(l));
    Table::new(
        vec![
            row(
                "anon_vma",
                a.anon_vma,
                a_av,
                l.anon_vma,
                l_av,
                f.live.anon_vma,
            ),
            row("anon_vma_chain", a.avc, a_avc, l.avc, l_avc, f.live.avc),
            row(
                "total",
                a.anon_vma + a.avc,
                sizes.bytes(a),
                l.anon_vma + l.avc,
                sizes.bytes(l),
                f.live.anon_vma + f.live.avc,
            ),
        ],
        [
            Constraint::Length(15),
            Constraint::Length(8),
            Constraint::Length(9),
            Constraint::Length(7),
            Constraint::Length(8),
            Constraint::Length(8),
            Constraint::Length(9),
        ],
    )
    .header(
        Row::new([
            "Object",
            "Actual #",
            "Actual KB",
            "Lazy #",
            "Lazy KB",
            "Change",
            "Live now",
        ])
        .bold(),
    )
    .block(Block::default().borders(Borders::ALL).title(format!(
        " actual vs ANON_VMA_LAZY at the walk {:.1} s ago ",
        w.age_s
    )))
    .render(area, buf);
}

fn render_help(area: Rect, buf: &mut Buffer) {
    let lines = [
        "↑/↓ j/k      move            PgUp/PgDn  page",
        "Home/End g/G first / last    Enter      process detail",
        "Esc          back            /          filter by pid or name",
        "s or >       next sort col   <          previous sort column",
        "r            reverse sort    p / space  pause the display",
        "d            next design     ?          this help",
        "w            time: anon_vma lock waits, fork cost per design",
        "q, Ctrl-C    quit",
        "",
        "Lazy = what ANON_VMA_LAZY would hold (docs/lazy-model.md).",
        "d picks the design of the process table's design KB and",
        "saving columns and of the chart: lazy, cow_context, ideal.",
        "Actual, lazy, designs, change, saving: at the latest walk;",
        "live now and the table's anon_vma/AVC/KB: events, now.",
    ];
    let w = 64.min(area.width);
    let h = (lines.len() as u16 + 2).min(area.height);
    let r = Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    );
    Clear.render(r, buf);
    Paragraph::new(lines.iter().map(|l| Line::from(*l)).collect::<Vec<_>>())
        .block(
            Block::default()
                .borders(Borders::ALL)
                .title(" help (Esc or ? closes) "),
        )
        .render(r, buf);
}
