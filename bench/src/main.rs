//! `wrenn-bench`: Wrenn's benchmarks. Every figure is printed next to a baseline measured in
//! the same run, because the machines they run on are noisy: read the ratios, not the
//! absolute numbers, and never turn them into pass/fail assertions.
//!
//! Subcommands: `envd` (the guest agent against plain loopback baselines), `vm` (microVMs
//! through `wrenn-vmm` against raw QEMU), `agent` (the host agent's gRPC against envd
//! reached directly), `server` (the REST API against the agent reached directly) and
//! `scheduler` (the control plane's placement in a simulated cluster, against least loaded
//! and random placement) and `cluster` (3 hosts against 1, template transfer against `cp`,
//! and the scheduler simulation), `oci` (layer unpacking against GNU `tar -x`), `builds`
//! (capsules of built templates against `minimal`'s).
//! `soak` is not a benchmark but the long reliability runs of `make soak` (no baselines: its
//! figures are held or not).

mod agent;
mod builds;
mod cluster;
mod envd;
mod fork;
mod http1;
mod oci;
mod procs;
mod report;
mod rest;
mod scheduler;
mod server;
mod soak;
mod static_server;
mod vm;

use clap::{Parser, Subcommand};

/// Wrenn's benchmarks: each figure next to a baseline measured in the same run.
#[derive(Debug, Parser)]
#[command(name = "wrenn-bench", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Benchmark envd: exec round trip, file throughput, idle RSS, start-to-ready.
    Envd(envd::Args),
    /// Benchmark the VM layer: create from a snapshot, pause/resume, template build, idle PSS.
    Vm(vm::Args),
    /// The VMM's density settings (TCG translation cache, transparent huge pages): idle PSS and the
    /// speed of a code-heavy command per setting, against the first setting.
    VmTuning(vm::tuning::Args),
    /// Benchmark the host agent: exec round trip and streamed files through its gRPC against
    /// envd directly, concurrent creates against one alone.
    Agent(agent::Args),
    /// Benchmark live fork: N children against N creates, the source's pause against a plain
    /// pause, each child's PSS against a fresh capsule's.
    Fork(fork::Args),
    /// Benchmark a snapshot template travelling between two host agents (export piped into
    /// import over gRPC) against `cp` of the same files.
    Transfer(agent::host_transfer::Args),
    /// Benchmark the control plane: REST calls of a real `wrenn up` against its agent reached
    /// directly, and a burst of concurrent creates.
    Server(server::Args),
    /// Simulate the control plane's scheduler: 1,000 hosts, 100,000 capsules, against least
    /// loaded and random placement (in process, no VMs).
    Scheduler(scheduler::Args),
    /// Benchmark a cluster: creates on 3 registered hosts against 1 (real `wrenn up` and
    /// `wrenn agent`s), template transfer against `cp`, and the scheduler simulation.
    Cluster(cluster::Args),
    /// Unpack OCI layers (plain, gzip, zstd) with `wrenn-oci` against GNU `tar -x` of the same.
    Oci(oci::Args),
    /// Benchmark built templates: create → first exec from a built snapshot template and a
    /// built base template against `minimal`, and the two builds against each other.
    Builds(builds::Args),
    /// The long reliability runs (`make soak`): load held on exec streams and terminals, then
    /// churn at capacity with VMMs killed; counts leaks and writes docs/reliability.md.
    Soak(soak::Args),
    /// The baseline loopback static file server (started by the benches themselves).
    #[command(hide = true)]
    StaticServer(static_server::Args),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Envd(args) => envd::run(args),
        Command::Vm(args) => vm::run(args),
        Command::VmTuning(args) => vm::tuning::run(args),
        Command::Agent(args) => agent::run(args),
        Command::Fork(args) => fork::run(args),
        Command::Transfer(args) => agent::host_transfer::run(args),
        Command::Server(args) => server::run(args),
        Command::Scheduler(args) => scheduler::run(args),
        Command::Cluster(args) => cluster::run(args),
        Command::Oci(args) => oci::run(args),
        Command::Builds(args) => builds::run(args),
        Command::Soak(args) => soak::run(args),
        Command::StaticServer(args) => static_server::run(args),
    }
}
