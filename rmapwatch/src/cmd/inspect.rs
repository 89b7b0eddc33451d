//! `rmapwatch inspect PID|COMM`: one process, from one walk of the running
//! system, from the last walk of a recording, or on a phone.
use std::io::Write as _;

use rmapwatch_engine::{design, inspect, model};

use crate::source::{InspectQuery, Inspected, Spec};

/// The command.
///
/// # Errors
/// The target cannot be inspected, loading fails, or the recording is
/// unusable.
pub fn inspect(spec: &Spec, model: design::Options, q: &InspectQuery<'_>) -> anyhow::Result<()> {
    let Inspected::Here {
        snap,
        pid,
        paths,
        facts,
    } = spec.inspect(q)?
    else {
        return Ok(());
    };
    let est = model::estimate(&snap, model.lazy);
    let (designs, outcomes) = design::of_snapshot(&snap, &facts, model);
    let view = inspect::DesignView {
        designs: &designs,
        outcomes: &outcomes,
        facts: &facts,
    };
    let i = inspect::of_snapshot(
        &snap,
        pid,
        &inspect::Seen {
            est: &est,
            paths: &paths,
            sizes: facts.sizes,
            designs: Some(view),
        },
    );
    let mut out = std::io::stdout().lock();
    if q.json {
        serde_json::to_writer(&mut out, &i)?;
        writeln!(out)?;
    } else {
        write!(out, "{}", i.to_text(q.all))?;
    }
    out.flush()?;
    Ok(())
}
