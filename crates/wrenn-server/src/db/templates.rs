//! A team's snapshot templates.

use super::*;
use crate::error::Result;

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct TemplateRow {
    pub id: String,
    pub team_id: String,
    pub name: String,
    /// The template's name on the hosts (team-qualified, so teams never collide).
    pub agent_name: String,
    pub vcpus: i64,
    pub memory_mb: i64,
    pub size_bytes: i64,
    pub source_capsule: String,
    #[sqlx(try_from = "MetadataText")]
    pub metadata: HashMap<String, String>,
    pub created_at: i64,
    /// The host it was made on (others fetch it from there).
    pub host_id: Option<String>,
    /// 1: a platform template (the platform team's, built through `/v1/admin/builds`): every
    /// team sees and uses it; only its own team deletes it.
    pub platform: i64,
    /// `snapshot` (a capsule's memory, disk and processes) or `base` (a build's disk booted
    /// afresh, `builds::runner`). Either way the hosts hold it as a snapshot template.
    pub kind: String,
}

const COLUMNS: &str = "id, team_id, name, agent_name, vcpus, memory_mb, size_bytes, \
    source_capsule, metadata, created_at, host_id, platform, kind";

pub(super) fn template_of(r: &sqlx::any::AnyRow) -> Result<TemplateRow> {
    Ok(sqlx::FromRow::from_row(r)?)
}

impl Db {
    pub async fn insert_template(&self, t: &TemplateRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO templates (id, team_id, name, agent_name, vcpus, memory_mb, size_bytes, \
             source_capsule, metadata, created_at, host_id, platform, kind) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        )
        .bind(&t.id)
        .bind(&t.team_id)
        .bind(&t.name)
        .bind(&t.agent_name)
        .bind(t.vcpus)
        .bind(t.memory_mb)
        .bind(t.size_bytes)
        .bind(&t.source_capsule)
        .bind(serde_json::to_string(&t.metadata).unwrap_or_else(|_| "{}".into()))
        .bind(t.created_at)
        .bind(&t.host_id)
        .bind(t.platform)
        .bind(&t.kind)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn template(&self, team_id: &str, name: &str) -> Result<Option<TemplateRow>> {
        let r = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM templates WHERE team_id = $1 AND name = $2"
        ))
        .bind(team_id)
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        r.as_ref().map(template_of).transpose()
    }

    pub async fn templates(&self, team_id: &str) -> Result<Vec<TemplateRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM templates WHERE team_id = $1 ORDER BY created_at DESC"
        ))
        .bind(team_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(template_of).collect()
    }

    /// The template `name` a team uses: its own, else a platform template.
    pub async fn usable_template(&self, team_id: &str, name: &str) -> Result<Option<TemplateRow>> {
        if let Some(t) = self.template(team_id, name).await? {
            return Ok(Some(t));
        }
        let r = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM templates WHERE platform = 1 AND name = $1 \
             ORDER BY created_at DESC LIMIT 1"
        ))
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        r.as_ref().map(template_of).transpose()
    }

    /// The templates a team sees: its own, then the platform's it does not shadow.
    pub async fn usable_templates(&self, team_id: &str) -> Result<Vec<TemplateRow>> {
        let mut out = self.templates(team_id).await?;
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM templates WHERE platform = 1 AND team_id <> $1 \
             ORDER BY created_at DESC"
        ))
        .bind(team_id)
        .fetch_all(&self.pool)
        .await?;
        for r in &rows {
            let t = template_of(r)?;
            if !out.iter().any(|o| o.name == t.name) {
                out.push(t);
            }
        }
        Ok(out)
    }

    /// Marks the team's template `name` a platform template (a platform build's result).
    pub async fn mark_platform_template(&self, team_id: &str, name: &str) -> Result<()> {
        sqlx::query("UPDATE templates SET platform = 1 WHERE team_id = $1 AND name = $2")
            .bind(team_id)
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn delete_template(&self, team_id: &str, name: &str) -> Result<()> {
        sqlx::query("DELETE FROM templates WHERE team_id = $1 AND name = $2")
            .bind(team_id)
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
