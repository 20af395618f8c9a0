//! `/v1/hosts`: the host agents this control plane places capsules on. Who may see and change
//! them ([`access`]: platform admins every host, a BYOC team its own), making and managing
//! them ([`manage`]), their identity ([`identity`]: registration, host tokens, refresh,
//! certificates from the control plane's CA, see [`settings`]), heartbeats ([`heartbeat`]) and
//! the monitor that marks silent hosts `unreachable` ([`monitor`]).

pub mod access;
pub mod heartbeat;
pub mod identity;
pub mod maintain;
pub mod manage;
pub mod monitor;
pub mod settings;

pub use monitor::{spawn_host_monitor, sweep};
pub use settings::{control_plane_pki, HostIdentity, HostSettings};
