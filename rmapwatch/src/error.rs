//! The errors the commands raise themselves (the sources and the engine
//! have theirs); `exit` maps every one of them to its exit code.
use rmapwatch_engine::stream::StreamError;

/// An output file that exists (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0} exists: pass --force to overwrite it")]
pub struct OutputExists(pub String);

/// A combination of flags that makes no sense (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// An input file that cannot be read as a stream (exit code 5).
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct BadInput {
    /// The file.
    pub path: String,
    /// Why.
    #[source]
    pub source: StreamError,
}
