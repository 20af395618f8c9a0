//! 1. Exec round trip of `true`: through the agent's gRPC against envd reached directly.

use std::time::Instant;

use anyhow::{ensure, Context, Result};
use tonic::transport::Channel;
use wrenn_agent::envd_client::{self, EnvdClient};
use wrenn_proto::agent::v1::{agent_client::AgentClient, ExecRequest};

use super::{ms, within, Settings, CALL_TIMEOUT};

pub(super) async fn exec_round_trips(
    client: &mut AgentClient<Channel>,
    envd: &EnvdClient,
    id: &str,
    s: &Settings,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let grpc_req = ExecRequest {
        capsule_id: id.into(),
        cmd: "true".into(),
        ..Default::default()
    };
    let envd_req = envd_client::ExecRequest {
        cmd: "true".into(),
        ..Default::default()
    };
    let mut agent_ms = Vec::with_capacity(s.exec_runs);
    let mut direct_ms = Vec::with_capacity(s.exec_runs);
    for i in 0..s.exec_warmup + s.exec_runs {
        // Alternate which side goes first, so that neither always follows the other.
        let order = if i % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        let (mut a, mut d) = (0.0, 0.0);
        for through_agent in order {
            if through_agent {
                let t = Instant::now();
                let out = within(CALL_TIMEOUT, "Exec through the agent", async {
                    Ok(client.exec(grpc_req.clone()).await?.into_inner())
                })
                .await
                .with_context(|| format!("agent exec #{i}"))?;
                a = ms(t.elapsed());
                ensure!(
                    out.exit_code == 0 && out.error.is_empty(),
                    "agent exec #{i}: `true` ended with {} {:?}",
                    out.exit_code,
                    out.error
                );
            } else {
                let t = Instant::now();
                let out = within(CALL_TIMEOUT, "exec straight to envd", async {
                    Ok(envd.exec(&envd_req).await?)
                })
                .await
                .with_context(|| format!("direct exec #{i}"))?;
                d = ms(t.elapsed());
                ensure!(
                    out.exit_code == 0 && out.error.is_none(),
                    "direct exec #{i}: `true` ended with {} {:?}",
                    out.exit_code,
                    out.error
                );
            }
        }
        if i >= s.exec_warmup {
            agent_ms.push(a);
            direct_ms.push(d);
        }
    }
    Ok((agent_ms, direct_ms))
}
