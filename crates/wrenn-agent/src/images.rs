//! Building templates: the image recipe (`images/` in the repository, embedded in the binary so
//! an installed `wrenn` needs no checkout) and then the template's ready snapshot.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use tokio::io::{AsyncBufReadExt, BufReader};
use wrenn_types::TemplateName;
use wrenn_vmm::{
    accel::Accel,
    snapshot::{self, Snapshot, TemplateBoot},
    Net,
};

use crate::{
    error::{AgentError, Result},
    netslot::{self, Slot},
};

/// The recipe files, embedded: (relative path, contents, executable).
const RECIPE: &[(&str, &str, bool)] = &[
    ("build.sh", include_str!("../../../images/build.sh"), true),
    (
        "init/initramfs-init",
        include_str!("../../../images/init/initramfs-init"),
        true,
    ),
    (
        "init/wrenn-init",
        include_str!("../../../images/init/wrenn-init"),
        true,
    ),
    (
        "templates/minimal.packages",
        include_str!("../../../images/templates/minimal.packages"),
        false,
    ),
    (
        "templates/python.packages",
        include_str!("../../../images/templates/python.packages"),
        false,
    ),
];

/// Templates this build of Wrenn knows how to make.
pub fn known_templates() -> Vec<&'static str> {
    RECIPE
        .iter()
        .filter_map(|(p, _, _)| p.strip_prefix("templates/")?.strip_suffix(".packages"))
        .collect()
}

/// One line of build progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub template: String,
    pub line: String,
}

/// What to build and with what.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    pub template: String,
    pub images_dir: PathBuf,
    /// The static envd binary that goes into the image.
    pub envd: PathBuf,
    pub vcpus: u32,
    pub memory_mib: u32,
    pub accel: Accel,
    pub qemu: PathBuf,
    /// The network slot the snapshot boots in (free, and released after); `None`: the highest
    /// slot free on this machine (above every agent's range).
    pub slot: Option<u32>,
}

/// How a build went.
#[derive(Debug, Clone)]
pub struct Built {
    pub snapshot: Snapshot,
    pub image_time: Duration,
    pub snapshot_time: Duration,
    /// False when the image was up to date and the snapshot already existed.
    pub rebuilt: bool,
}

fn write_recipe(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for (rel, text, exec) in RECIPE {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| AgentError::io("writing the recipe", e))?;
        }
        std::fs::write(&path, text).map_err(|e| AgentError::io("writing the recipe", e))?;
        if *exec {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| AgentError::io("writing the recipe", e))?;
        }
    }
    Ok(())
}

/// Builds the template's image (skipped when unchanged) and its snapshot (made when missing),
/// reporting progress lines to `progress`.
pub async fn build(req: &BuildRequest, mut progress: impl FnMut(Progress)) -> Result<Built> {
    if TemplateName::parse(&req.template).is_err() {
        return Err(AgentError::BadTemplateName(req.template.clone()));
    }
    if !known_templates().contains(&req.template.as_str()) {
        return Err(AgentError::UnknownTemplate(req.template.clone()));
    }
    let mut say = |line: String| {
        progress(Progress {
            template: req.template.clone(),
            line,
        })
    };
    let recipe = tempfile_dir()?;
    write_recipe(recipe.path())?;
    let started = Instant::now();
    // With umask 022 whatever the caller's (Wrenn runs with 077): the guest's files keep their
    // normal modes. The caller makes the output private.
    let mut child = tokio::process::Command::new("/bin/sh")
        .arg("-c")
        .arg("umask 022 && exec \"$0\" \"$@\"")
        .arg(recipe.path().join("build.sh"))
        .arg(&req.template)
        .arg(&req.images_dir)
        .arg(&req.envd)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| AgentError::io("starting images/build.sh", e))?;
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let errors = tokio::spawn(async move {
        let mut text = String::new();
        if let Some(err) = stderr {
            let mut lines = BufReader::new(err).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                text.push_str(&l);
                text.push('\n');
            }
        }
        text
    });
    let mut up_to_date = false;
    if let Some(out) = stdout {
        let mut lines = BufReader::new(out).lines();
        while let Ok(Some(l)) = lines.next_line().await {
            up_to_date |= l.contains("is up to date");
            say(l);
        }
    }
    let status = child
        .wait()
        .await
        .map_err(|e| AgentError::io("waiting for images/build.sh", e))?;
    let stderr_text = errors.await.unwrap_or_default();
    if !status.success() {
        return Err(AgentError::ImageBuild {
            template: req.template.clone(),
            reason: format!("{status}: {}", stderr_text.trim()),
        });
    }
    let image_time = started.elapsed();
    let template_dir = req.images_dir.join(&req.template);
    let existing = Snapshot {
        template_dir: template_dir.clone(),
    };
    if existing.spec().is_some() {
        say(format!("snapshot of {} is ready", req.template));
        return Ok(Built {
            snapshot: existing,
            image_time,
            snapshot_time: Duration::ZERO,
            rebuilt: !up_to_date,
        });
    }
    say(format!(
        "[snapshot] booting {} ({} vCPU, {} MiB, {}), waiting for envd, pausing, saving",
        req.template,
        req.vcpus,
        req.memory_mib,
        req.accel.as_str()
    ));
    let started = Instant::now();
    netslot::ensure_host_rules().await?;
    let slot = match req.slot {
        Some(slot) => slot,
        None => netslot::free_build_slot().await?,
    };
    let snap = snapshot_in_slot(
        &template_dir,
        slot,
        req.vcpus,
        req.memory_mib,
        req.accel,
        req.qemu.clone(),
    )
    .await?;
    let snapshot_time = started.elapsed();
    let bytes = std::fs::metadata(snap.memory())
        .map(|m| {
            use std::os::unix::fs::MetadataExt;
            m.blocks() * 512
        })
        .unwrap_or(0);
    say(format!(
        "[snapshot] ready in {:.1} s ({bytes} bytes of memory)",
        snapshot_time.as_secs_f64()
    ));
    Ok(Built {
        snapshot: snap,
        image_time,
        snapshot_time,
        rebuilt: true,
    })
}

/// Makes the ready snapshot of `template_dir` by booting it in network slot `slot` (which
/// must be free): as capsules will run, on a TAP, which keeps no device state, so the snapshot
/// restores into any slot. The slot is released whatever happens.
pub async fn snapshot_in_slot(
    template_dir: &Path,
    slot: u32,
    vcpus: u32,
    memory_mib: u32,
    accel: Accel,
    qemu: PathBuf,
) -> Result<Snapshot> {
    let boot = Boot {
        vcpus,
        memory_mib,
        accel,
        qemu,
    };
    snapshot_in_slot_then(template_dir, slot, boot, |_| async { Ok(()) }).await
}

/// The machine a template's snapshot boots.
#[derive(Debug, Clone)]
pub struct Boot {
    pub vcpus: u32,
    pub memory_mib: u32,
    pub accel: Accel,
    pub qemu: PathBuf,
}

/// [`snapshot_in_slot`], with `prepare` given envd's address once it answers, before the pause
/// (what it sets is in the snapshot's memory).
pub async fn snapshot_in_slot_then<F, Fut>(
    template_dir: &Path,
    slot: u32,
    boot: Boot,
    prepare: F,
) -> Result<Snapshot>
where
    F: FnOnce(SocketAddr) -> Fut,
    Fut: std::future::Future<Output = std::result::Result<(), String>>,
{
    let mut slot = Slot::create(slot, false).await?;
    let envd = SocketAddr::new(slot.addrs.capsule_ip.into(), wrenn_vmm::config::ENVD_PORT);
    let made = snapshot::make_template_snapshot_then(
        template_dir,
        &TemplateBoot {
            vcpus: boot.vcpus,
            memory_mib: boot.memory_mib,
            accel: boot.accel,
            qemu: boot.qemu,
            net: Net::Tap {
                netns: slot.addrs.netns.clone(),
                tap: netslot::TAP.into(),
            },
            envd,
            ready_timeout: Duration::from_secs(180),
        },
        || prepare(envd),
    )
    .await;
    slot.release().await;
    Ok(made?)
}

fn tempfile_dir() -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix("wrenn-recipe-")
        .tempdir()
        .map_err(|e| AgentError::io("creating a temp dir for the recipe", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid_name(name: &str) -> bool {
        TemplateName::parse(name).is_ok()
    }

    #[test]
    fn names_and_templates() {
        assert!(valid_name("minimal"));
        assert!(valid_name("my.tpl_1-x"));
        assert!(!valid_name(".hidden"));
        assert!(!valid_name(""));
        assert!(!valid_name("a/b"));
        assert!(!valid_name(&"x".repeat(65)));
        let t = known_templates();
        assert!(t.contains(&"minimal") && t.contains(&"python"), "{t:?}");
    }
}
