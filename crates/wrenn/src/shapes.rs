//! The machine shapes a host offers (`wrenn up` and `wrenn agent`).

use anyhow::Context;
use wrenn_agent::templates::ShapePolicy;

/// Each new vCPU/memory pair costs the host a VM boot and a kept snapshot: only these pairs
/// (besides each template's own shape) are offered, and their snapshots are evicted least
/// recently used beyond a budget.
#[derive(clap::Args, Debug, Clone)]
pub struct ShapeArgs {
    /// vCPU counts capsules may ask for (comma-separated).
    #[arg(
        long = "shape-vcpus",
        env = "WRENN_SHAPE_VCPUS",
        default_value = "1,2,4,8"
    )]
    vcpus: String,
    /// Memory sizes capsules may ask for, MiB (comma-separated).
    #[arg(
        long = "shape-memory",
        env = "WRENN_SHAPE_MEMORY",
        default_value = "256,512,1024,2048,4096,8192"
    )]
    memory: String,
    /// Most disk the snapshots of shapes take (MiB); unused ones beyond it are evicted.
    #[arg(
        long = "shape-budget-mib",
        env = "WRENN_SHAPE_BUDGET_MIB",
        default_value_t = 4096
    )]
    budget_mib: u64,
}

impl ShapeArgs {
    pub fn policy(&self) -> anyhow::Result<ShapePolicy> {
        ShapePolicy::parse(&self.vcpus, &self.memory, self.budget_mib)
            .context("--shape-vcpus / --shape-memory")
    }
}
