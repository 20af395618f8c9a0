//! The baseline restore with no Wrenn code: QEMU spawned by hand with the same machine
//! arguments, a few QMP lines over its Unix socket, `GET /health` polled.

use std::{
    fs,
    io::{BufRead, BufReader, Write},
    net::SocketAddr,
    os::unix::net::UnixStream,
    path::Path,
    process::{Child, Command, Stdio},
    thread,
    time::Instant,
};

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};
use wrenn_vmm::{
    config::{ENVD_PORT, GUEST_GATEWAY, GUEST_IP, GUEST_MAC, GUEST_PREFIX},
    qemu::default_qemu,
    snapshot::{Snapshot, SnapshotSpec},
};

use super::capsule::Phases;
use super::host::{cp_sparse, free_addr, health_204, run_tool};
use super::{HEALTH_POLL, MIGRATION_POLL, MIGRATION_TIMEOUT, QMP_CONNECT_POLL, QMP_TIMEOUT, READY};

/// A QEMU this bench spawned itself: killed and reaped when dropped.
struct RawQemu(Child);

impl Drop for RawQemu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// QEMU's command line for a restore, in the shape of `wrenn-vmm`'s `QemuVm::args` (user
/// network with envd forwarded to `envd`, `-incoming defer`), minus `-sandbox`.
fn raw_args(snap: &Snapshot, spec: &SnapshotSpec, dir: &Path, envd: SocketAddr) -> Vec<String> {
    let mem = format!("{}M", spec.memory_mib);
    let mut machine = String::from("microvm,memory-backend=mem0");
    let mut kernel_args = format!(
        "console=ttyS0 quiet panic=-1 init_on_free=1 wrenn.ip={GUEST_IP}/{GUEST_PREFIX},{GUEST_GATEWAY}"
    );
    let mut a: Vec<String> = Vec::new();
    if spec.accel == "kvm" {
        a.extend(["-accel", "kvm", "-cpu", "host"].map(String::from));
    } else {
        machine.push_str(",pit=on,pic=on,rtc=on");
        kernel_args.push_str(&format!(" tsc_early_khz={}", wrenn_vmm::qemu::tsc_khz()));
        a.extend(["-accel", "tcg", "-cpu", "max"].map(String::from));
    }
    a.extend([
        "-M".into(),
        machine,
        "-m".into(),
        mem.clone(),
        "-smp".into(),
        spec.vcpus.to_string(),
        "-object".into(),
        format!(
            "memory-backend-file,id=mem0,size={mem},mem-path={},share=on",
            dir.join("memory").display()
        ),
        "-nodefaults".into(),
        "-no-user-config".into(),
        "-display".into(),
        "none".into(),
        "-no-reboot".into(),
        "-chardev".into(),
        format!(
            "file,id=con0,path={},append=on",
            dir.join("console.log").display()
        ),
        "-serial".into(),
        "chardev:con0".into(),
        "-kernel".into(),
        snap.template_dir.join("vmlinuz").display().to_string(),
        "-initrd".into(),
        snap.template_dir.join("initrd.img").display().to_string(),
        "-append".into(),
        kernel_args,
        "-drive".into(),
        format!(
            "id=root,file={},format=qcow2,if=none,cache=writeback,discard=unmap",
            dir.join("disk.qcow2").display()
        ),
        "-device".into(),
        "virtio-blk-device,drive=root".into(),
        "-qmp".into(),
        format!("unix:{},server=on,wait=off", dir.join("qmp.sock").display()),
        "-netdev".into(),
        format!(
            "user,id=n0,net=169.254.0.0/24,host={GUEST_GATEWAY},dhcpstart=169.254.0.100,restrict=on,hostfwd=tcp:{}:{}-{GUEST_IP}:{ENVD_PORT}",
            envd.ip(),
            envd.port()
        ),
        "-device".into(),
        format!("virtio-net-device,netdev=n0,mac={GUEST_MAC}"),
        "-incoming".into(),
        "defer".into(),
    ]);
    a
}

/// Raw QMP: JSON lines over a Unix socket, blocking.
struct RawQmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl RawQmp {
    fn connect(path: &Path, qemu: &mut RawQemu, log: &Path) -> Result<RawQmp> {
        let deadline = Instant::now() + QMP_TIMEOUT;
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) => {
                    if let Some(status) = qemu.0.try_wait()? {
                        bail!("QEMU exited ({status}) before QMP answered:\n{}", tail(log));
                    }
                    if Instant::now() > deadline {
                        return Err(e).with_context(|| format!("connecting to {}", path.display()));
                    }
                    thread::sleep(QMP_CONNECT_POLL);
                }
            }
        };
        stream.set_read_timeout(Some(QMP_TIMEOUT))?;
        let writer = stream.try_clone()?;
        let mut qmp = RawQmp {
            reader: BufReader::new(stream),
            writer,
        };
        let greeting = qmp.read()?;
        ensure!(
            greeting.get("QMP").is_some(),
            "unexpected QMP greeting {greeting}"
        );
        qmp.execute("qmp_capabilities", None)?;
        Ok(qmp)
    }

    fn read(&mut self) -> Result<Value> {
        let mut line = String::new();
        loop {
            line.clear();
            let n = self.reader.read_line(&mut line).context("reading QMP")?;
            ensure!(n > 0, "QMP connection closed");
            if !line.trim().is_empty() {
                return serde_json::from_str(&line)
                    .with_context(|| format!("malformed QMP line {line:?}"));
            }
        }
    }

    /// Sends one command; skips events until its answer.
    fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value> {
        let mut msg = json!({ "execute": command });
        if let Some(a) = arguments {
            msg["arguments"] = a;
        }
        let mut text = msg.to_string();
        text.push('\n');
        self.writer
            .write_all(text.as_bytes())
            .context("writing QMP")?;
        loop {
            let v = self.read()?;
            if let Some(r) = v.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = v.get("error") {
                bail!("QMP {command}: {}", e["desc"]);
            }
        }
    }
}

fn tail(log: &Path) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let start = text.len().saturating_sub(2048);
    text.get(start..).unwrap_or(&text).to_owned()
}

/// The baseline create: a raw QEMU restore of the snapshot with no Wrenn code, until envd
/// answers; then QEMU is killed and `dir` deleted.
pub(super) fn raw_restore(snap: &Snapshot, spec: &SnapshotSpec, dir: &Path) -> Result<Phases> {
    let envd = free_addr()?;
    let log_path = dir.join("qemu.log");
    let t = Instant::now();
    cp_sparse(&snap.memory(), &dir.join("memory"))?;
    run_tool(
        Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
            .arg(snap.disk())
            .arg(dir.join("disk.qcow2")),
    )?;
    let files = t.elapsed();
    let log = fs::File::create(&log_path)?;
    let child = Command::new(default_qemu())
        .args(raw_args(snap, spec, dir, envd))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("starting qemu-system-x86_64")?;
    let mut qemu = RawQemu(child);
    let mut qmp = RawQmp::connect(&dir.join("qmp.sock"), &mut qemu, &log_path)?;
    qmp.execute(
        "migrate-set-capabilities",
        Some(json!({"capabilities": [{"capability": "x-ignore-shared", "state": true}]})),
    )?;
    qmp.execute(
        "migrate-incoming",
        Some(json!({ "uri": format!("exec:cat {}", snap.state().display()) })),
    )?;
    let deadline = Instant::now() + MIGRATION_TIMEOUT;
    loop {
        let v = qmp.execute("query-migrate", None)?;
        match v["status"].as_str().unwrap_or("") {
            "completed" => break,
            "failed" | "cancelled" => bail!(
                "loading the state failed: {}\n{}",
                v["error-desc"].as_str().unwrap_or("no reason given"),
                tail(&log_path)
            ),
            _ => {}
        }
        ensure!(
            Instant::now() < deadline,
            "the state did not load within {MIGRATION_TIMEOUT:?}"
        );
        thread::sleep(MIGRATION_POLL);
    }
    qmp.execute("cont", None)?;
    let deadline = Instant::now() + READY;
    while !health_204(envd) {
        if let Some(status) = qemu.0.try_wait()? {
            bail!(
                "QEMU exited ({status}) before envd answered:\n{}",
                tail(&log_path)
            );
        }
        ensure!(
            Instant::now() < deadline,
            "envd did not answer within {READY:?}"
        );
        thread::sleep(HEALTH_POLL);
    }
    let total = t.elapsed();
    drop(qmp);
    drop(qemu);
    fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    Ok(Phases { files, total })
}
