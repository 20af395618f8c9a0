//! Building templates: `wrenn template build`, and `wrenn up`'s first start.

use std::path::{Path, PathBuf};

use anyhow::Context;

/// `wrenn template build`.
#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// Template name (`minimal`, `python`): builds its guest image on this machine. With
    /// `--name N -f FILE` instead: builds template N from a recipe or Dockerfile through the
    /// API.
    #[arg(value_name = "TEMPLATE", required_unless_present = "file")]
    template: Option<String>,
    /// Where images live.
    #[arg(long, env = "WRENN_IMAGES", default_value = "/var/lib/wrenn/images")]
    images: PathBuf,
    /// The static envd binary to put into the image.
    #[arg(long, env = "WRENN_ENVD")]
    envd: Option<PathBuf>,
    /// vCPUs of the snapshot.
    #[arg(long, default_value_t = 1)]
    vcpus: u32,
    /// Memory of the snapshot, MiB.
    #[arg(long, default_value_t = 256)]
    memory_mib: u32,
    #[command(flatten)]
    pub api: crate::cli::BuildApiArgs,
}

/// Builds one template's image and snapshot in `images`, printing each step with `indent`.
async fn build_one(
    name: &str,
    images: &Path,
    envd: &Path,
    (vcpus, memory_mib): (u32, u32),
    indent: &str,
) -> anyhow::Result<wrenn_agent::images::Built> {
    let (accel, _) = wrenn_vmm::accel::detect();
    let req = wrenn_agent::images::BuildRequest {
        template: name.to_string(),
        images_dir: images.to_path_buf(),
        envd: envd.canonicalize().context("the envd binary")?,
        vcpus,
        memory_mib,
        accel,
        qemu: wrenn_vmm::qemu::default_qemu(),
        slot: None,
    };
    wrenn_agent::images::build(&req, |p| println!("{indent}{}", p.line))
        .await
        .with_context(|| format!("building template {name}"))
}

/// `wrenn template build`.
pub async fn build(args: BuildArgs) -> anyhow::Result<()> {
    if args.api.file.is_some() {
        std::process::exit(crate::cli::template_build(args.api).await);
    }
    let (accel, why) = wrenn_vmm::accel::detect();
    println!("accelerator: {} ({why})", accel.as_str());
    let name = args
        .template
        .as_deref()
        .context("name the template to build")?;
    let envd = args.envd.as_deref().context(
        "building a guest image needs the static envd binary: pass --envd or set WRENN_ENVD",
    )?;
    let built = build_one(name, &args.images, envd, (args.vcpus, args.memory_mib), "").await?;
    println!(
        "template {name}: image {:.1} s, snapshot {:.1} s, at {}",
        built.image_time.as_secs_f64(),
        built.snapshot_time.as_secs_f64(),
        built.snapshot.dir().display()
    );
    Ok(())
}

/// Builds the templates that have no ready snapshot yet (`wrenn up`'s first start), with
/// progress.
pub async fn ensure(
    templates: &[String],
    images: &Path,
    envd: Option<&Path>,
) -> anyhow::Result<()> {
    let (accel, why) = wrenn_vmm::accel::detect();
    for name in templates {
        let snap = wrenn_vmm::snapshot::Snapshot {
            template_dir: images.join(name),
        };
        if snap.spec().is_some() {
            continue;
        }
        let envd = envd.context(
            "building the guest images needs the static envd binary: pass --envd or set \
             WRENN_ENVD (`make up` does)",
        )?;
        println!("building template {name} ({}: {why})", accel.as_str());
        build_one(name, images, envd, (1, 256), "  ").await?;
        // Built with umask 022 (the guest's files keep their modes); the output is ours.
        crate::private::make_private(&images.join(name))
            .with_context(|| format!("making template {name} private"))?;
    }
    Ok(())
}
