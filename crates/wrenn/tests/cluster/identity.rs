//! Host identity with real processes: registration, restarts that keep the identity, what is
//! refused (a used or expired registration token, another host's host token, a deleted host,
//! a certificate from another CA), and a killed agent's host going `unreachable` and back.

use std::{os::unix::fs::PermissionsExt, time::Instant};

use serde_json::json;
use wrenn_client::{hosts::HostStatus, Exec};
use wrenn_proto::agent::v1::HostInfoRequest;
use wrenn_rpc::{client, pki::Pki, tls};

use crate::harness::{recorded_state, run_to_end, Cluster, HOST_TIMEOUT_SECS};

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

async fn sh(c: &Cluster, id: &str, script: &str) -> String {
    let out = c.admin.exec(id, &Exec::shell(script)).await.unwrap();
    assert_eq!(out.exit_code, 0, "{script}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Three agents register with tokens and come `online` with their specs; the credentials file
/// is private; an agent killed with `-9` starts again from it (no token) as the same host,
/// with its capsule still running.
#[tokio::test(flavor = "multi_thread")]
async fn three_agents_register_and_a_restart_keeps_the_identity() {
    let mut c = Cluster::start(3);
    let listed = c.admin.list_hosts().await.unwrap();
    for a in &c.agents {
        let h = c.admin.get_host(&a.host_id).await.unwrap();
        assert_eq!(h.status, HostStatus::Online);
        assert_eq!(h.address, a.address);
        assert_eq!(h.specs.arch, std::env::consts::ARCH);
        assert_eq!(h.specs.slots, a.slots);
        assert_eq!(h.specs.vmm, "qemu");
        assert!(["kvm", "tcg"].contains(&h.specs.accel.as_str()), "{h:?}");
        assert!(h.specs.cpu_cores >= 1 && h.specs.memory_mb > 0 && h.specs.disk_mb > 0);
        assert!(h.last_heartbeat_at.is_some());
        assert!(h.tags.contains(&format!("h{}", a.index)), "{h:?}");
        assert!(listed.iter().any(|l| l.id == a.host_id));
        assert_eq!(mode(&a.credentials_path()), 0o600);
        assert_eq!(mode(&a.data_dir), 0o700);
        let creds = a.credentials();
        assert_eq!(creds["host_id"], a.host_id.as_str());
        assert_eq!(creds["address"], a.address.as_str());
    }
    let ids: std::collections::HashSet<_> = c.agents.iter().map(|a| &a.host_id).collect();
    assert_eq!(ids.len(), 3, "three hosts");

    let id = c.capsule_on(&["h1"]).await;
    sh(&c, &id, "echo kept > /home/user/mark").await;
    let before = c.agents[1].credentials();
    c.agents[1].kill_9();
    c.agents[1].restart();
    let h = c.wait_host(&c.agents[1].host_id, HostStatus::Online).await;
    assert_eq!(h.address, c.agents[1].address);
    assert_eq!(c.agents[1].credentials()["host_id"], before["host_id"]);
    c.wait_capsule(&id, "running").await;
    assert_eq!(sh(&c, &id, "cat /home/user/mark").await, "kept");
    c.admin.destroy_capsule(&id).await.unwrap();
}

/// A used registration token, an expired one, and one replaced by `POST /v1/hosts/{id}/token`
/// are refused with one clear line; a host token acts only as its own host; a user's key is
/// no host token.
#[tokio::test(flavor = "multi_thread")]
async fn tokens_are_refused_where_they_must_be() {
    let c = Cluster::start(2);
    let refused = |what: &str, (code, stderr): (Option<i32>, String), why: &str| {
        assert_ne!(code, Some(0), "{what}: the agent started");
        assert!(
            stderr.contains(&format!("error: registration refused: {why}")),
            "{what}: {stderr}"
        );
    };
    let fresh_agent = |name: &str, token: &str| {
        let mut a = c.agent(2, "none");
        a.data_dir = c.dir.join(name);
        let mut cmd = a.command();
        cmd.args(["--register", token])
            .args(["--control-plane", &c.base_url()])
            .args(["--address", &a.address]);
        cmd
    };

    // A token used once.
    let specs = json!({ "arch": "x86_64", "cpu_cores": 1, "memory_mb": 1024, "disk_mb": 1024,
        "slots": "1-2", "vmm": "qemu", "accel": "tcg" });
    let (host, token) = c.create_host(2).await;
    let (status, body) = c
        .post(
            "/v1/hosts/register",
            &[],
            &json!({ "token": token, "address": "127.0.0.4:1", "specs": specs }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["host_id"], host.as_str());
    refused(
        "a used token",
        run_to_end(fresh_agent("reuse", &token)),
        "invalid, used or expired registration token",
    );
    assert!(!c.dir.join("reuse/host-credentials.json").exists());

    // An expired token (its expiry moved into the past in the database).
    let (expired_host, expired) = c.create_host(2).await;
    let db = sqlx::SqlitePool::connect(&format!(
        "sqlite://{}",
        c.up.data_dir.join("wrenn.db").display()
    ))
    .await
    .unwrap();
    let n = sqlx::query("UPDATE host_tokens SET expires_at = 1 WHERE host_id = ?")
        .bind(&expired_host)
        .execute(&db)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(n, 1);
    refused(
        "an expired token",
        run_to_end(fresh_agent("expired", &expired)),
        "invalid, used or expired registration token",
    );
    // A new token for the pending host works; the replaced one does not.
    let (replaced_host, replaced) = c.create_host(2).await;
    let again = c.admin.new_host_token(&replaced_host).await.unwrap();
    refused(
        "a replaced token",
        run_to_end(fresh_agent("replaced", &replaced)),
        "invalid, used or expired registration token",
    );
    assert_ne!(again.registration_token, replaced);

    // Host tokens: only for one's own host; a user's key is none.
    let beat = json!({ "specs": specs, "load": {} });
    let mine = c.agents[0].credentials()["host_token"]
        .as_str()
        .unwrap()
        .to_string();
    let own = format!("/v1/hosts/{}/heartbeat", c.agents[0].host_id);
    let other = format!("/v1/hosts/{}/heartbeat", c.agents[1].host_id);
    let (status, _) = c.post(&own, &[("x-host-token", &mine)], &beat).await;
    assert_eq!(status, 204);
    let (status, body) = c.post(&other, &[("x-host-token", &mine)], &beat).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "forbidden");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("own host"),
        "{body}"
    );
    let (status, _) = c.post(&own, &[], &beat).await;
    assert_eq!(status, 401);
    let (status, _) = c.post(&own, &[("x-api-key", &c.up.key)], &beat).await;
    assert_eq!(status, 401, "a user's API key is not a host token");
    let (status, _) = c.post(&own, &[("x-host-token", &c.up.key)], &beat).await;
    assert_eq!(status, 401);
    let (status, _) = c
        .post("/v1/capsules", &[("x-api-key", &mine)], &json!({}))
        .await;
    assert_eq!(status, 401, "a host token is not a user's key");
}

/// The control plane deletes a host while its agent is down: started again, the agent's first
/// heartbeat learns it, pauses its capsules, removes its credentials and stops (exit 0).
#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_hosts_agent_pauses_its_capsules_and_stops() {
    let mut c = Cluster::start(1);
    let id = c.capsule_on(&["h0"]).await;
    sh(&c, &id, "echo kept > /home/user/mark").await;
    c.agents[0].kill_9();
    c.admin
        .delete_host(&c.agents[0].host_id, true)
        .await
        .unwrap();
    assert!(c
        .admin
        .get_host(&c.agents[0].host_id)
        .await
        .unwrap_err()
        .is_not_found());
    let agent = &mut c.agents[0];
    agent.restart();
    assert_eq!(agent.wait_exit(crate::harness::PATIENCE), Some(0));
    let said = agent.stdout.lock().unwrap().join("\n");
    assert!(said.contains("deleted by the control plane"), "{said}");
    assert!(said.contains("1 capsule(s) paused"), "{said}");
    assert!(!agent.credentials_path().exists(), "credentials removed");
    assert_eq!(recorded_state(&agent.data_dir, &id), "paused");
    // Without credentials it cannot come back to the control plane as that host.
    let (code, stderr) = run_to_end({
        let mut cmd = agent.command();
        cmd.args(["--control-plane", &c.base_url()]);
        cmd
    });
    assert_ne!(code, Some(0));
    assert!(stderr.contains("--register TOKEN"), "{stderr}");
}

/// mTLS between the control plane and a registered agent refuses certificates of another CA:
/// a client certificate from another CA at the agent, and an agent certificate from another
/// CA at the control plane's client.
#[tokio::test(flavor = "multi_thread")]
async fn certificates_from_another_ca_are_refused() {
    let c = Cluster::start(1);
    let a = &c.agents[0];
    let ip = a.address.split(':').next().unwrap().to_string();
    let ca = a.credentials()["ca_cert_pem"].as_str().unwrap().to_string();
    let endpoint: wrenn_rpc::AgentEndpoint = format!("https://{}", a.address).parse().unwrap();
    let call = |tls| {
        let endpoint = endpoint.clone();
        async move {
            let mut client = client::connect(&endpoint, Some(tls))
                .await
                .map_err(|e| e.to_string())?;
            client
                .host_info(HostInfoRequest {})
                .await
                .map(|_| ())
                .map_err(|s| s.to_string())
        }
    };
    // The control plane's own client certificate works (the refusals are about the CA).
    let pki_dir = c.up.data_dir.join("pki");
    call(tls::load_client_tls(&pki_dir, &ip).unwrap())
        .await
        .unwrap();
    let other = Pki::load_or_create(&c.dir.join("other-ca")).unwrap();
    let foreign_client = other.issue_client("wrenn-control-plane").unwrap();
    let e = call(tls::client_tls_config(&ca, &foreign_client, &ip))
        .await
        .unwrap_err();
    eprintln!("a client certificate from another CA: {e}");

    // An agent whose certificate another CA issued, reached with the control plane's client.
    let foreign_dir = c.dir.join("foreign-agent-pki");
    other
        .issue_server(std::slice::from_ref(&ip))
        .unwrap()
        .write(&foreign_dir, tls::AGENT_STEM)
        .unwrap();
    std::fs::write(foreign_dir.join(tls::CA_CERT), other.ca_pem()).unwrap();
    let mut rogue = c.agent(1, "rogue");
    let mut cmd = rogue.command();
    let rogue_addr = format!("{ip}:{}", rogue.address.rsplit(':').next().unwrap());
    cmd.args(["--tls-dir"])
        .arg(&foreign_dir)
        .args(["--listen", &rogue_addr]);
    tokio::task::block_in_place(|| rogue.spawn(cmd));
    let rogue_endpoint: wrenn_rpc::AgentEndpoint = format!("https://{rogue_addr}").parse().unwrap();
    let e = match client::connect(
        &rogue_endpoint,
        Some(tls::load_client_tls(&pki_dir, &ip).unwrap()),
    )
    .await
    {
        Err(e) => e.to_string(),
        Ok(mut cl) => cl
            .host_info(HostInfoRequest {})
            .await
            .unwrap_err()
            .to_string(),
    };
    eprintln!("an agent certificate from another CA: {e}");
    assert!(
        e.to_lowercase().contains("certificate")
            || e.contains("UnknownIssuer")
            || e.contains("transport"),
        "{e}"
    );
}

/// An agent killed with `-9`: its host becomes `unreachable` and its capsule `missing` within
/// the host timeout; started again, the host is `online` and the capsule `running`, and the
/// events stream said `host.down` then `host.up`.
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_agents_host_goes_unreachable_and_comes_back() {
    let mut c = Cluster::start(1);
    let host = c.agents[0].host_id.clone();
    let events = c.events().await;
    let id = c.capsule_on(&["h0"]).await;
    sh(&c, &id, "echo kept > /home/user/mark").await;
    c.agents[0].kill_9();
    let killed = Instant::now();
    c.wait_host(&host, HostStatus::Unreachable).await;
    c.wait_capsule(&id, "missing").await;
    eprintln!(
        "FIGURE cluster.host_down secs={:.1} host_timeout_secs={HOST_TIMEOUT_SECS}",
        killed.elapsed().as_secs_f64()
    );
    events.wait_for("host.down", &host).await;
    c.agents[0].restart();
    c.wait_host(&host, HostStatus::Online).await;
    c.wait_capsule(&id, "running").await;
    events.wait_for("host.up", &host).await;
    assert_eq!(sh(&c, &id, "cat /home/user/mark").await, "kept");
    c.admin.destroy_capsule(&id).await.unwrap();
}

/// With a host token of 10 s, the agent refreshes its identity by itself at half its lifetime:
/// a new refresh token and certificate in its file, the host stays `online`, and the control
/// plane reaches the agent over the swapped certificate (a capsule is made there).
#[tokio::test(flavor = "multi_thread")]
async fn the_identity_is_refreshed_before_it_runs_out() {
    let c = Cluster::start_with(1, &["--host-token-ttl", "10"]);
    let a = &c.agents[0];
    let first = a.credentials();
    let deadline = Instant::now() + crate::harness::PATIENCE;
    let mut refreshes = 0;
    let mut last = first.clone();
    while refreshes < 3 {
        assert!(Instant::now() < deadline, "no refresh; file: {last}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let now = a.credentials();
        if now["refresh_token"] != last["refresh_token"] {
            assert_ne!(now["cert_pem"], last["cert_pem"], "a new certificate too");
            assert_ne!(now["host_token"], last["host_token"]);
            assert_eq!(now["host_id"], first["host_id"]);
            refreshes += 1;
            last = now;
        }
    }
    assert_eq!(mode(&a.credentials_path()), 0o600);
    let h = c.admin.get_host(&a.host_id).await.unwrap();
    assert_eq!(h.status, HostStatus::Online);
    let id = c.capsule_on(&["h0"]).await;
    assert_eq!(sh(&c, &id, "echo ok").await, "ok");
    c.admin.destroy_capsule(&id).await.unwrap();
}

/// `wrenn host …` against the cluster: what each verb prints and does.
#[tokio::test(flavor = "multi_thread")]
async fn the_host_cli_does_what_its_help_says() {
    let c = Cluster::start(1);
    let host = c.agents[0].host_id.clone();
    let wrenn = |args: &[&str]| {
        let out = std::process::Command::new(crate::harness::bin())
            .arg("host")
            .args(args)
            .env("WRENN_BASE_URL", c.base_url())
            .env("WRENN_API_KEY", &c.up.key)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, _) = wrenn(&["list"]);
    assert_eq!(code, Some(0));
    let line = out.lines().find(|l| l.starts_with(&host)).unwrap();
    assert!(
        line.contains("online") && line.contains(&c.agents[0].address),
        "{out}"
    );
    let (code, out, _) = wrenn(&["get", &host]);
    assert_eq!(code, Some(0));
    assert!(out.contains("machine:") && out.contains("qemu"), "{out}");

    assert_eq!(wrenn(&["tag", &host, "ssd"]).0, Some(0));
    assert!(c
        .admin
        .host_tags(&host)
        .await
        .unwrap()
        .contains(&"ssd".to_string()));
    assert_eq!(wrenn(&["untag", &host, "ssd"]).0, Some(0));
    assert!(!c
        .admin
        .host_tags(&host)
        .await
        .unwrap()
        .contains(&"ssd".to_string()));

    let (code, out, _) = wrenn(&["drain", &host]);
    assert_eq!(code, Some(0), "{out}");
    assert!(c.admin.get_host(&host).await.unwrap().draining);
    assert_eq!(wrenn(&["undrain", &host]).0, Some(0));
    assert!(!c.admin.get_host(&host).await.unwrap().draining);

    let (code, out, _) = wrenn(&["create", "--tag", "later", "--json"]);
    assert_eq!(code, Some(0));
    let made: serde_json::Value = serde_json::from_str(&out).unwrap();
    let pending = made["host"]["id"].as_str().unwrap().to_string();
    assert!(made["registration_token"]
        .as_str()
        .unwrap()
        .starts_with("wrnh_"));
    let (code, out, _) = wrenn(&["token", &pending]);
    assert_eq!(code, Some(0));
    assert!(
        out.contains("registration token: wrnh_") && out.contains("--register"),
        "{out}"
    );
    let (code, _, err) = wrenn(&["token", &host]);
    assert_eq!(code, Some(1), "a registered host gets no new token");
    assert!(err.starts_with("error: "), "{err}");
    let (code, out, _) = wrenn(&["delete", &pending]);
    assert_eq!(code, Some(0));
    assert!(out.contains("deleted"), "{out}");
    let (code, _, err) = wrenn(&["get", &pending]);
    assert_eq!(code, Some(1));
    assert!(err.contains("not_found"), "{err}");
}
