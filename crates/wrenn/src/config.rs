//! One configuration shape for `wrenn up`, `wrenn server` and `wrenn agent`: every flag is read
//! from, in this order (later wins): its default, the configuration file, the `WRENN_*`
//! variables, the command line.
//!
//! The file is TOML (`--config FILE`, `WRENN_CONFIG`; else `DATA_DIR/wrenn.toml` when it
//! exists) whose keys are the command's flag names (`slots = "1-100"`, `max-capsules = 8`,
//! `max_capsules` too). A flag's variable is the one it always had (`WRENN_AGENT_SLOTS`), and
//! also `WRENN_` + its name (`WRENN_SLOTS`, `WRENN_MAX_CAPSULES`) where no other flag uses that
//! name already. The file and the variables become the flags' defaults before clap parses, so
//! a value from any layer is checked by the same parser as the flag. A bad file, an unknown key
//! or a bad value is one line naming the file and the key, and exit code 2: nothing starts.

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
};

use clap::{Arg, Command};

/// The file read when `--config` is not given, in the data folder.
pub const FILE_NAME: &str = "wrenn.toml";
/// The commands that take a configuration.
const ROLES: [&str; 3] = ["up", "server", "agent"];

/// The values one file gives, by the flag's long name: one value, or a list.
type Values = Vec<(String, Vec<String>)>;

/// `cmd` (the whole CLI) with the file and the variables applied as the defaults of the
/// command `args` runs (`args[0]` is the program). `env` reads a variable.
pub fn layered(
    mut cmd: Command,
    args: &[OsString],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Command, String> {
    let Some(role) = args
        .get(1)
        .and_then(|a| a.to_str())
        .filter(|a| ROLES.contains(a))
    else {
        return Ok(cmd);
    };
    // Variables clap already reads for some flag keep their meaning: no second flag gets them.
    let taken: Vec<OsString> = cmd
        .get_subcommands()
        .flat_map(|c| c.get_arguments())
        .filter_map(|a| a.get_env().map(|e| e.to_os_string()))
        .collect();
    let sub = cmd
        .find_subcommand(role)
        .ok_or_else(|| format!("no command {role}"))?
        .clone();
    let from_file = match locate(&args[2..], env) {
        Some(path) => check(&sub, &path, read(&path)?)?,
        None => Vec::new(),
    };
    let mut defaults: Values = Vec::new();
    for arg in sub.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        let name = format!("WRENN_{}", long.to_uppercase().replace('-', "_"));
        let value = if arg.get_env().is_none_or(|e| e != name.as_str())
            && !taken.iter().any(|t| t == name.as_str())
        {
            env(&name).map(|v| split(arg, &v))
        } else {
            None
        };
        let value = value.or_else(|| {
            from_file
                .iter()
                .find(|(k, _)| k == long)
                .map(|(_, v)| v.clone())
        });
        if let Some(v) = value {
            defaults.push((arg.get_id().to_string(), v));
        }
    }
    cmd = cmd.mut_subcommand(role, |mut sub| {
        for (id, values) in defaults {
            sub = sub.mut_arg(id, |a| a.required(false).default_values(values));
        }
        sub
    });
    Ok(cmd)
}

/// The file to read: `--config FILE` (or `--config=FILE`), `WRENN_CONFIG`, or
/// `DATA_DIR/wrenn.toml` when it exists (`--data-dir`, `WRENN_DIR`, or the default folder).
fn locate(args: &[OsString], env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let flag = |name: &str| -> Option<PathBuf> {
        let long = format!("--{name}");
        let eq = format!("--{name}=");
        let mut it = args.iter().map(|a| a.to_string_lossy());
        while let Some(a) = it.next() {
            if a == "--" {
                break;
            }
            if a == long {
                return it.next().map(|v| PathBuf::from(v.as_ref()));
            }
            if let Some(v) = a.strip_prefix(&eq) {
                return Some(PathBuf::from(v));
            }
        }
        None
    };
    if let Some(file) = flag("config").or_else(|| env("WRENN_CONFIG").map(PathBuf::from)) {
        return Some(file);
    }
    let dir = flag("data-dir")
        .or_else(|| env("WRENN_DIR").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(crate::args::DATA_DIR));
    Some(dir.join(FILE_NAME)).filter(|f| f.exists())
}

/// The keys and values of the TOML file at `path`.
fn read(path: &Path) -> Result<Values, String> {
    let shown = path.display();
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("configuration file {shown}: {e}"))?;
    let doc = toml_edit::Document::parse(text.as_str()).map_err(|e| {
        let line = e
            .span()
            .map_or(0, |s| text[..s.start].matches('\n').count() + 1);
        format!(
            "configuration file {shown}: line {line}: not valid TOML: {}",
            e.message().trim()
        )
    })?;
    let mut out = Vec::new();
    for (key, item) in doc.as_table() {
        let bad = |why: &str| format!("configuration file {shown}: key `{key}`: {why}");
        let value = item
            .as_value()
            .ok_or_else(|| bad("a table: use `key = value` lines only"))?;
        let values = match value {
            toml_edit::Value::Array(a) => a.iter().map(scalar).collect::<Option<Vec<_>>>(),
            v => scalar(v).map(|s| vec![s]),
        }
        .ok_or_else(|| bad("use a string, a number, true/false, or a list of them"))?;
        out.push((key.replace('_', "-"), values));
    }
    Ok(out)
}

fn scalar(v: &toml_edit::Value) -> Option<String> {
    match v {
        toml_edit::Value::String(s) => Some(s.value().clone()),
        toml_edit::Value::Integer(i) => Some(i.value().to_string()),
        toml_edit::Value::Float(f) => Some(f.value().to_string()),
        toml_edit::Value::Boolean(b) => Some(b.value().to_string()),
        _ => None,
    }
}

/// Checks every key of the file names a flag of `sub` and every value parses as that flag's.
fn check(sub: &Command, path: &Path, values: Values) -> Result<Values, String> {
    let shown = path.display();
    let keys = || {
        sub.get_arguments()
            .filter_map(Arg::get_long)
            .filter(|l| *l != "config")
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut out = Vec::new();
    for (key, values) in values {
        let arg = sub
            .get_arguments()
            .find(|a| a.get_long() == Some(&key) && key != "config")
            .ok_or_else(|| {
                format!(
                    "configuration file {shown}: unknown key `{key}` (the keys of `wrenn {}` are: {})",
                    sub.get_name(),
                    keys()
                )
            })?;
        let values: Vec<String> = values.iter().flat_map(|v| split(arg, v)).collect();
        if values.len() > 1 && arg.get_value_delimiter().is_none() {
            return Err(format!(
                "configuration file {shown}: key `{key}`: takes one value, not a list"
            ));
        }
        for v in &values {
            // The flag's own parser, alone (its variable cannot interfere: a flag wins).
            let probe = Command::new("probe")
                .no_binary_name(true)
                .arg(arg.clone().required(false));
            if let Err(e) = probe.try_get_matches_from([format!("--{key}={v}")]) {
                let why = e.to_string();
                let why = why.lines().next().unwrap_or_default();
                return Err(format!(
                    "configuration file {shown}: key `{key}`: {}",
                    why.trim_start_matches("error: ")
                ));
            }
        }
        out.push((key, values));
    }
    Ok(out)
}

/// A value of a list flag (`value_delimiter`) split into its items.
fn split(arg: &Arg, v: &str) -> Vec<String> {
    match arg.get_value_delimiter() {
        Some(d) => v.split(d).map(str::to_string).collect(),
        None => vec![v.to_string()],
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use clap::{CommandFactory, FromArgMatches, Parser};

    use super::*;
    use crate::{args::AgentArgs, Cli, Command as Cmd};

    /// `wrenn agent ARGS` with the file `toml` (when given, through `--config`) and the
    /// variables `vars` (through `env`, not the process's).
    fn agent(
        toml: Option<&str>,
        vars: &[(&str, &str)],
        args: &[&str],
    ) -> Result<AgentArgs, String> {
        let dir = tempfile::tempdir().unwrap();
        let mut argv: Vec<OsString> = vec!["wrenn".into(), "agent".into()];
        if let Some(text) = toml {
            let file = dir.path().join("wrenn.toml");
            std::fs::write(&file, text).unwrap();
            argv.push("--config".into());
            argv.push(file.into());
        }
        argv.extend(args.iter().map(OsString::from));
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let cmd = layered(Cli::command(), &argv, &|k| vars.get(k).cloned())
            .map_err(|e| e.replace(&dir.path().display().to_string(), "DIR"))?;
        let matches = cmd.try_get_matches_from(&argv).map_err(|e| e.to_string())?;
        match Cli::from_arg_matches(&matches)
            .map_err(|e| e.to_string())?
            .command
        {
            Cmd::Agent(a) => Ok(a),
            other => panic!("not the agent: {other:?}"),
        }
    }

    #[test]
    fn defaults_apply_without_a_file() {
        let a = agent(None, &[], &[]).unwrap();
        assert_eq!(a.host.slots, 1..=16000);
        assert_eq!(a.host.max_capsules, 64);
        assert_eq!(a.host.warm_pool, 0, "the warm pool is off by default");
        assert_eq!(a.host.keep_paused, 0, "no kept VMMs by default");
        assert_eq!(
            a.host.create_parallelism, None,
            "the agent's own default (CPUs + 1)"
        );
        assert_eq!(a.listen_addr(None).unwrap().to_string(), "127.0.0.1:9090");
    }

    #[test]
    fn the_help_says_how_long_a_paused_capsule_keeps_its_vmm() {
        let mut cli = Cli::command();
        let help = cli
            .find_subcommand_mut("agent")
            .unwrap()
            .render_long_help()
            .to_string();
        let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
        let secs = wrenn_agent::manager::DEFAULT_KEPT_FOR.as_secs();
        assert!(
            help.contains("one kept longer than --keep-paused-secs")
                && help.contains(&format!("[env: WRENN_KEEP_PAUSED_SECS=] [default: {secs}]")),
            "{help}"
        );
        assert_eq!(agent(None, &[], &[]).unwrap().host.keep_paused_secs, secs);
        let e = agent(None, &[], &["--keep-paused-secs=0"]).unwrap_err();
        assert!(e.contains("0 is not in 1..=86400"), "{e}");
    }

    #[test]
    fn the_file_overrides_the_defaults() {
        let a = agent(
            Some("slots = \"3-4\"\nmax_capsules = 8\nlisten = \"unix:/run/w.sock\"\ndns-upstream = [\"10.0.0.1\", \"10.0.0.2:5353\"]\nwarm-pool = 3\nkeep-paused = 2\n"),
            &[],
            &[],
        )
        .unwrap();
        assert_eq!(a.host.warm_pool, 3);
        assert_eq!(a.host.keep_paused, 2);
        assert_eq!(a.host.slots, 3..=4);
        assert_eq!(a.host.max_capsules, 8);
        assert_eq!(a.listen_addr(None).unwrap().to_string(), "unix:/run/w.sock");
        assert_eq!(a.host.dns_upstream.len(), 2);
        assert_eq!(a.host.dns_upstream[1].to_string(), "10.0.0.2:5353");
    }

    #[test]
    fn variables_override_the_file() {
        let file = Some("slots = \"3-4\"\nmax-capsules = 8\n");
        let a = agent(
            file,
            &[("WRENN_SLOTS", "5-6"), ("WRENN_MAX_CAPSULES", "9")],
            &[],
        )
        .unwrap();
        assert_eq!(a.host.slots, 5..=6);
        assert_eq!(a.host.max_capsules, 9);
        // A variable another flag owns keeps its meaning: WRENN_LISTEN is the REST API's.
        let a = agent(file, &[("WRENN_LISTEN", "0.0.0.0:1")], &[]).unwrap();
        assert_eq!(a.listen_addr(None).unwrap().to_string(), "127.0.0.1:9090");
    }

    #[test]
    fn flags_override_variables_and_the_file() {
        let a = agent(
            Some("slots = \"3-4\"\n"),
            &[("WRENN_SLOTS", "5-6")],
            &["--slots", "7-8", "--max-capsules=2"],
        )
        .unwrap();
        assert_eq!(a.host.slots, 7..=8);
        assert_eq!(a.host.max_capsules, 2);
    }

    #[test]
    fn create_parallelism_comes_from_the_flag_or_the_file() {
        let file = Some("create-parallelism = 4\n");
        assert_eq!(
            agent(file, &[], &[]).unwrap().host.create_parallelism,
            Some(4)
        );
        let a = agent(file, &[], &["--create-parallelism", "0"]).unwrap();
        assert_eq!(a.host.create_parallelism, Some(0), "0: no limit");
        let a = agent(file, &[], &["--create-parallelism=1024"]).unwrap();
        assert_eq!(a.host.create_parallelism, Some(1024));
        for bad in ["-1", "1025", "many", ""] {
            let flag = format!("--create-parallelism={bad}");
            let e = agent(None, &[], &[&flag]).unwrap_err();
            assert!(
                e.contains("invalid value") && e.contains("--create-parallelism <N>"),
                "{bad}: {e}"
            );
        }
        let e = agent(Some("create-parallelism = 5000\n"), &[], &[]).unwrap_err();
        assert!(
            e.contains("key `create-parallelism`: invalid value '5000'"),
            "{e}"
        );
    }

    /// The settings a started agent takes at run time reach it from the file and the flags
    /// (`HostArgs::apply`). Needs root (the agent clears its slot range at start).
    #[tokio::test]
    async fn a_started_agent_takes_its_run_time_settings() {
        let data = tempfile::tempdir_in("/var/tmp").unwrap();
        let images = tempfile::tempdir_in("/var/tmp").unwrap();
        let default = wrenn_agent::manager::default_create_parallelism();
        let n = (default + 2).to_string();
        let a = agent(
            Some("slots = \"7420-7421\"\nkeep-paused = 2\nkeep-paused-secs = 60\nwarm-pool = 1\ncreate-parallelism = 1\ncapsule-memory-mib = 4096\n"),
            &[],
            &["--create-parallelism", &n],
        )
        .unwrap();
        let config = a
            .host
            .agent_config(data.path().to_path_buf(), images.path().to_path_buf())
            .unwrap();
        let manager = wrenn_agent::manager::Manager::start(config).await.unwrap();
        assert_eq!(manager.create_parallelism(), default);
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
        let total_kib: u64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap();
        assert_eq!(
            manager.capsule_memory_mib(),
            total_kib / 1024 - 512,
            "by default: the host's memory less 512 MiB"
        );
        a.host.apply(&manager).await;
        assert_eq!(
            manager.create_parallelism(),
            default + 2,
            "the flag over the file"
        );
        assert_eq!(manager.keep_paused(), 2);
        assert_eq!(
            manager.keep_paused_for(),
            std::time::Duration::from_secs(60)
        );
        assert_eq!(manager.capsule_memory_mib(), 4096);
        assert_eq!(manager.pool_size(), 1, "no template here: nothing to warm");
        // Above the host's memory: overcommit, taken as given.
        let over = (total_kib / 1024) * 2;
        manager.set_capsule_memory_mib(over).await;
        assert_eq!(manager.capsule_memory_mib(), over);
        manager.stop_idle_vmms().await;
    }

    #[test]
    fn a_bad_file_is_one_line_naming_it() {
        let e = agent(Some("slots = \n"), &[], &[]).unwrap_err();
        assert!(
            e.starts_with("configuration file DIR/wrenn.toml: line 1: not valid TOML"),
            "{e}"
        );
        assert_eq!(e.lines().count(), 1, "{e}");
        let e = agent(Some("[slots]\nx = 1\n"), &[], &[]).unwrap_err();
        assert!(e.contains("key `slots`: a table"), "{e}");
        let e = agent(Some("slots = \"9-1\"\n"), &[], &[]).unwrap_err();
        assert!(
            e.contains("DIR/wrenn.toml: key `slots`: invalid value '9-1'"),
            "{e}"
        );
        let e = agent(Some("max-capsules = [1, 2]\n"), &[], &[]).unwrap_err();
        assert!(e.contains("key `max-capsules`: takes one value"), "{e}");
    }

    #[test]
    fn an_unknown_key_is_named() {
        let e = agent(Some("slots = \"1-2\"\nquota-capsules = 3\n"), &[], &[]).unwrap_err();
        assert!(
            e.starts_with("configuration file DIR/wrenn.toml: unknown key `quota-capsules`"),
            "{e}"
        );
        assert!(e.contains("max-capsules"), "lists the keys: {e}");
        let e = agent(Some("config = \"x.toml\"\n"), &[], &[]).unwrap_err();
        assert!(e.contains("unknown key `config`"), "{e}");
    }

    #[test]
    fn the_data_folders_file_is_read_when_present() {
        let dir = tempfile::tempdir().unwrap();
        let args: Vec<OsString> = ["wrenn", "agent", "--data-dir"]
            .iter()
            .map(OsString::from)
            .chain([dir.path().as_os_str().to_owned()])
            .collect();
        let none = |_: &str| None;
        assert_eq!(locate(&args[2..], &none), None);
        std::fs::write(dir.path().join(FILE_NAME), "slots = \"2-3\"\n").unwrap();
        assert_eq!(locate(&args[2..], &none), Some(dir.path().join(FILE_NAME)));
        // --config wins over the data folder's file.
        let with = [args[2..].to_vec(), vec!["--config=/x.toml".into()]].concat();
        assert_eq!(locate(&with, &none), Some(PathBuf::from("/x.toml")));
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let argv = [
            "wrenn",
            "up",
            "--database-url",
            "postgres://wrenn:hunter2@db/wrenn",
        ];
        let argv: Vec<OsString> = argv.iter().map(OsString::from).collect();
        let cmd = layered(Cli::command(), &argv, &|_| None).unwrap();
        let cli = Cli::from_arg_matches(&cmd.try_get_matches_from(&argv).unwrap()).unwrap();
        let shown = format!("{cli:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        let key = ["wrenn", "capsule", "list", "--api-key", "wrn_topsecret"].map(OsString::from);
        let listed = Cli::try_parse_from(&key).unwrap();
        let shown = format!("{listed:?}");
        assert!(
            !shown.contains("topsecret") && shown.contains("<redacted>"),
            "{shown}"
        );
        let Cmd::Up(up) = cli.command else {
            panic!("not up")
        };
        let config = up.control.server_config(
            up.common.data_dir.clone(),
            wrenn_server::accounts::SignupPolicy::Closed,
        );
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("hunter2") && shown.contains("postgres://wrenn:<redacted>@db/wrenn"),
            "{shown}"
        );
    }

    #[test]
    fn host_settings_come_from_every_layer() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("wrenn.toml");
        std::fs::write(&file, "host-timeout = 9\nhost-token-ttl = 120\n").unwrap();
        let server = |extra: &[&str], vars: &[(&str, &str)]| {
            let mut argv: Vec<OsString> = ["wrenn", "server", "--agent", "unix:/x"]
                .iter()
                .map(OsString::from)
                .collect();
            argv.push("--config".into());
            argv.push(file.clone().into());
            argv.extend(extra.iter().map(OsString::from));
            let vars: HashMap<String, String> = vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let cmd = layered(Cli::command(), &argv, &|k| vars.get(k).cloned())?;
            let m = cmd.try_get_matches_from(&argv).map_err(|e| e.to_string())?;
            match Cli::from_arg_matches(&m)
                .map_err(|e| e.to_string())?
                .command
            {
                Cmd::Server(s) => Ok::<_, String>(
                    s.control
                        .server_config(
                            s.common.data_dir.clone(),
                            wrenn_server::accounts::SignupPolicy::Invite,
                        )
                        .hosts,
                ),
                other => panic!("not the server: {other:?}"),
            }
        };
        let h = server(
            &["--host-cert-ttl", "3600"],
            &[("WRENN_HOST_TOKEN_TTL", "60")],
        )
        .unwrap();
        assert_eq!(h.timeout.as_secs(), 9);
        assert_eq!(h.token_ttl.as_secs(), 60);
        assert_eq!(h.cert_ttl.as_secs(), 3600);
        std::fs::write(&file, "").unwrap();
        let h = server(&[], &[]).unwrap();
        assert_eq!(h, wrenn_server::hosts::HostSettings::default());
        assert!(server(&["--host-timeout", "0"], &[]).is_err());
    }
}
