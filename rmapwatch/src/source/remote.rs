//! A remote agent as a source: a command (`ssh host sudo rmapwatch agent`,
//! or `adb shell` running the agent on a phone) whose stdout is the stream,
//! whose stdin takes requests and whose stderr lines are its notices.
use std::{
    io::BufReader,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::Context as _;
use rmapwatch_engine::{
    input::Input,
    stream::{Kind, Reader, StreamError, Writer},
};
use rmapwatch_parse::device::agent_note;

use super::running::Source;
use crate::{error::BadInput, link::Link, log, version};

/// Runs `cmd` (through `sh -c`) as a remote agent: its stdout is the
/// stream, its stdin takes requests, its stderr is passed on as notices.
///
/// # Errors
/// See [`agent`].
pub fn remote(cmd: &str) -> anyhow::Result<Source> {
    let mut c = Command::new("sh");
    c.args(["-c", cmd]);
    let link = Link::new(format!("remote: {cmd}"), std::collections::BTreeMap::new());
    agent(c, &format!("the remote agent ({cmd})"), "remote: ", link)
}

/// The agent's command ended before its stream began (its stderr said
/// why): the host exits with the agent's code where it is one of ours.
#[derive(Debug, thiserror::Error)]
#[error("{name} exited with {status} before its stream began")]
pub struct AgentExited {
    /// Which agent.
    pub name: String,
    /// How it ended.
    pub status: String,
    /// Its exit code.
    pub code: Option<i32>,
}

/// The stream of a running agent ended without its end record: the link
/// dropped (or the agent was killed).
#[derive(Debug, thiserror::Error)]
#[error("{name}: the link dropped ({why}); the agent stops by itself when it notices")]
pub struct LinkDropped {
    /// Which agent.
    pub name: String,
    /// What the stream reader saw, and how the command ended.
    pub why: String,
}

/// Runs `cmd` as an agent: its stdout is the stream, its stdin takes
/// requests, its stderr lines become notices (`prefix` first: the live
/// view owns the screen). The link's bytes and lag are counted in `link`.
///
/// # Errors
/// The command cannot be started; it exits before its stream begins
/// ([`AgentExited`]); its stdout is not a rmapwatch stream ([`BadInput`]).
pub fn agent(
    mut cmd: Command,
    name: &str,
    prefix: &'static str,
    link: std::sync::Arc<Link>,
) -> anyhow::Result<Source> {
    use std::os::unix::process::CommandExt as _;
    let mut child = cmd
        // Its own process group: a Ctrl-C at the terminal is ours to turn
        // into a Stop request (and a final walk), not the ssh's or adb's.
        .process_group(0)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {name}"))?;
    let stdout = child.stdout.take().context("the agent's stdout")?;
    let stdin = child.stdin.take().context("the agent's stdin")?;
    if let Some(err) = child.stderr.take() {
        let prefix = prefix.to_owned();
        let _ = std::thread::Builder::new()
            .name("agent stderr".into())
            .spawn(move || {
                use std::io::BufRead as _;
                for line in BufReader::new(err).lines() {
                    let Ok(line) = line else { break };
                    log::info(&format!("{prefix}{}", agent_note(&line)));
                }
            });
    }
    let name = name.to_owned();
    // Killed if the run is stopped before the agent's stream begins.
    let starting = super::start::Starting::new(child.id());
    let reader = match Reader::open(BufReader::new(link.counting(stdout)), Kind::Inputs) {
        Ok(r) => r,
        Err(source) => {
            let status = child.wait().ok();
            // Give its stderr a moment to be said before our error.
            std::thread::sleep(Duration::from_millis(50));
            if let Some(st) = status.filter(|s| !s.success())
                && matches!(
                    source,
                    StreamError::Empty | StreamError::Io { .. } | StreamError::Truncated(_)
                )
            {
                return Err(AgentExited {
                    name,
                    status: st.to_string(),
                    code: st.code(),
                }
                .into());
            }
            let _ = child.kill();
            return Err(BadInput {
                path: format!("{name}, which exited {status:?}"),
                source,
            }
            .into());
        }
    };
    drop(starting);
    let facts = reader.header().facts.clone().unwrap_or_default();
    let ticks = link.clone();
    let mut src = Source::spawn("remote", prefix, facts, move |out, mut requests| {
        let mut w = Writer::new(stdin, Kind::Requests, &version::tool(), None)?;
        // Requests go out from a thread of their own: the stream is read
        // here without waiting on them.
        let sender = std::thread::spawn(move || {
            while let Some(r) = requests.blocking_recv() {
                if w.request(&r).and_then(|()| w.flush()).is_err() {
                    break;
                }
            }
            // Dropping stdin tells the agent to stop.
        });
        let mut reader = reader;
        let mut ended = false;
        let result = loop {
            match reader.next_input() {
                Ok(Some(i)) => {
                    if let Input::Tick { t } = i {
                        ticks.tick(t);
                    }
                    ended |= matches!(i, Input::End { .. });
                    if !out(i) {
                        break Ok(());
                    }
                }
                Ok(None) => break Ok(()),
                Err(source) => break Err(source),
            }
        };
        let result = match result {
            Ok(()) => Ok(()),
            Err(
                source @ (StreamError::Truncated(_)
                | StreamError::NoEnd(_)
                | StreamError::Io { .. }),
            ) if !ended => {
                // Not a damaged stream: a link that went away mid-run.
                let status = match child.try_wait() {
                    Ok(Some(s)) => format!("{name} exited with {s}"),
                    _ => "its command still runs".to_owned(),
                };
                Err(anyhow::Error::from(LinkDropped {
                    name: name.clone(),
                    why: format!("{source}; {status}"),
                }))
            }
            Err(source) => Err(anyhow::Error::from(BadInput {
                path: name.clone(),
                source,
            })),
        };
        let _ = child.kill();
        let _ = child.wait();
        // The sender ends when the driver drops its end of the requests
        // (or at its next write into the dead agent): not waited for.
        drop(sender);
        result
    })?;
    src.link = Some(link);
    Ok(src)
}
