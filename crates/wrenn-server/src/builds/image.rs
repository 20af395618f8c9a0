//! `FROM <OCI image>`: the image is pulled on a host the scheduler picks (as for a capsule of
//! `minimal`, whose kernel image templates boot with) by its agent (`ImportImage`, with that
//! host's registry settings, `WRENN_DIR/oci.toml`), which makes and snapshots a base template
//! named after the image's digest (`oci-…`; reused when that image was made there before). The
//! build capsule starts from it on that host, and the image's `Env`, `User` and `WorkingDir`
//! become the build's starting defaults (recorded on the template unless the recipe changes
//! them).

use wrenn_proto::agent::v1::ImportImageRequest;

use super::{
    runner::{Run, Stop},
    steps::Context,
};
use crate::{
    placement::{self, Ask},
    scheduler::Claims,
};

/// What an image's config says a process starts with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageDefaults {
    /// `Env` as `KEY=VALUE`.
    pub env: Vec<String>,
    /// `User` (a name; `name:group` keeps the name; numeric ids are not applied).
    pub user: String,
    pub workdir: String,
}

impl ImageDefaults {
    /// Into the build's context: the environment is recorded on the template, the user and
    /// folder run the steps and are the template's defaults (as Docker has them).
    pub fn apply(&self, ctx: &mut Context) {
        for kv in &self.env {
            if let Some((k, v)) = kv.split_once('=') {
                if !k.is_empty() {
                    ctx.set(k, v.to_owned());
                }
            }
        }
        let user = self.user.split(':').next().unwrap_or_default();
        if !user.is_empty() && !user.bytes().all(|b| b.is_ascii_digit()) {
            ctx.user = user.to_owned();
            ctx.user_set = true;
        }
        if self.workdir.starts_with('/') {
            ctx.workdir = super::steps::normalize(&self.workdir);
            ctx.workdir_set = true;
        }
    }
}

impl Run {
    /// Pulls `reference` on a host and makes its template there (log entry `at`); the
    /// template's name, the host's id and the image's defaults.
    /// The host is chosen among those not `busy` (at their limit of builds) and recorded on
    /// the build before the pull.
    pub(super) async fn import_image(
        &mut self,
        at: usize,
        reference: &str,
        busy: &[String],
        placing: &mut Option<tokio::sync::OwnedMutexGuard<()>>,
    ) -> Result<(String, String, ImageDefaults), Stop> {
        let need = Claims::new(
            self.row.vcpus.max(1) as u64,
            self.row.memory_mb.max(256) as u64,
            self.row.disk_mb.max(2048) as u64,
        );
        let ask = Ask {
            team_id: &self.caller.team_id,
            tags: &[],
            template: "minimal",
            snapshot: false,
            only_host: None,
            except_host: None,
            busy,
            need,
        };
        let placed = placement::place(&self.state.db, &ask)
            .await
            .map_err(|e| Stop::Failed(format!("a host to pull {reference} on: {e}")))?;
        let host = placed.host.clone();
        placed.release().await;
        self.state.db.set_build_host(&self.row.id, &host.id).await?;
        // Recorded: the next build's placement counts this one there.
        placing.take();
        let mut agent = self.state.pool.client(&host)?;
        let import = agent.import_image(ImportImageRequest {
            reference: reference.to_owned(),
        });
        // A cancel drops the call: the agent's side stops with it (its pull's temporaries go
        // with it; the cache keeps only whole blobs and root filesystems).
        let made = tokio::select! {
            made = import => made,
            stop = self.cancelled() => return Err(stop),
        };
        let made = match made {
            Ok(m) => m.into_inner(),
            Err(s) => {
                self.logs[at].stderr = s.message().to_owned();
                return Err(self.failure(at, "pulling the image"));
            }
        };
        self.logs[at].stdout = format!(
            "{} {} as template {}\n",
            if made.cached { "reused" } else { "pulled" },
            made.digest,
            made.template
        );
        // The host's load now lists the new template, so the placement below finds it.
        if let Err(e) = crate::builtin::beat(&self.state, &host.id, agent).await {
            tracing::warn!(host = %host.id, "refreshing the host's templates: {e}");
        }
        Ok((
            made.template,
            host.id,
            ImageDefaults {
                env: made.env,
                user: made.user,
                workdir: made.workdir,
            },
        ))
    }

    /// Resolves once the build is cancelled (looked at every second), or its row is gone.
    async fn cancelled(&self) -> Stop {
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            match self.state.db.build_status(&self.row.id).await {
                Ok(Some(s)) if s == "running" => {}
                Ok(_) => return Stop::Cancelled,
                Err(e) => tracing::warn!(build = %self.row.id, "reading the build's status: {e}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_images_defaults_start_the_build() {
        let mut ctx = Context::from_base("PATH=/bin\0HOME=/root\0", "user", "/home/user");
        ImageDefaults {
            env: vec![
                "PATH=/usr/local/bin:/bin".into(),
                "LANG=C.UTF-8".into(),
                "=x".into(),
            ],
            user: "app:app".into(),
            workdir: "/srv/./app".into(),
        }
        .apply(&mut ctx);
        assert_eq!(ctx.set_env.get("PATH").unwrap(), "/usr/local/bin:/bin");
        assert_eq!(ctx.set_env.get("LANG").unwrap(), "C.UTF-8");
        assert_eq!(ctx.default_user(), "app");
        assert_eq!(ctx.default_workdir(), "/srv/app");
        // Numeric users and relative folders are not applied.
        let mut ctx = Context::from_base("", "user", "/home/user");
        ImageDefaults {
            env: vec![],
            user: "1000".into(),
            workdir: "rel".into(),
        }
        .apply(&mut ctx);
        assert_eq!(ctx.default_user(), "user");
        assert_eq!(ctx.default_workdir(), "/home/user");
        assert_eq!(ctx.user, "root");
    }
}
