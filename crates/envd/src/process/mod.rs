//! `process.Process`: starting processes (pipes or PTY), attaching to them, input, signals.

pub mod handle;
pub mod pty;
pub mod reaper;
pub mod service;
pub mod spawn;
pub mod table;
