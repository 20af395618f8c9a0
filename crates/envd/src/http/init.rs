//! `POST /init`: defaults for every later request, the access token, and the clock.

use std::{collections::BTreeMap, path::PathBuf};

use axum::{
    body::Body,
    extract::State,
    response::{IntoResponse, Response},
};
use http::StatusCode;
use http_body_util::BodyExt;
use serde::Deserialize;

use super::http_error;
use crate::{
    error::{EnvdError, Result},
    state::{AccessToken, SharedEnvd},
    users::UserDb,
};

const MAX_INIT_BODY: usize = 1 << 20;

/// The body of `/init` (camelCase, every field optional).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InitRequest {
    #[serde(default)]
    pub env_vars: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub access_token: Option<String>,
    #[serde(default)]
    pub default_user: Option<String>,
    #[serde(default)]
    pub default_workdir: Option<String>,
    /// Wall-clock time to set (RFC 3339), e.g. after a capsule is resumed.
    #[serde(default)]
    pub timestamp: Option<String>,
}

pub async fn init(State(envd): State<SharedEnvd>, body: Body) -> Response {
    match apply(&envd, body).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => http_error(&e),
    }
}

async fn apply(envd: &SharedEnvd, body: Body) -> Result<()> {
    let bytes = http_body_util::Limited::new(body, MAX_INIT_BODY)
        .collect()
        .await
        .map_err(|e| EnvdError::InvalidArgument(format!("reading /init body: {e}")))?
        .to_bytes();
    let req: InitRequest = if bytes.iter().all(u8::is_ascii_whitespace) {
        InitRequest::default()
    } else {
        serde_json::from_slice(&bytes)
            .map_err(|e| EnvdError::InvalidArgument(format!("invalid /init body: {e}")))?
    };
    if let Some(user) = &req.default_user {
        UserDb::load()?.user(user).map_err(|_| {
            EnvdError::InvalidArgument(format!("default user '{user}' does not exist"))
        })?;
    }
    let workdir = match &req.default_workdir {
        Some(w) if !w.starts_with('/') => {
            return Err(EnvdError::InvalidArgument(format!(
                "default workdir '{w}' must be absolute"
            )))
        }
        Some(w) => Some(PathBuf::from(w)),
        None => None,
    };
    if let Some(env) = &req.env_vars {
        if let Some(k) = env
            .keys()
            .find(|k| k.is_empty() || k.contains('=') || k.contains('\0'))
        {
            return Err(EnvdError::InvalidArgument(format!(
                "invalid environment variable name {k:?}"
            )));
        }
    }
    let when = match &req.timestamp {
        Some(t) => Some(parse_rfc3339(t)?),
        None => None,
    };
    // Validated: now apply.
    envd.update_defaults(|d| {
        if let Some(env) = req.env_vars {
            d.env_vars.extend(env);
        }
        if let Some(user) = req.default_user {
            d.user = user;
        }
        if workdir.is_some() {
            d.workdir = workdir;
        }
    });
    if let Some(token) = req.access_token {
        envd.set_token((!token.is_empty()).then(|| AccessToken::new(token)));
    }
    if let Some(when) = when {
        if envd.config.set_clock {
            set_clock(when)?;
        } else {
            tracing::debug!("ignoring /init timestamp: envd may not set the clock here");
        }
    }
    Ok(())
}

fn parse_rfc3339(t: &str) -> Result<libc::timespec> {
    let ts: pbjson_types::Timestamp =
        serde_json::from_value(serde_json::Value::String(t.into()))
            .map_err(|_| EnvdError::InvalidArgument(format!("timestamp {t:?} is not RFC 3339")))?;
    Ok(libc::timespec {
        tv_sec: ts.seconds,
        tv_nsec: ts.nanos.into(),
    })
}

fn set_clock(ts: libc::timespec) -> Result<()> {
    // SAFETY: clock_settime reads the timespec we pass by reference.
    let rc = unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) };
    if rc != 0 {
        return Err(EnvdError::io(
            "setting the clock",
            std::io::Error::last_os_error(),
        ));
    }
    tracing::info!(seconds = ts.tv_sec, "clock set from /init");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_timestamps() {
        let ts = parse_rfc3339("2026-11-28T12:15:21.5Z").unwrap();
        assert_eq!(ts.tv_nsec, 500_000_000);
        assert!(ts.tv_sec > 1_790_000_000);
        assert!(parse_rfc3339("yesterday").is_err());
    }
}
