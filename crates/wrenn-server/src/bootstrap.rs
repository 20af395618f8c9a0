//! The operator's first way in: the admin user, their team and an API key, made on first start
//! and written to private files in the data folder.

use std::path::Path;

use crate::{accounts, db, ApiError, Result};

/// The admin account `wrenn up` makes on first start.
pub const ADMIN_EMAIL: &str = "admin@localhost";

/// What [`bootstrap`] did about the admin key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminKey {
    /// The key in the file works: nothing to do.
    Kept,
    /// First start: the admin user, their team and this key were made.
    Made(String),
    /// The file was missing or its key no longer worked: this new key replaces it (and any
    /// previous admin key of the team is deleted).
    Replaced(String),
}

/// On first start: an admin user (`admin@localhost`, a random password written to
/// `password_file`), their team, and an API key of that team written to `key_file` (both 0600).
/// Later starts keep them. The admin key (no creator) cannot be deleted through the API; when
/// `key_file` is missing or its key no longer works, a new admin key replaces it (the team's
/// previous admin key is deleted), so the operator always has a working key.
pub async fn bootstrap(db: &db::Db, key_file: &Path, password_file: &Path) -> Result<AdminKey> {
    let write = |path: &Path, text: String| {
        write_private(path, &text)
            .map_err(|e| ApiError::Internal(format!("writing {}: {e}", path.display())))
    };
    if let Ok(text) = std::fs::read_to_string(key_file) {
        if db.is_bootstrap_key(text.trim()).await? {
            return Ok(AdminKey::Kept);
        }
    }
    if let Some((admin, _)) = db.user_by_email(ADMIN_EMAIL).await? {
        // The admin's own team: the first one they own.
        let team = db
            .memberships(&admin.id)
            .await?
            .into_iter()
            .find(|m| m.role == db::Role::Owner)
            .ok_or_else(|| {
                ApiError::Internal(format!(
                    "{ADMIN_EMAIL} owns no team, so the admin key cannot be replaced"
                ))
            })?;
        let (_, key) = db.replace_bootstrap_key(&team.team.id).await?;
        write(key_file, format!("{key}\n"))?;
        return Ok(AdminKey::Replaced(key));
    }
    let mut b = [0u8; 18];
    wrenn_types::secret::fill(&mut b)?;
    let password = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, b);
    let hash = accounts::password::hash(password.clone()).await?;
    let (_, team) = db
        .create_user_with_team(ADMIN_EMAIL, "Admin", &hash, "default")
        .await?;
    // The admin's team administers the platform, even when an account signed up first.
    db.set_platform_team(&team.id).await?;
    let (_, key) = db.create_api_key(&team.id, "admin").await?;
    write(password_file, format!("{password}\n"))?;
    write(key_file, format!("{key}\n"))?;
    Ok(AdminKey::Made(key))
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}
