//! What a build's steps do inside the build capsule, as shell text and exec requests: the
//! environment a step sees, the user it runs as, `WORKDIR`, `USER` and `COPY`. Pure (the
//! runner sends them).

use std::collections::BTreeMap;

use wrenn_types::recipe::{is_archive_path, is_user_name, Word};

/// Where the archive is unpacked in the build capsule.
pub const FILES_DIR: &str = "/tmp/build-files";
/// Where the vetted tar is uploaded.
pub const ARCHIVE_PATH: &str = "/tmp/build-archive.tar";

/// Variables a template never records (each capsule's own).
const NOT_RECORDED: &[&str] = &[
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "PWD",
    "OLDPWD",
    "HOSTNAME",
    "TERM",
    "SHLVL",
    "_",
    "WRENN_SANDBOX_ID",
    "WRENN_TEMPLATE_ID",
];

/// The build's state between steps.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// The base's environment, then `ENV`'s.
    pub env: BTreeMap<String, String>,
    /// What `ENV` set (the template records these).
    pub set_env: BTreeMap<String, String>,
    /// `ARG`s: seen by steps, never recorded.
    pub args: BTreeMap<String, String>,
    /// Who runs the steps (root until `USER`, as Docker has it).
    pub user: String,
    /// Where they run (`/` until `WORKDIR`).
    pub workdir: String,
    /// The base template's own defaults, kept when the recipe sets none.
    pub base_user: String,
    pub base_workdir: String,
    pub user_set: bool,
    pub workdir_set: bool,
}

impl Context {
    /// From the base's `env -0` output, user and folder.
    pub fn from_base(env0: &str, user: &str, workdir: &str) -> Context {
        let env = env0
            .split('\0')
            .filter_map(|kv| kv.split_once('='))
            .filter(|(k, _)| !k.is_empty() && !NOT_RECORDED.contains(k))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Context {
            env,
            user: "root".into(),
            workdir: "/".into(),
            base_user: if user.is_empty() {
                "root".into()
            } else {
                user.to_owned()
            },
            base_workdir: if workdir.starts_with('/') {
                workdir.to_owned()
            } else {
                "/".into()
            },
            ..Context::default()
        }
    }

    /// The user the template's capsules run commands as.
    pub fn default_user(&self) -> &str {
        if self.user_set {
            &self.user
        } else {
            &self.base_user
        }
    }

    /// The folder they run in.
    pub fn default_workdir(&self) -> &str {
        if self.workdir_set {
            &self.workdir
        } else {
            &self.base_workdir
        }
    }

    /// A word's value now (`ENV` before `ARG`, as Docker reads them).
    pub fn expand(&self, w: &Word) -> String {
        w.expand(&|n: &str| self.env.get(n).or_else(|| self.args.get(n)).cloned())
    }

    /// The environment a step's process gets.
    pub fn step_env(&self) -> BTreeMap<String, String> {
        let mut e = self.args.clone();
        e.extend(self.env.clone());
        e
    }

    /// An absolute path: relative ones against the current folder.
    pub fn resolve(&self, path: &str) -> String {
        let joined = if path.starts_with('/') {
            path.to_owned()
        } else {
            format!("{}/{path}", self.workdir.trim_end_matches('/'))
        };
        normalize(&joined)
    }

    /// Applies `ENV`.
    pub fn set(&mut self, k: &str, v: String) {
        self.env.insert(k.to_owned(), v.clone());
        self.set_env.insert(k.to_owned(), v);
    }
}

/// `/a/./b/../c` → `/a/c` (never above `/`).
pub fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Single-quoted for `/bin/sh`.
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The script that makes a folder (and gives it to a non-root user when it made it).
pub fn workdir_script(dir: &str, user: &str) -> String {
    let d = quote(dir);
    if user == "root" {
        format!("mkdir -p {d}")
    } else {
        format!(
            "[ -d {d} ] || {{ mkdir -p {d} && chown {} {d}; }}",
            quote(user)
        )
    }
}

/// The script that makes user `name` when missing (a home, bash, password-less sudo).
pub fn user_script(name: &str) -> Result<String, String> {
    if !is_user_name(name) {
        return Err(format!(
            "USER {name:?} is not a user name ([A-Za-z_][A-Za-z0-9_-]*)"
        ));
    }
    let n = quote(name);
    Ok(format!(
        "id -u {n} >/dev/null 2>&1 || useradd --create-home --shell /bin/bash {n} && \
         if [ -d /etc/sudoers.d ]; then echo {line} > /etc/sudoers.d/90-{name} && chmod 0440 /etc/sudoers.d/90-{name}; fi",
        line = quote(&format!("{name} ALL=(ALL) NOPASSWD:ALL")),
    ))
}

/// The script of a `COPY`: each source (from the archive) to `dest` (absolute), owned by
/// `owner` (`user[:group]`, or root's when None), then `chmod`.
pub fn copy_script(
    sources: &[String],
    dest: &str,
    dest_is_dir: bool,
    owner: Option<&str>,
    chmod: Option<u32>,
) -> Result<String, String> {
    let mut s = String::from("set -e\n");
    let many = sources.len() > 1 || dest_is_dir;
    for src in sources {
        if !is_archive_path(src) {
            return Err(format!(
                "COPY source {src:?} must be a relative path inside the archive"
            ));
        }
        let from = quote(&format!("{FILES_DIR}/{src}"));
        let d = quote(dest);
        // What was written, for chown/chmod: the copied tree's paths under dest.
        s.push_str(&format!(
            "[ -e {from} ] || [ -L {from} ] || {{ echo {missing} >&2; exit 1; }}\n",
            missing = quote(&format!("COPY: {src} is not in the archive")),
        ));
        s.push_str(&format!(
            "if [ -d {from} ] && [ ! -L {from} ]; then mkdir -p {d}; cp -a {from}/. {d}/; \
             touched=$(cd {from} && find . -mindepth 1 | sed 's|^\\./||'); base={d}; \
             else "
        ));
        if many {
            s.push_str(&format!(
                "mkdir -p {d}; cp -a {from} {d}/; touched=$(basename {from}); base={d}; fi\n"
            ));
        } else {
            s.push_str(&format!(
                "mkdir -p \"$(dirname {d})\"; cp -a {from} {d}; touched=.; base={d}; fi\n"
            ));
        }
        let mut fix = String::new();
        if let Some(o) = owner {
            fix.push_str(&format!("chown -h {} \"$p\"; ", quote(o)));
        } else {
            fix.push_str("chown -h 0:0 \"$p\"; ");
        }
        if let Some(m) = chmod {
            fix.push_str(&format!("[ -L \"$p\" ] || chmod {m:o} \"$p\"; "));
        }
        s.push_str(&format!(
            "printf '%s\\n' \"$touched\" | while IFS= read -r rel; do [ -n \"$rel\" ] || continue; \
             if [ \"$rel\" = . ]; then p=\"$base\"; else p=\"$base/$rel\"; fi; {fix}done\n"
        ));
    }
    Ok(s)
}

/// The line of a Dockerfile's `FROM` (1 when it cannot be found).
pub fn from_line(source: &str) -> usize {
    source
        .lines()
        .position(|l| {
            let l = l.trim_start();
            l.get(..5).is_some_and(|p| p.eq_ignore_ascii_case("from "))
        })
        .map_or(1, |i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_from_line_is_found() {
        assert_eq!(from_line("ARG V=1\n\n  from x:1\nRUN true\n"), 3);
        assert_eq!(from_line("FROM x\n"), 1);
        assert_eq!(from_line("RUN x\n"), 1);
        assert_eq!(from_line("éé\nFROM y\n"), 2);
    }

    #[test]
    fn context_from_base_skips_per_capsule_variables() {
        let c = Context::from_base("PATH=/usr/bin\0HOME=/root\0A=b=c\0\0", "root", "/root");
        assert_eq!(c.env.get("PATH").map(String::as_str), Some("/usr/bin"));
        assert_eq!(c.env.get("A").map(String::as_str), Some("b=c"));
        assert!(!c.env.contains_key("HOME"));
        assert_eq!((c.default_user(), c.default_workdir()), ("root", "/root"));
        assert_eq!(c.resolve("x/../y"), "/y");
        assert_eq!(c.resolve("/a/./b/"), "/a/b");
        assert_eq!(normalize("/../.."), "/");
    }

    #[test]
    fn quoting() {
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert!(user_script("bad name").is_err());
        assert!(user_script("app")
            .unwrap()
            .contains("useradd --create-home --shell /bin/bash 'app'"));
        assert!(copy_script(&["../x".into()], "/d", false, None, None).is_err());
    }

    /// The copy script, run by the host's real shell in a scratch folder.
    #[test]
    fn copy_script_copies_like_docker() {
        let t = tempfile::tempdir().unwrap();
        let files = t.path().join("files");
        std::fs::create_dir_all(files.join("site/css")).unwrap();
        std::fs::write(files.join("site/index.html"), "hi").unwrap();
        std::fs::write(files.join("site/css/a.css"), "x").unwrap();
        std::fs::write(files.join("one.txt"), "1").unwrap();
        let root = t.path().join("root");
        let script = |srcs: &[&str], dest: &str, dir: bool| {
            let s = copy_script(
                &srcs.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                &format!("{}{dest}", root.display()),
                dir,
                None,
                Some(0o640),
            )
            .unwrap();
            s.replace(FILES_DIR, files.to_str().unwrap())
        };
        let run = |s: String| {
            let out = std::process::Command::new("/bin/sh")
                .arg("-c")
                .arg(&s)
                .output()
                .unwrap();
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        };
        assert!(run(script(&["site"], "/srv/www", false)).0);
        assert_eq!(
            std::fs::read_to_string(root.join("srv/www/css/a.css")).unwrap(),
            "x"
        );
        assert!(run(script(&["one.txt"], "/etc/app.conf", false)).0);
        assert_eq!(
            std::fs::read_to_string(root.join("etc/app.conf")).unwrap(),
            "1"
        );
        assert!(run(script(&["one.txt", "site"], "/multi", true)).0);
        assert!(root.join("multi/one.txt").is_file() && root.join("multi/index.html").is_file());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(root.join("etc/app.conf"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o640);
        let (ok, err) = run(script(&["nope.txt"], "/x", false));
        assert!(
            !ok && err.contains("nope.txt is not in the archive"),
            "{err}"
        );
    }
}
