//! `/v1/capsules/{id}/files/*`: reads and writes stream end to end (no size cap, flat memory),
//! plus list, mkdir and remove.

use axum::{
    body::Body,
    extract::{Multipart, Path, State},
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use tokio_stream::StreamExt;
use wrenn_proto::agent::v1::{
    write_file_stream_request::{Part, Start},
    FileRequest, FileType, ListDirRequest, WriteFileStreamRequest,
};

use crate::extract::JsonBody;
use crate::{
    capsules::lookup::running,
    db::Caller,
    error::{ApiError, ErrorBody, Result},
    responses::{CheckedOnHost, InsufficientStorage, NoCapsule, NotRunning},
    state::AppState,
};

pub use wrenn_types::api::files::{EntryType, FileEntry, FileList, MadeDir, PathBody, UploadForm};

/// A directory entry as the agent sends it, as the API shows it.
pub fn file_entry(e: wrenn_proto::agent::v1::FileEntry) -> FileEntry {
    let kind = match FileType::try_from(e.r#type).unwrap_or(FileType::Unspecified) {
        FileType::Directory => EntryType::Directory,
        FileType::Symlink => EntryType::Symlink,
        _ => EntryType::File,
    };
    FileEntry {
        name: e.name,
        path: e.path,
        kind,
        size: e.size,
        mode: e.mode,
        permissions: e.permissions,
        owner: e.owner,
        group: e.group,
        modified_at: e.modified_unix,
        symlink_target: (!e.symlink_target.is_empty()).then_some(e.symlink_target),
    }
}

fn check_path(p: &str) -> Result<()> {
    if p.is_empty() || p.contains('\0') {
        return Err(ApiError::InvalidRequest(
            "path is empty or has a NUL".into(),
        ));
    }
    Ok(())
}

/// Read a file
///
/// The file's bytes, streamed as they come (`files/read` and `files/stream/read` are the same).
#[utoipa::path(
    post,
    path = "/v1/capsules/{id}/files/read",
    operation_id = "read_file",
    tag = "files",
    params(crate::responses::CapsulePath),
    request_body = PathBody,
    responses(
        (status = 200, description = "The file's bytes", content(("application/octet-stream"))),
        CheckedOnHost, NotRunning,
        (status = 404, description = "`not_found`: no such capsule or file", body = ErrorBody),
    )
)]
pub async fn read(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(b): JsonBody<PathBody>,
) -> Result<Response> {
    check_path(&b.path)?;
    let c = running(&state, &caller, &id).await?;
    let mut stream = state
        .agent_for(&c)
        .await?
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

/// Read a file, streamed
///
/// The same as `files/read` (the SDK's `download_stream` calls this one).
#[utoipa::path(
    post,
    path = "/v1/capsules/{id}/files/stream/read",
    operation_id = "read_file_stream",
    tag = "files",
    params(crate::responses::CapsulePath),
    request_body = PathBody,
    responses(
        (status = 200, description = "The file's bytes", content(("application/octet-stream"))),
        CheckedOnHost, NotRunning,
        (status = 404, description = "`not_found`: no such capsule or file", body = ErrorBody),
    )
)]
pub async fn stream_read(
    state: State<AppState>,
    caller: Caller,
    id: Path<String>,
    body: JsonBody<PathBody>,
) -> Result<Response> {
    read(state, caller, id, body).await
}

/// Write a file
///
/// Multipart with `path` first, then `file`, streamed into the capsule as it arrives (no size
/// limit; chunked or with a length). Parents are created; an existing file is replaced only when
/// the upload completes. `files/write` and `files/stream/write` are the same.
#[utoipa::path(
    post,
    path = "/v1/capsules/{id}/files/write",
    operation_id = "write_file",
    tag = "files",
    params(crate::responses::CapsulePath),
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    responses(
        (status = 204, description = "Written"),
        CheckedOnHost, NoCapsule, NotRunning,
        (status = 507, response = InsufficientStorage),
    )
)]
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
                let mut agent = state.agent_for(&c).await?;
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

/// Write a file, streamed
///
/// The same as `files/write` (the SDK's `upload_stream` calls this one, chunked).
#[utoipa::path(
    post,
    path = "/v1/capsules/{id}/files/stream/write",
    operation_id = "write_file_stream",
    tag = "files",
    params(crate::responses::CapsulePath),
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    responses(
        (status = 204, description = "Written"),
        CheckedOnHost, NoCapsule, NotRunning,
        (status = 507, response = InsufficientStorage),
    )
)]
pub async fn stream_write(
    state: State<AppState>,
    caller: Caller,
    id: Path<String>,
    form: Multipart,
) -> Result<StatusCode> {
    write(state, caller, id, form).await
}

/// List a directory
#[utoipa::path(
    post,
    path = "/v1/capsules/{id}/files/list",
    operation_id = "list_files",
    tag = "files",
    params(crate::responses::CapsulePath),
    request_body = PathBody,
    responses(
        (status = 200, description = "Its entries", body = FileList),
        CheckedOnHost, NotRunning,
        (status = 404, description = "`not_found`: no such capsule or directory", body = ErrorBody),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(b): JsonBody<PathBody>,
) -> Result<Json<FileList>> {
    check_path(&b.path)?;
    let depth = b.depth.unwrap_or(1);
    if !(1..=10).contains(&depth) {
        return Err(ApiError::InvalidRequest("depth must be 1..=10".into()));
    }
    let c = running(&state, &caller, &id).await?;
    let listed = state
        .agent_for(&c)
        .await?
        .list_dir(ListDirRequest {
            capsule_id: c.id,
            path: b.path,
            depth,
            user: String::new(),
        })
        .await?
        .into_inner();
    let entries = listed.entries.into_iter().map(file_entry).collect();
    Ok(Json(FileList { entries }))
}

/// Make a directory
///
/// Parents are created too.
#[utoipa::path(
    post,
    path = "/v1/capsules/{id}/files/mkdir",
    operation_id = "make_dir",
    tag = "files",
    params(crate::responses::CapsulePath),
    request_body = PathBody,
    responses(
        (status = 200, description = "The directory", body = MadeDir),
        CheckedOnHost, NoCapsule,
        (status = 409, description = "`invalid_state`: the capsule is not running; `conflict`: the path exists", body = ErrorBody),
        (status = 507, response = InsufficientStorage),
    )
)]
pub async fn mkdir(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(b): JsonBody<PathBody>,
) -> Result<Json<MadeDir>> {
    check_path(&b.path)?;
    let c = running(&state, &caller, &id).await?;
    let entry = state
        .agent_for(&c)
        .await?
        .make_dir(FileRequest {
            capsule_id: c.id,
            path: b.path,
            user: String::new(),
        })
        .await?
        .into_inner();
    Ok(Json(MadeDir {
        entry: file_entry(entry),
    }))
}

/// Remove a file or directory
///
/// Directories are removed with everything in them.
#[utoipa::path(
    post,
    path = "/v1/capsules/{id}/files/remove",
    operation_id = "remove_file",
    tag = "files",
    params(crate::responses::CapsulePath),
    request_body = PathBody,
    responses(
        (status = 204, description = "Removed"),
        CheckedOnHost, NotRunning,
        (status = 404, description = "`not_found`: no such capsule or path", body = ErrorBody),
    )
)]
pub async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(b): JsonBody<PathBody>,
) -> Result<StatusCode> {
    check_path(&b.path)?;
    let c = running(&state, &caller, &id).await?;
    state
        .agent_for(&c)
        .await?
        .remove(FileRequest {
            capsule_id: c.id,
            path: b.path,
            user: String::new(),
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use wrenn_proto::agent::v1::FileEntry as PbEntry;

    use super::*;
    use crate::assert_same_json;

    fn entry(kind: FileType, target: &str) -> PbEntry {
        PbEntry {
            name: "a.txt".into(),
            path: "/home/user/a.txt".into(),
            r#type: kind as i32,
            size: 3,
            mode: 0o644,
            permissions: "-rw-r--r--".into(),
            owner: "user".into(),
            group: "user".into(),
            modified_unix: 1_700_000_000,
            symlink_target: target.into(),
        }
    }

    /// The shape before the types (`entry_json`).
    fn old(e: PbEntry) -> serde_json::Value {
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

    #[test]
    fn entry_shapes_are_unchanged() {
        for e in [
            entry(FileType::File, ""),
            entry(FileType::Directory, ""),
            entry(FileType::Symlink, "/etc/hosts"),
            entry(FileType::Unspecified, ""),
        ] {
            assert_same_json(&file_entry(e.clone()), old(e.clone()));
            assert_same_json(
                &FileList {
                    entries: vec![file_entry(e.clone())],
                },
                json!({ "entries": [old(e.clone())] }),
            );
            assert_same_json(
                &MadeDir {
                    entry: file_entry(e.clone()),
                },
                json!({ "entry": old(e) }),
            );
        }
    }
}
