//! The subcommands: each is a source run into its sinks (or, for
//! `inspect` and `agent`, one walk and one stream).
pub mod agent;
pub mod inspect;
pub mod report;
pub mod serve;
pub mod view;
