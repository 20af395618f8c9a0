//! Templates from OCI images: an unpacked root filesystem (`wrenn_oci::Puller::pull`) made
//! into the same template folder `images/build.sh` makes (`vmlinuz`, `initrd.img`,
//! `rootfs.img`), so snapshots and capsules treat it like any other. The image gets envd, a
//! static busybox and its own init (`images/init/oci-init`, PID 1 before envd: an image may
//! lack every tool `wrenn-init` uses), the user `user`, a hostname; the kernel and initramfs
//! are a built template's (they do not depend on the root filesystem).

use std::{
    io::Write,
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use wrenn_oci::rootpath;

use crate::error::{AgentError, Result};

/// The init of OCI templates (installed as `/sbin/wrenn-init`, which the initramfs starts).
pub const OCI_INIT: &str = include_str!("../../../images/init/oci-init");
/// Where the static busybox goes inside the image (the init's interpreter and tools).
pub const BUSYBOX_IN_IMAGE: &str = "/usr/local/lib/wrenn/busybox";
/// Debian's static busybox (package `busybox-static`), the default to put in.
pub const HOST_STATIC_BUSYBOX: &str = "/bin/busybox";
/// The capsules' default user, as every template has it.
pub const USER: &str = "user";

/// What to make a template disk from.
#[derive(Debug, Clone)]
pub struct RootfsTemplate {
    /// The unpacked root filesystem (left unchanged: it is copied).
    pub rootfs: PathBuf,
    /// The template folder to make (replaced when it exists).
    pub template_dir: PathBuf,
    /// A built template folder whose `vmlinuz` and `initrd.img` are reused.
    pub kernel_from: PathBuf,
    /// The static envd binary.
    pub envd: PathBuf,
    /// A static busybox binary ([`HOST_STATIC_BUSYBOX`]).
    pub busybox: PathBuf,
    /// The root disk's size; by default twice the content plus 512 MiB, at least 2 GiB.
    pub disk_bytes: Option<u64>,
}

/// What was made.
#[derive(Debug, Clone)]
pub struct TemplateDisk {
    pub rootfs_img: PathBuf,
    pub disk_bytes: u64,
    pub content_bytes: u64,
    pub elapsed: Duration,
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> AgentError {
    let context = context.into();
    move |e| AgentError::io(context, e)
}

fn build_err(dir: &Path, reason: impl Into<String>) -> AgentError {
    AgentError::ImageBuild {
        template: dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        reason: reason.into(),
    }
}

/// Makes `req.template_dir` from the unpacked root filesystem (blocking work on a blocking
/// thread). The folder appears complete or not at all; temporaries go on every path.
pub async fn make_template_disk(req: RootfsTemplate) -> Result<TemplateDisk> {
    tokio::task::spawn_blocking(move || make_blocking(&req))
        .await
        .map_err(|e| AgentError::io("template disk task", std::io::Error::other(e.to_string())))?
}

/// `FROM <image reference>`: pulls `reference` (through the puller's cache) and makes
/// `req.template_dir` from its root filesystem (`req.rootfs` is replaced by the pulled one).
/// The image's config (`Env`, `User`, `WorkingDir`, `Cmd`, …) comes back for the caller to
/// record on the template.
pub async fn template_from_image(
    puller: &wrenn_oci::Puller,
    reference: &str,
    mut req: RootfsTemplate,
    progress: impl FnMut(wrenn_oci::Progress),
) -> Result<(wrenn_oci::Image, TemplateDisk)> {
    let image = puller.pull(reference, progress).await?;
    req.rootfs = image.rootfs.clone();
    let disk = make_template_disk(req).await?;
    Ok((image, disk))
}

fn make_blocking(req: &RootfsTemplate) -> Result<TemplateDisk> {
    let started = Instant::now();
    for (what, p) in [
        ("the unpacked root filesystem", &req.rootfs),
        ("the kernel template", &req.kernel_from),
    ] {
        if !p.is_dir() {
            return Err(build_err(
                &req.template_dir,
                format!("{what} {} is missing", p.display()),
            ));
        }
    }
    for (what, p) in [("envd", &req.envd), ("busybox", &req.busybox)] {
        if !p.is_file() {
            return Err(build_err(
                &req.template_dir,
                format!("{what} {} is missing", p.display()),
            ));
        }
    }
    let parent = req
        .template_dir
        .parent()
        .ok_or_else(|| build_err(&req.template_dir, "the template folder has no parent"))?;
    std::fs::create_dir_all(parent).map_err(io(format!("creating {}", parent.display())))?;
    let work = tempfile::Builder::new()
        .prefix(".oci-template-")
        .tempdir_in(parent)
        .map_err(io("creating a temporary folder for the template"))?;
    let root = work.path().join("root");
    // A copy (ownership, modes, links, times kept): the cache's tree is never changed.
    run(
        Command::new("cp").arg("-a").arg(&req.rootfs).arg(&root),
        &req.template_dir,
        "copying the root filesystem",
    )?;
    install_wrenn(&root, req)?;
    let content_bytes = du_bytes(&root);
    let disk_bytes = req
        .disk_bytes
        .unwrap_or_else(|| (content_bytes * 2 + (512 << 20)).max(2 << 30))
        .div_ceil(1 << 20)
        << 20;
    let out = work.path().join("out");
    std::fs::create_dir(&out).map_err(io("creating the template folder"))?;
    let img = out.join("rootfs.img");
    run(
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", "wrenn-root", "-d"])
            .arg(&root)
            .arg(&img)
            .arg(format!("{}k", disk_bytes >> 10)),
        &req.template_dir,
        "mkfs.ext4",
    )?;
    for f in ["vmlinuz", "initrd.img"] {
        std::fs::copy(req.kernel_from.join(f), out.join(f)).map_err(io(format!(
            "copying {f} from {}",
            req.kernel_from.display()
        )))?;
    }
    // Into place: the old folder (if any) out of the way first, then the new one in.
    let old = work.path().join("old");
    if req.template_dir.exists() {
        std::fs::rename(&req.template_dir, &old)
            .map_err(io(format!("replacing {}", req.template_dir.display())))?;
    }
    std::fs::rename(&out, &req.template_dir).map_err(io(format!(
        "moving the template into {}",
        req.template_dir.display()
    )))?;
    tracing::info!(
        template = %req.template_dir.display(),
        content_bytes,
        disk_bytes,
        "template disk made from an OCI root filesystem"
    );
    Ok(TemplateDisk {
        rootfs_img: req.template_dir.join("rootfs.img"),
        disk_bytes,
        content_bytes,
        elapsed: started.elapsed(),
    })
}

fn run(cmd: &mut Command, dir: &Path, what: &str) -> Result<()> {
    let out = cmd.output().map_err(io(format!("starting {what}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(build_err(
            dir,
            format!(
                "{what}: {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ))
    }
}

fn du_bytes(dir: &Path) -> u64 {
    Command::new("du")
        .args(["-sb"])
        .arg(dir)
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// Where guest path `path` is in `root`, every symbolic link on the way followed inside it
/// (an image's `/sbin -> /usr/sbin` must not send a write to the host's).
fn in_root(root: &Path, path: &str) -> Result<PathBuf> {
    rootpath::host_path(root, Path::new(path), true)
        .map_err(|e| AgentError::from(e.into_oci("template", path)))
}

/// Writes a new file at guest path `path` (replacing whatever is there, never through it).
fn put(root: &Path, path: &str, bytes: &[u8], mode: u32) -> Result<()> {
    let dest = in_root(root, path)?;
    if let Ok(m) = std::fs::symlink_metadata(&dest) {
        if m.is_dir() {
            std::fs::remove_dir_all(&dest)
        } else {
            std::fs::remove_file(&dest)
        }
        .map_err(io(format!("replacing {path}")))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&dest)
        .map_err(io(format!("writing {path}")))?;
    f.write_all(bytes).map_err(io(format!("writing {path}")))?;
    drop(f);
    std::os::unix::fs::lchown(&dest, Some(0), Some(0)).map_err(io(format!("owning {path}")))?;
    std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(mode))
        .map_err(io(format!("mode of {path}")))
}

/// A guest file's text ("" when missing; never read through a final symbolic link).
fn read_text(root: &Path, path: &str) -> Result<String> {
    let p = in_root(root, path)?;
    match std::fs::symlink_metadata(&p) {
        Ok(m) if m.is_file() => std::fs::read_to_string(&p).map_err(io(format!("reading {path}"))),
        _ => Ok(String::new()),
    }
}

/// envd, busybox, the init, the user, the hostname and the mount points.
fn install_wrenn(root: &Path, req: &RootfsTemplate) -> Result<()> {
    let envd = std::fs::read(&req.envd).map_err(io("reading envd"))?;
    put(root, "/usr/local/bin/envd", &envd, 0o755)?;
    let busybox = std::fs::read(&req.busybox).map_err(io("reading busybox"))?;
    put(root, BUSYBOX_IN_IMAGE, &busybox, 0o755)?;
    put(root, "/sbin/wrenn-init", OCI_INIT.as_bytes(), 0o755)?;
    put(root, "/etc/hostname", b"wrenn\n", 0o644)?;
    put(
        root,
        "/etc/hosts",
        b"127.0.0.1 localhost\n127.0.1.1 wrenn\n",
        0o644,
    )?;
    for (dir, mode) in [
        ("/proc", 0o555),
        ("/sys", 0o555),
        ("/dev", 0o755),
        ("/run", 0o755),
        ("/tmp", 0o1777),
        // root's home: envd starts root's processes there when no folder is asked for.
        ("/root", 0o700),
    ] {
        let p = in_root(root, dir)?;
        if std::fs::symlink_metadata(&p).is_err() {
            std::fs::create_dir(&p).map_err(io(format!("creating {dir}")))?;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))
                .map_err(io(format!("mode of {dir}")))?;
        }
    }
    add_user(root)
}

/// Adds `user` (and its group and home) unless the image has it: the first free id from 1000.
fn add_user(root: &Path) -> Result<()> {
    let mut passwd = read_text(root, "/etc/passwd")?;
    let mut group = read_text(root, "/etc/group")?;
    if !passwd.lines().any(|l| l.starts_with("root:")) {
        passwd.insert_str(0, "root:x:0:0:root:/root:/bin/sh\n");
    }
    if !group.lines().any(|l| l.starts_with("root:")) {
        group.insert_str(0, "root:x:0:\n");
    }
    let user_line = passwd
        .lines()
        .find(|l| l.starts_with("user:"))
        .map(str::to_string);
    let (uid, gid) = match user_line {
        Some(l) => {
            let f: Vec<&str> = l.split(':').collect();
            (
                f.get(2).and_then(|v| v.parse().ok()).unwrap_or(1000u32),
                f.get(3).and_then(|v| v.parse().ok()).unwrap_or(1000u32),
            )
        }
        None => {
            let taken = |text: &str, id: u32| {
                text.lines()
                    .any(|l| l.split(':').nth(2).and_then(|v| v.parse::<u32>().ok()) == Some(id))
            };
            let id = (1000..60000)
                .find(|id| !taken(&passwd, *id) && !taken(&group, *id))
                .unwrap_or(1000);
            let shell = if in_root(root, "/bin/bash").is_ok_and(|p| p.exists()) {
                "/bin/bash"
            } else {
                "/bin/sh"
            };
            if !passwd.is_empty() && !passwd.ends_with('\n') {
                passwd.push('\n');
            }
            passwd.push_str(&format!("{USER}:x:{id}:{id}::/home/{USER}:{shell}\n"));
            (id, id)
        }
    };
    if !group.lines().any(|l| l.starts_with("user:")) {
        if !group.is_empty() && !group.ends_with('\n') {
            group.push('\n');
        }
        group.push_str(&format!("{USER}:x:{gid}:\n"));
    }
    put(root, "/etc/passwd", passwd.as_bytes(), 0o644)?;
    put(root, "/etc/group", group.as_bytes(), 0o644)?;
    let home = in_root(root, "/home/user")?;
    if std::fs::symlink_metadata(&home).is_err() {
        std::fs::create_dir(&home).map_err(io("creating /home/user"))?;
        std::os::unix::fs::lchown(&home, Some(uid), Some(gid)).map_err(io("owning /home/user"))?;
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o755))
            .map_err(io("mode of /home/user"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_is_added_once_with_a_free_id_and_links_stay_inside() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::create_dir_all(root.join("usr/sbin")).unwrap();
        // An absolute link that would point at the host's /usr/sbin if followed naively.
        std::os::unix::fs::symlink("/usr/sbin", root.join("sbin")).unwrap();
        std::fs::write(
            root.join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/app:/bin/sh",
        )
        .unwrap();
        std::fs::write(root.join("etc/group"), "root:x:0:\napp:x:1000:\n").unwrap();
        add_user(&root).unwrap();
        add_user(&root).unwrap();
        let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
        assert_eq!(passwd.matches("\nuser:").count(), 1, "{passwd}");
        assert!(
            passwd.contains("\nuser:x:1001:1001::/home/user:/bin/sh\n"),
            "{passwd}"
        );
        assert!(std::fs::read_to_string(root.join("etc/group"))
            .unwrap()
            .contains("user:x:1001:"));
        assert!(root.join("home/user").is_dir());
        put(&root, "/sbin/wrenn-init", b"#!/bin/sh\n", 0o755).unwrap();
        assert!(root.join("usr/sbin/wrenn-init").is_file());
        assert!(OCI_INIT.starts_with(&format!("#!{BUSYBOX_IN_IMAGE} sh\n")));
    }
}
