//! `wrenn host …`: the hosts a control plane places capsules on (platform admins: every
//! `regular` host; a BYOC team's owner or admin: the team's `byoc` hosts).

use clap::{Args, Subcommand};
use wrenn_client::hosts::{CreateHost, Host, HostKind, HostWithToken};

use super::{print::table, print_json, run, Conn, Outcome};

#[derive(Debug, Args)]
pub struct HostArgs {
    #[command(flatten)]
    conn: Conn,
    #[command(subcommand)]
    command: HostCommand,
}

#[derive(Debug, Subcommand)]
enum HostCommand {
    /// Make a host and print its id and registration token (single use, valid one hour):
    /// start its agent with `wrenn agent --register TOKEN --control-plane URL --address
    /// HOST:PORT`.
    Create {
        /// `regular` (platform admins) or `byoc` (a team's own machine).
        #[arg(long = "type", value_name = "TYPE", default_value = "regular", value_parser = ["regular", "byoc"])]
        kind: String,
        /// The team of a `byoc` host (default: yours).
        #[arg(long)]
        team: Option<String>,
        /// A tag (repeat for more): creates with `host_tags` land only on hosts that have them.
        #[arg(long = "tag", value_name = "TAG")]
        tags: Vec<String>,
        #[arg(long)]
        provider: Option<String>,
        #[arg(long)]
        availability_zone: Option<String>,
    },
    /// List the hosts you may see.
    #[command(visible_alias = "ls")]
    List,
    /// Show a host: status, specs, load, tags.
    Get { id: String },
    /// A new registration token for a host that is still `pending` (older ones stop working).
    Token { id: String },
    /// Add a tag to a host.
    Tag { id: String, tag: String },
    /// Remove a tag from a host.
    Untag { id: String, tag: String },
    /// No new capsules on the host; its running capsules stay.
    Drain {
        id: String,
        /// Also move its paused capsules to other hosts (they resume there intact).
        #[arg(long)]
        move_paused: bool,
    },
    /// The host takes new capsules again.
    Undrain { id: String },
    /// Delete a host and revoke its identity: its agent pauses its capsules and stops. A host
    /// with live capsules is refused (they are listed) unless --force, which ends them.
    #[command(visible_alias = "rm")]
    Delete {
        id: String,
        #[arg(long)]
        force: bool,
    },
}

/// `wrenn host …`.
pub async fn host(args: HostArgs) -> i32 {
    run(host_inner(args)).await
}

fn created(conn: &Conn, made: &HostWithToken) -> Outcome {
    if conn.json {
        print_json(made)?;
    } else {
        println!("host:               {}", made.host.id);
        println!("registration token: {}", made.registration_token);
        println!("expires at:         {}", made.expires_at);
        println!(
            "start its agent with: wrenn agent --register {} --control-plane {} --address HOST:PORT",
            made.registration_token,
            conn.base_url.trim_end_matches('/')
        );
    }
    Ok(0)
}

async fn host_inner(args: HostArgs) -> Outcome {
    let conn = &args.conn;
    let client = conn.client()?;
    match args.command {
        HostCommand::Create {
            kind,
            team,
            tags,
            provider,
            availability_zone,
        } => {
            let kind = if kind == "byoc" {
                HostKind::Byoc
            } else {
                HostKind::Regular
            };
            let made = client
                .create_host(&CreateHost {
                    kind: Some(kind),
                    team_id: team,
                    provider,
                    availability_zone,
                    tags,
                })
                .await?;
            return created(conn, &made);
        }
        HostCommand::List => {
            let list = client.list_hosts().await?;
            if conn.json {
                print_json(&list)?;
            } else if list.is_empty() {
                eprintln!("no hosts");
            } else {
                println!("{}", host_table(&list));
            }
        }
        HostCommand::Get { id } => {
            let h = client.get_host(&id).await?;
            if conn.json {
                print_json(&h)?;
            } else {
                println!("{}", host_details(&h));
            }
        }
        HostCommand::Token { id } => {
            let made = client.new_host_token(&id).await?;
            return created(conn, &made);
        }
        HostCommand::Tag { id, tag } => {
            client.add_host_tag(&id, &tag).await?;
            done(conn, &format!("{id}: tag {tag} added"))?;
        }
        HostCommand::Untag { id, tag } => {
            client.remove_host_tag(&id, &tag).await?;
            done(conn, &format!("{id}: tag {tag} removed"))?;
        }
        HostCommand::Drain { id, move_paused } => {
            let r = client.drain_host(&id, move_paused).await?;
            if conn.json {
                print_json(&r)?;
            } else {
                println!("{id} draining: no new capsules");
                for m in &r.moved {
                    println!("moved {m}");
                }
                for (c, why) in &r.failed {
                    println!("not moved {c}: {why}");
                }
                if !r.failed.is_empty() {
                    return Ok(1);
                }
            }
        }
        HostCommand::Undrain { id } => {
            let h = client.undrain_host(&id).await?;
            if conn.json {
                print_json(&h)?;
            } else {
                println!("{id} takes new capsules again");
            }
        }
        HostCommand::Delete { id, force } => {
            if !force {
                let preview = client.host_delete_preview(&id).await?;
                if !preview.capsule_ids.is_empty() {
                    eprintln!(
                        "error: host_has_capsules: {id} has {} live capsule(s): {} (--force ends them)",
                        preview.capsule_ids.len(),
                        preview.capsule_ids.join(", ")
                    );
                    return Ok(1);
                }
            }
            client.delete_host(&id, force).await?;
            done(conn, &format!("{id} deleted"))?;
        }
    }
    Ok(0)
}

fn done(conn: &Conn, text: &str) -> Result<(), super::CliError> {
    if conn.json {
        print_json(&serde_json::json!({}))
    } else {
        println!("{text}");
        Ok(())
    }
}

fn host_table(hosts: &[Host]) -> String {
    let rows: Vec<Vec<String>> = hosts
        .iter()
        .map(|h| {
            vec![
                h.id.clone(),
                h.kind.as_str().into(),
                format!(
                    "{}{}",
                    h.status.as_str(),
                    if h.draining { " (draining)" } else { "" }
                ),
                if h.address.is_empty() {
                    "-".into()
                } else {
                    h.address.clone()
                },
                format!("{}/{}", h.load.running, h.load.paused),
                h.tags.join(","),
            ]
        })
        .collect();
    table(
        &["ID", "TYPE", "STATUS", "ADDRESS", "RUN/PAUSED", "TAGS"],
        &rows,
    )
}

fn host_details(h: &Host) -> String {
    let s = &h.specs;
    let l = &h.load;
    let mut lines = vec![
        format!("id:         {}", h.id),
        format!("type:       {}", h.kind.as_str()),
        format!("status:     {}", h.status.as_str()),
        format!("draining:   {}", h.draining),
        format!(
            "address:    {}",
            if h.address.is_empty() {
                "-"
            } else {
                &h.address
            }
        ),
        format!("tags:       {}", h.tags.join(", ")),
        format!(
            "machine:    {} {} cores, {} MiB RAM, {} MiB disk, {} ({}), slots {}",
            s.arch, s.cpu_cores, s.memory_mb, s.disk_mb, s.vmm, s.accel, s.slots
        ),
        format!(
            "capsules:   {} running, {} paused ({} vCPUs, {} MiB RAM, {} MiB disk given)",
            l.running, l.paused, l.vcpus_reserved, l.memory_mb_reserved, l.disk_mb_reserved
        ),
        format!(
            "used:       {} MiB RAM, {} MiB disk, load {:.2}",
            l.memory_mb_used, l.disk_mb_used, l.cpu_used
        ),
        format!(
            "heartbeat:  {}",
            super::print::when(h.last_heartbeat_at.as_deref())
        ),
    ];
    if let Some(team) = &h.team_id {
        lines.insert(2, format!("team:       {team}"));
    }
    lines.join("\n")
}
