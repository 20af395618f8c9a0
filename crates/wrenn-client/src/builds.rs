//! `/v1/builds`: templates built from a recipe or a Dockerfile.

use std::time::Duration;

use reqwest::Method;

use crate::{Client, Result};

pub use wrenn_types::api::builds::{Build, BuildStatus, BuildStep, CreateBuildBody as CreateBuild};

/// A create carries the archive (up to 100 MiB, base64).
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(600);

impl Client {
    /// Queues a build.
    pub async fn create_build(&self, body: &CreateBuild) -> Result<Build> {
        self.typed(
            self.request(Method::POST, &["v1", "builds"])
                .timeout(UPLOAD_TIMEOUT)
                .json(body),
        )
        .await
    }

    /// Queues a platform template's build (platform admins only).
    pub async fn create_platform_build(&self, body: &CreateBuild) -> Result<Build> {
        self.typed(
            self.request(Method::POST, &["v1", "admin", "builds"])
                .timeout(UPLOAD_TIMEOUT)
                .json(body),
        )
        .await
    }

    /// The team's builds, newest first.
    pub async fn list_builds(&self) -> Result<Vec<Build>> {
        self.call(Method::GET, &["v1", "builds"]).await
    }

    pub async fn get_build(&self, id: &str) -> Result<Build> {
        self.call(Method::GET, &["v1", "builds", id]).await
    }

    pub async fn cancel_build(&self, id: &str) -> Result<Build> {
        self.call(Method::POST, &["v1", "builds", id, "cancel"])
            .await
    }
}
