//! `/v1/capsules/{id}/files/*`: reads and writes stream end to end (no size cap, flat memory),
//! plus list, mkdir and remove.

use axum::{
    body::Body,
    extract::{Multipart, Path, State},
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio_stream::StreamExt;
use wrenn_proto::agent::v1::{
    write_file_stream_request::{Part, Start},
    FileEntry, FileRequest, FileType, ListDirRequest, WriteFileStreamRequest,
};

use crate::{
    capsules::running,
    db::Caller,
    error::{ApiError, Result},
    state::AppState,
};

type JsonBody<T> = std::result::Result<Json<T>, axum::extract::rejection::JsonRejection>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathBody {
    path: String,
    depth: Option<u32>,
}

fn check_path(p: &str) -> Result<()> {
    if p.is_empty() || p.contains('\0') {
        return Err(ApiError::InvalidRequest(
            "path is empty or has a NUL".into(),
        ));
    }
    Ok(())
}

fn entry_json(e: FileEntry) -> Value {
    let kind = match FileType::try_from(e.r#type).unwrap_or(FileType::Unspecified) {
        FileType::Directory => "directory",
        FileType::Symlink => "symlink",
        _ => "file",
    };
    json!({
        "name": e.name,
        "path": e.path,
        "type": kind,
        "size": e.size,
        "mode": e.mode,
        "permissions": e.permissions,
        "owner": e.owner,
        "group": e.group,
        "modified_at": e.modified_unix,
        "symlink_target": (!e.symlink_target.is_empty()).then_some(e.symlink_target),
    })
}

/// `files/read` and `files/stream/read`: the file's bytes, streamed as the agent sends them.
pub async fn read(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: JsonBody<PathBody>,
) -> Result<Response> {
    let Json(b) = body?;
    check_path(&b.path)?;
    let c = running(&state, &caller, &id).await?;
    let mut stream = state
        .agent()
        .read_file_stream(FileRequest {
            capsule_id: c.id,
            path: b.path,
            user: String::new(),
        })
        .await?
        .into_inner();
    // The first message says whether the file can be read at all: answer errors properly.
    let first = stream.message().await?;
    let rest = futures_util::stream::unfold(stream, |mut s| async move {
        match s.message().await {
            Ok(Some(chunk)) => Some((Ok::<_, std::io::Error>(bytes::Bytes::from(chunk.data)), s)),
            Ok(None) => None,
            Err(e) => Some((Err(std::io::Error::other(e.message().to_string())), s)),
        }
    });
    let head = tokio_stream::iter(first.map(|c| Ok(bytes::Bytes::from(c.data))));
    Ok((
        [(header::CONTENT_TYPE, "application/octet-stream")],
        Body::from_stream(head.chain(rest)),
    )
        .into_response())
}

/// `files/write` and `files/stream/write`: multipart with `path` first, then `file`, streamed
/// into the capsule as it arrives.
pub async fn write(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    mut form: Multipart,
) -> Result<StatusCode> {
    let c = running(&state, &caller, &id).await?;
    let mut path = None;
    while let Some(mut field) = form.next_field().await? {
        match field.name() {
            Some("path") => {
                let p = field.text().await?;
                check_path(&p)?;
                path = Some(p);
            }
            Some("file") => {
                let Some(path) = path.take() else {
                    return Err(ApiError::InvalidRequest(
                        "the `path` field must come before `file`".into(),
                    ));
                };
                let (tx, rx) = tokio::sync::mpsc::channel::<WriteFileStreamRequest>(4);
                let start = WriteFileStreamRequest {
                    part: Some(Part::Start(Start {
                        capsule_id: c.id.clone(),
                        path,
                        user: String::new(),
                    })),
                };
                let _ = tx.send(start).await;
                let mut agent = state.agent();
                let upload = tokio::spawn(async move {
                    agent
                        .write_file_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
                        .await
                });
                let mut failed = None;
                loop {
                    match field.chunk().await {
                        Ok(Some(chunk)) => {
                            let part = WriteFileStreamRequest {
                                part: Some(Part::Data(chunk.to_vec())),
                            };
                            if tx.send(part).await.is_err() {
                                break; // the agent ended the upload: its answer says why
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            failed = Some(ApiError::from(e));
                            break;
                        }
                    }
                }
                if let Some(e) = failed {
                    // Dropping the sender mid-way fails the upload; the old file stays.
                    upload.abort();
                    return Err(e);
                }
                drop(tx);
                upload
                    .await
                    .map_err(|e| ApiError::Internal(format!("upload task: {e}")))??;
                return Ok(StatusCode::NO_CONTENT);
            }
            _ => {} // other fields are ignored
        }
    }
    Err(ApiError::InvalidRequest(
        "a multipart body with `path` and `file` fields is required".into(),
    ))
}

pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: JsonBody<PathBody>,
) -> Result<Json<Value>> {
    let Json(b) = body?;
    check_path(&b.path)?;
    let depth = b.depth.unwrap_or(1);
    if !(1..=10).contains(&depth) {
        return Err(ApiError::InvalidRequest("depth must be 1..=10".into()));
    }
    let c = running(&state, &caller, &id).await?;
    let listed = state
        .agent()
        .list_dir(ListDirRequest {
            capsule_id: c.id,
            path: b.path,
            depth,
            user: String::new(),
        })
        .await?
        .into_inner();
    let entries: Vec<Value> = listed.entries.into_iter().map(entry_json).collect();
    Ok(Json(json!({ "entries": entries })))
}

pub async fn mkdir(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: JsonBody<PathBody>,
) -> Result<Json<Value>> {
    let Json(b) = body?;
    check_path(&b.path)?;
    let c = running(&state, &caller, &id).await?;
    let entry = state
        .agent()
        .make_dir(FileRequest {
            capsule_id: c.id,
            path: b.path,
            user: String::new(),
        })
        .await?
        .into_inner();
    Ok(Json(json!({ "entry": entry_json(entry) })))
}

pub async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: JsonBody<PathBody>,
) -> Result<StatusCode> {
    let Json(b) = body?;
    check_path(&b.path)?;
    let c = running(&state, &caller, &id).await?;
    state
        .agent()
        .remove(FileRequest {
            capsule_id: c.id,
            path: b.path,
            user: String::new(),
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
