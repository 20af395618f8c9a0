//! What a host needs before it serves anyone: QEMU, `qemu-img`, `nft`, `ip`, `/dev/net/tun` and
//! ready templates. `wrenn up` and `wrenn agent` check these at start and refuse to start with
//! one line naming everything missing, rather than failing the first user's request.

use std::{
    ffi::OsStr,
    os::unix::fs::{FileTypeExt, PermissionsExt},
    path::{Path, PathBuf},
};

use crate::error::{AgentError, Result};

/// The templates a start needs.
#[derive(Debug, Clone)]
pub enum TemplateNeed {
    /// These templates must have a ready snapshot, or be buildable: `envd` is the static envd
    /// binary a build puts into the image (`wrenn up` builds missing templates on first start).
    Named {
        names: Vec<String>,
        envd: Option<PathBuf>,
    },
    /// At least one template with a ready snapshot, or `envd` to build the known base
    /// templates on first need (`wrenn agent` serves what is there).
    Any { envd: Option<PathBuf> },
}

/// What to check.
#[derive(Debug, Clone)]
pub struct Needs {
    /// The QEMU binary (a name looked up in `PATH`, or a path).
    pub qemu: PathBuf,
    pub images_dir: PathBuf,
    pub templates: TemplateNeed,
    /// Where programs are looked up (`PATH`: the binary passes its own; libraries never read
    /// the environment).
    pub path: Option<std::ffi::OsString>,
}

/// The programs the agent runs besides QEMU.
pub const TOOLS: [&str; 3] = ["qemu-img", "nft", "ip"];

/// The TUN device every capsule's TAP needs.
pub const TUN: &str = "/dev/net/tun";

/// Where `program` is: itself if it names a path, else the first executable file of that name
/// in `path` (a `PATH`-style list).
pub fn find_program(program: &Path, path: Option<&OsStr>) -> Option<PathBuf> {
    let executable = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if program.components().count() > 1 || program.is_absolute() {
        return executable(program).then(|| program.to_path_buf());
    }
    std::env::split_paths(path?)
        .filter(|d| !d.as_os_str().is_empty())
        .map(|d| d.join(program))
        .find(|p| executable(p))
}

/// Whether `dir` holds a ready snapshot of a template.
fn ready(images_dir: &Path, name: &str) -> bool {
    wrenn_vmm::snapshot::Snapshot {
        template_dir: images_dir.join(name),
    }
    .spec()
    .is_some()
}

/// Everything missing, each as a short phrase (empty: all there).
pub fn missing(needs: &Needs) -> Vec<String> {
    let path = needs.path.clone();
    let mut out = Vec::new();
    if find_program(&needs.qemu, path.as_deref()).is_none() {
        out.push(format!("{} (QEMU)", needs.qemu.display()));
    }
    for tool in TOOLS {
        if find_program(Path::new(tool), path.as_deref()).is_none() {
            out.push(tool.to_string());
        }
    }
    let tun = std::fs::metadata(TUN)
        .map(|m| m.file_type().is_char_device())
        .unwrap_or(false);
    if !tun {
        out.push(format!("{TUN} (the TUN device)"));
    }
    match &needs.templates {
        TemplateNeed::Named { names, envd } => {
            let absent: Vec<&str> = names
                .iter()
                .map(String::as_str)
                .filter(|n| !ready(&needs.images_dir, n))
                .collect();
            let buildable = envd.as_deref().is_some_and(Path::is_file);
            if !absent.is_empty() && !buildable {
                let why = match envd {
                    Some(e) => format!("the envd binary {} to build them", e.display()),
                    None => "an envd binary to build them (--envd or WRENN_ENVD)".into(),
                };
                out.push(format!(
                    "template{} {} in {}, or {why}",
                    if absent.len() == 1 { "" } else { "s" },
                    absent.join(", "),
                    needs.images_dir.display()
                ));
            }
        }
        TemplateNeed::Any { envd } => {
            let buildable = envd.as_deref().is_some_and(Path::is_file);
            let any = buildable
                || std::fs::read_dir(&needs.images_dir)
                    .map(|d| {
                        d.flatten()
                            .filter_map(|e| e.file_name().into_string().ok())
                            .any(|n| {
                                wrenn_types::TemplateName::parse(&n).is_ok()
                                    && ready(&needs.images_dir, &n)
                            })
                    })
                    .unwrap_or(false);
            if !any {
                out.push(format!(
                    "a built template in {} (`wrenn template build NAME`), or an envd binary \
                     to build them on first need (--envd or WRENN_ENVD)",
                    needs.images_dir.display()
                ));
            }
        }
    }
    out
}

/// Fails with one line naming everything missing.
pub fn check(needs: &Needs) -> Result<()> {
    let missing = missing(needs);
    if missing.is_empty() {
        return Ok(());
    }
    let programs = missing.iter().any(|m| !m.contains("template"));
    Err(AgentError::Prerequisites(format!(
        "cannot start, missing: {}{}",
        missing.join("; "),
        if programs {
            " (scripts/install-deps.sh installs what this host needs)"
        } else {
            ""
        }
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exe(dir: &Path, name: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    #[test]
    fn finds_programs_in_path_and_by_path() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let tool = exe(b.path(), "tool");
        std::fs::write(a.path().join("plain"), "not executable").unwrap();
        let path = std::env::join_paths([a.path(), b.path()]).unwrap();
        assert_eq!(
            find_program(Path::new("tool"), Some(&path)),
            Some(tool.clone())
        );
        assert_eq!(find_program(Path::new("plain"), Some(&path)), None);
        assert_eq!(find_program(Path::new("absent"), Some(&path)), None);
        assert_eq!(find_program(Path::new("tool"), None), None);
        assert_eq!(find_program(&tool, None), Some(tool));
        assert_eq!(find_program(&a.path().join("plain"), None), None);
    }

    #[test]
    fn names_missing_templates_unless_buildable() {
        let images = tempfile::tempdir().unwrap();
        let needs = |envd: Option<PathBuf>| Needs {
            qemu: "/nonexistent/qemu".into(),
            images_dir: images.path().into(),
            templates: TemplateNeed::Named {
                names: vec!["minimal".into(), "python".into()],
                envd,
            },
            path: std::env::var_os("PATH"),
        };
        let m = missing(&needs(None));
        assert!(m[0].starts_with("/nonexistent/qemu"), "{m:?}");
        let t = m.iter().find(|l| l.starts_with("templates")).unwrap();
        assert!(t.contains("minimal, python") && t.contains("--envd"), "{t}");
        let envd = exe(images.path(), "envd");
        assert!(!missing(&needs(Some(envd)))
            .iter()
            .any(|l| l.starts_with("template")));
        let any = |envd| Needs {
            templates: TemplateNeed::Any { envd },
            ..needs(None)
        };
        assert!(missing(&any(None))
            .iter()
            .any(|l| l.starts_with("a built template")));
        let envd = exe(images.path(), "envd");
        assert!(!missing(&any(Some(envd)))
            .iter()
            .any(|l| l.contains("template")));
        let any = any(None);
        let err = check(&any).unwrap_err().to_string();
        assert!(
            err.starts_with("cannot start, missing: /nonexistent/qemu (QEMU)"),
            "{err}"
        );
        assert!(!err.contains('\n'));
    }
}
