//! The control plane's state as the server tests build it: one built-in host, reached through
//! `agent` (a fake agent, or [`no_agent`]).

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};
use wrenn_proto::agent::v1::agent_client::AgentClient;
use wrenn_server::{
    accounts::{Accounts, SignupPolicy},
    db::Db,
    pool::HostPool,
    AppState,
};

/// A state on `db` whose built-in host is `agent`.
pub async fn with_agent(db: Db, signup: SignupPolicy, agent: AgentClient<Channel>) -> AppState {
    let state = AppState::new(
        db,
        HostPool::new(None),
        Accounts::new(signup),
        Default::default(),
        "wrenn.test",
    )
    .unwrap();
    wrenn_server::builtin::attach(
        &state,
        "http://127.0.0.1:1",
        agent,
        Duration::from_secs(3600),
    )
    .await
    .unwrap();
    state
}

/// An agent that never answers (nothing listens on its port).
#[allow(dead_code)]
pub fn no_agent() -> AgentClient<Channel> {
    AgentClient::new(Endpoint::from_static("http://127.0.0.1:1").connect_lazy())
}
