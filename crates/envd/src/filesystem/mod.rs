//! `filesystem.Filesystem`: entries, directory listing, changes, and watching.

pub mod entry;
pub mod service;
pub mod watch;
