//! What a build ends in ([`kind`]) and its last step ([`Run::finish`]): a snapshot template
//! (the defaults set in the running envd, then `POST /v1/snapshots`'s path) when the build has a
//! healthcheck or starts a process, else a base template: the build capsule's disk flattened
//! and booted afresh by its host with the defaults set in the new envd (agent.v1
//! `SnapshotCapsule` with `fresh`), so nothing of the build's memory or processes is in it.

use std::time::Instant;

use wrenn_proto::agent::v1::{FreshBoot, SetDefaultsRequest};
use wrenn_types::{
    api::templates::{CreateSnapshotBody, TemplateType},
    recipe::{Format, Recipe},
};

use super::{
    runner::{Run, Stop},
    steps::{ARCHIVE_PATH, FILES_DIR},
};
use crate::db::BuildRow;

/// What a build ends in: a snapshot template when it has a healthcheck or starts a process
/// (`START`, `CMD`, `ENTRYPOINT`), which every capsule of it then has running; else a base
/// template (its disk flattened and booted afresh).
pub fn kind(recipe: &Recipe, healthcheck: bool) -> TemplateType {
    if healthcheck || recipe.starts_process() {
        TemplateType::Snapshot
    } else {
        TemplateType::Base
    }
}

/// [`kind`] of a build's row (a snapshot when its text no longer parses).
pub(super) fn kind_of(b: &BuildRow) -> TemplateType {
    let format = if b.format == "dockerfile" {
        Format::Dockerfile
    } else {
        Format::Recipe
    };
    match wrenn_types::recipe::parse(&b.source, format) {
        Ok(r) => {
            let hc = b.healthcheck.is_some() || r.healthcheck.is_some();
            kind(&r, hc)
        }
        Err(_) => TemplateType::Snapshot,
    }
}

impl Run {
    /// The build's files removed, then the template ([`kind`]): a snapshot (the defaults set
    /// in the running envd first) or a base template (the disk flattened and booted afresh,
    /// the defaults set in the new envd).
    pub(super) async fn finish(
        &mut self,
        recipe: &Recipe,
        healthcheck: bool,
    ) -> std::result::Result<(), Stop> {
        let kind = kind(recipe, healthcheck);
        let started = Instant::now();
        let what = match kind {
            TemplateType::Base => "base template",
            TemplateType::Snapshot => "template",
        };
        let at = self.begin("snapshot", 0, &format!("{what} {}", self.row.name));
        self.save().await?;
        // Written out, so the flattened disk has every file.
        self.must(at, format!("rm -rf {FILES_DIR} {ARCHIVE_PATH} && sync"))
            .await?;
        let (env, user, workdir) = (
            self.ctx.set_env.clone().into_iter().collect(),
            self.ctx.default_user().to_owned(),
            self.ctx.default_workdir().to_owned(),
        );
        let capsule_id = self.capsule.clone().unwrap_or_default();
        let fresh = match kind {
            // A fresh envd holds nothing of the base's defaults: the whole environment the
            // steps had (the base's and the `ENV`s), as recorded ones.
            TemplateType::Base => Some(FreshBoot {
                env: self.ctx.env.clone().into_iter().collect(),
                user,
                workdir,
            }),
            TemplateType::Snapshot => {
                let mut agent = self.agent().await?;
                let req = SetDefaultsRequest {
                    capsule_id: capsule_id.clone(),
                    env,
                    user,
                    workdir,
                };
                agent.set_defaults(req).await.map_err(|s| {
                    Stop::Failed(format!("recording the defaults: {}", s.message()))
                })?;
                None
            }
        };
        // The last check for a cancel before the template exists.
        self.save().await?;
        let body = CreateSnapshotBody {
            sandbox_id: capsule_id,
            name: Some(self.row.name.clone()),
        };
        let made =
            crate::snapshots::make(self.state.clone(), self.caller.clone(), true, body, fresh)
                .await
                .map_err(|e| Stop::Failed(format!("the snapshot: {e}")))?;
        if self.row.platform != 0 {
            let (db, team) = (&self.state.db, &self.caller.team_id);
            let marked = db.mark_platform_template(team, &self.row.name).await;
            marked.map_err(|e| Stop::Failed(format!("marking the platform template: {e}")))?;
        }
        self.logs[at].stdout = format!("{} bytes", made.1 .0.size_bytes);
        self.done(at, started);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str, format: Format) -> Recipe {
        wrenn_types::recipe::parse(text, format).unwrap()
    }

    #[test]
    fn a_started_process_or_a_healthcheck_makes_a_snapshot() {
        let plain = parsed("RUN echo hi > /x\nENV A=1\nUSER app\n", Format::Recipe);
        assert_eq!(kind(&plain, false), TemplateType::Base);
        assert_eq!(kind(&plain, true), TemplateType::Snapshot);
        let started = parsed("RUN true\nSTART sleep 100\n", Format::Recipe);
        assert_eq!(kind(&started, false), TemplateType::Snapshot);
        let cmd = parsed(
            "FROM minimal\nRUN true\nCMD [\"sleep\", \"9\"]\n",
            Format::Dockerfile,
        );
        assert_eq!(kind(&cmd, false), TemplateType::Snapshot);
        let entry = parsed("FROM minimal\nENTRYPOINT sleep 9\n", Format::Dockerfile);
        assert_eq!(kind(&entry, false), TemplateType::Snapshot);
        let hc = parsed(
            "FROM minimal\nRUN true\nHEALTHCHECK CMD true\n",
            Format::Dockerfile,
        );
        assert_eq!(kind(&hc, hc.healthcheck.is_some()), TemplateType::Snapshot);
        let none = parsed(
            "FROM minimal\nRUN true\nHEALTHCHECK NONE\n",
            Format::Dockerfile,
        );
        assert_eq!(kind(&none, none.healthcheck.is_some()), TemplateType::Base);
    }
}
