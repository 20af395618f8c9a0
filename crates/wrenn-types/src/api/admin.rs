//! The platform admins' views across every team (`/v1/admin/…`).

use serde::Serialize;

/// A user of the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AdminUser {
    pub id: String,
    pub email: String,
    pub name: String,
    /// How many teams they are a member of.
    pub teams: i64,
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub created_at: String,
}

/// A team on the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AdminTeam {
    pub id: String,
    pub name: String,
    pub members: i64,
    /// Its capsules that are not stopped (destroyed).
    pub capsules: i64,
    /// Its snapshot templates.
    pub templates: i64,
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub created_at: String,
}

/// A team's snapshot template, seen by a platform admin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AdminTemplate {
    pub team_id: String,
    pub team_name: String,
    pub name: String,
    pub vcpus: i64,
    pub memory_mb: i64,
    pub size_bytes: i64,
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub created_at: String,
}
