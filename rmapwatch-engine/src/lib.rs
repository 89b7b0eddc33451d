//! rmapwatch's engine: everything between what a source reports and what a
//! sink shows, with no knowledge of where the data comes from. Pure: no aya,
//! tokio, ratatui or Linux-only API (the crate boundary proves it; the test
//! command checks `cargo tree`).
//!
//! The layers: `input` (the one ordered message type every source yields),
//! `event` (typed kernel events), `snapshot` (walk records to VMAs) ->
//! `account` (actual objects by ownership), `model` (the ANON_VMA_LAZY
//! shadow model), `walk` (one pass: model, owners, per-process counts) ->
//! `time` (lock waits, fork work, rmap walks) ->
//! `engine` (the state machine fed by inputs) -> `report`, `inspect`,
//! `view`, `perfetto` (what sinks show); `stream` (the recording and link format).
pub mod account;
pub mod addrmap;
pub mod design;
pub mod engine;
pub mod event;
pub mod facts;
pub mod hash;
pub mod hooks;
pub mod input;
pub mod inspect;
pub mod model;
pub mod perfetto;
pub mod report;
pub mod rows;
pub mod snapshot;
pub mod stream;
pub mod text;
pub mod time;
pub mod view;
pub mod walk;
