//! rmapwatch: what anon_vma and anon_vma_chain cost on this machine, live.
//!
//! The layers, as the folders show them: `source` (where inputs come
//! from: the live kernel, a recording, a remote agent, a phone) -> `run`
//! (the run helper: runtime, signals, the engine, the driver) -> `sink`
//! (where results go: reports, a recording, a Perfetto trace, the
//! exporter, the dashboard) and `cmd` (each subcommand: a source run into
//! its sinks). `main` reads the flags once into a [`source::Spec`] and
//! dispatches; `exit` maps every error to its exit code.

use std::{path::PathBuf, process::ExitCode};

mod cli;
mod cmd;
mod error;
mod exit;
mod link;
mod log;
mod metrics;
mod run;
mod sink;
mod source;
mod version;

use cli::{Cli, Command, SlabPathArg};
use error::UsageError;
use rmapwatch_engine::{design, hooks::SlabPath, model, snapshot::PagemapRead};
use source::{InspectQuery, Pace, Spec, adb::AdbArgs, live::LiveArgs};

fn main() -> ExitCode {
    source::live::tune_process();
    match run(cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of our output went away (`| head`): nothing to say.
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            log::error(&format!("{e:#}"));
            ExitCode::from(exit::code(&e))
        }
    }
}

/// Removes its files when dropped (`--cleanup`): the agent's own binary
/// on a device, whatever way the agent ends.
struct Cleanup(Vec<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// How the live kernel is attached, from the flags (here, or by an agent
/// on a device), for `command`.
fn live_args(g: &cli::GlobalArgs, command: Option<&Command>) -> LiveArgs {
    // Commands that walk every refresh get a pagemap budget; those that
    // walk for a result read it whole.
    let pagemap_default = match command {
        Some(
            Command::Report(_) | Command::Record(_) | Command::Inspect(_) | Command::Export(_),
        ) => PagemapRead::Whole,
        None | Some(Command::Replay(_) | Command::Serve(_) | Command::Agent(_)) => {
            PagemapRead::Within(cli::PAGEMAP_BUDGET)
        }
    };
    LiveArgs {
        btf: g
            .btf
            .clone()
            .unwrap_or_else(|| PathBuf::from("/sys/kernel/btf/vmlinux")),
        probe_mode: g.probe_mode.into(),
        slab_path: match g.slab_path {
            SlabPathArg::Auto => SlabPath::Auto,
            SlabPathArg::Raw => SlabPath::Raw,
            SlabPathArg::Perf => SlabPath::Perf,
        },
        ring_bytes: g.ring_buffer_kb.map(|kb| kb * 1024),
        watch_nesting: g.watch_nesting,
        cleanup: !g.cleanup.is_empty(),
        pagemap: if g.no_pagemap {
            PagemapRead::Off
        } else {
            g.pagemap_budget.unwrap_or(pagemap_default)
        },
    }
}

/// The run's source, decided once from the flags: a recording for the
/// commands that read one, else a phone (`--adb`), a remote agent
/// (`--remote`), or the live kernel (always, for `agent`: it is what runs
/// on the other side).
fn source_spec(cli: &Cli) -> anyhow::Result<Spec> {
    let g = &cli.global;
    let recording = match &cli.command {
        Some(Command::Replay(a)) => Some((
            a.file.clone(),
            if a.fast {
                Pace::Fast
            } else {
                Pace::Recorded(a.speed)
            },
        )),
        Some(Command::Report(cli::ReportArgs { from: Some(f), .. }))
        | Some(Command::Inspect(cli::InspectArgs { from: Some(f), .. }))
        | Some(Command::Export(cli::ExportArgs { from: f, .. })) => Some((f.clone(), Pace::Fast)),
        _ => None,
    };
    let agent = matches!(cli.command, Some(Command::Agent(_)));
    let remote = if g.adb.is_some() {
        Some("--adb is for the live view, report, record, inspect and serve")
    } else if g.remote.is_some() {
        Some("--remote is for the live view, report, record and serve")
    } else {
        None
    };
    if let Some(why) = remote.filter(|_| recording.is_some() || agent) {
        anyhow::bail!(UsageError(format!(
            "{why}: not with a recording, nor for an agent"
        )));
    }
    let live = live_args(g, cli.command.as_ref());
    Ok(match (recording, &g.adb, &g.remote) {
        (Some((path, pace)), _, _) => Spec::Recording { path, pace },
        (None, Some(serial), _) => Spec::Adb {
            adb: AdbArgs {
                serial: Some(serial.clone()).filter(|s| !s.is_empty()),
                agent: g.agent.clone(),
                keep_agent: g.keep_agent,
                btf: g.btf.clone(),
            },
            live,
        },
        (None, None, Some(cmd)) => Spec::Remote { cmd: cmd.clone() },
        (None, None, None) => Spec::Live(live),
    })
}

fn run(cli: Cli) -> anyhow::Result<()> {
    // Before anything else: a setuid rmapwatch would attach programs for
    // whoever runs it.
    #[cfg(target_os = "linux")]
    rmapwatch_live::caps::refuse_setuid()?;
    let _cleanup = Cleanup(cli.global.cleanup.clone());
    let spec = source_spec(&cli)?;
    let live = live_args(&cli.global, cli.command.as_ref());
    let g = cli.global;
    let mut model = design::Options {
        lazy: model::Options {
            tree_parent_keeps_chain: !g.tree_parent_drops_chain,
        },
        ..design::Options::default()
    };
    for o in &g.design_option {
        model.set(o).map_err(UsageError)?;
    }
    match cli.command {
        None | Some(Command::Replay(_)) => cmd::view::view(&spec, model, g.delay, &g.log_file),
        Some(Command::Report(a)) => cmd::report::report(
            &spec,
            model,
            &cmd::report::Opts {
                duration: a.duration,
                interval: a.interval,
                json: a.json,
                top: a.top,
            },
        ),
        Some(Command::Record(a)) => cmd::report::record(
            &spec,
            model,
            &cmd::report::RecordOpts {
                path: a.output,
                duration: a.duration,
                interval: a.interval,
                force: a.force,
                json: a.json,
                top: a.top,
                perfetto: a.perfetto,
            },
        ),
        Some(Command::Export(a)) => cmd::report::export(
            &spec,
            model,
            &cmd::report::ExportOpts {
                perfetto: a.perfetto,
                top: a.top,
                force: a.force,
            },
        ),
        Some(Command::Inspect(a)) => cmd::inspect::inspect(
            &spec,
            model,
            &InspectQuery {
                target: &a.target,
                json: a.json,
                all: a.all,
            },
        ),
        Some(Command::Agent(a)) => cmd::agent::agent(&live, a.interval),
        Some(Command::Serve(a)) => cmd::serve::serve(
            &spec,
            model,
            &cmd::serve::Opts {
                listen: a.listen,
                top: a.top,
                interval: a.interval,
                retry: a.retry,
                duration: a.duration,
            },
        ),
    }
}
