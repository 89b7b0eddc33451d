//! Who wrote a stream: the name streams record (`Facts::tool`, the
//! requests' header).

/// This tool and its version: `rmapwatch 0.1.0`.
#[must_use]
pub fn tool() -> String {
    format!("rmapwatch {}", env!("CARGO_PKG_VERSION"))
}
