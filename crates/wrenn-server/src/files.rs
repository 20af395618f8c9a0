//! `/v1/capsules/{id}/files/*`: reads and writes stream end to end (no size cap, flat memory),
//! plus list, mkdir and remove.

use axum::{
    body::Body,
    extract::{Multipart, Path, State},
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use serde::{Deserialize, Serialize};
use tokio_stream::StreamExt;
use utoipa::ToSchema;
use wrenn_proto::agent::v1::{
    write_file_stream_request::{Part, Start},
    FileRequest, FileType, ListDirRequest, WriteFileStreamRequest,
};

use crate::{
    capsules::lookup::running,
    db::Caller,
    error::{ApiError, ErrorBody, Result},
    responses::{
        AgentFailed, BadRequest, HostUnavailable, InsufficientStorage, Internal, Unauthorized,
    },
    state::AppState,
};

type JsonBody<T> = std::result::Result<Json<T>, axum::extract::rejection::JsonRejection>;

/// A path in the capsule.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PathBody {
    /// Absolute, or relative to the user's home; not empty, no NUL.
    #[schema(
        example = "/home/user/data.csv",
        min_length = 1,
        pattern = r"^[^\x00]+$"
    )]
    path: String,
    /// `list` only: 1 (default) lists the children, 2 adds grandchildren, … (at most 10).
    #[schema(minimum = 1, maximum = 10)]
    #[serde(default, deserialize_with = "depth")]
    depth: Option<u32>,
}

/// `depth`: 1..=10 wherever it is given, as any JSON number with that value (`2` or `2.0`:
/// JSON Schema's `integer` is a number without a fractional part).
fn depth<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Option<u32>, D::Error> {
    match Option::<f64>::deserialize(d)? {
        None => Ok(None),
        Some(f) if f.fract() == 0.0 && (1.0..=10.0).contains(&f) => Ok(Some(f as u32)),
        Some(f) => Err(serde::de::Error::custom(format!(
            "depth must be an integer from 1 to 10, not {f}"
        ))),
    }
}

/// An upload: `path` first, then `file`.
#[derive(Debug, ToSchema)]
pub struct UploadForm {
    /// Where to write (parents are created; an existing file is replaced); not empty, no NUL.
    #[schema(min_length = 1, pattern = r"^[^\x00]+$")]
    pub path: String,
    /// The bytes.
    #[schema(value_type = String, content_media_type = "application/octet-stream")]
    pub file: Vec<u8>,
}

/// The kind of a directory entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EntryType {
    File,
    Directory,
    Symlink,
}

/// A file or directory in a capsule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FileEntry {
    pub name: String,
    pub path: String,
    #[serde(rename = "type")]
    pub kind: EntryType,
    pub size: i64,
    /// Unix mode bits.
    pub mode: u32,
    /// As `ls -l` shows them, e.g. `-rw-r--r--`.
    pub permissions: String,
    pub owner: String,
    pub group: String,
    /// Unix seconds.
    pub modified_at: i64,
    /// A symlink's target, else null.
    #[schema(required = true)]
    pub symlink_target: Option<String>,
}

impl From<wrenn_proto::agent::v1::FileEntry> for FileEntry {
    fn from(e: wrenn_proto::agent::v1::FileEntry) -> FileEntry {
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
}

/// A directory's entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FileList {
    pub entries: Vec<FileEntry>,
}

/// The directory `mkdir` made (or found).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct MadeDir {
    pub entry: FileEntry,
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
    params(("id" = String, Path, description = "Capsule id (`cl-…`)")),
    request_body = PathBody,
    responses(
        (status = 200, description = "The file's bytes", content(("application/octet-stream"))),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, description = "`not_found`: no such capsule or file", body = ErrorBody),
        (status = 409, description = "`invalid_state`: the capsule is not running", body = ErrorBody),
        (status = 500, response = Internal),
        (status = 502, response = AgentFailed),
        (status = 503, response = HostUnavailable),
    )
)]
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

/// Read a file, streamed
///
/// The same as `files/read` (the SDK's `download_stream` calls this one).
#[utoipa::path(
    post,
    path = "/v1/capsules/{id}/files/stream/read",
    operation_id = "read_file_stream",
    tag = "files",
    params(("id" = String, Path, description = "Capsule id (`cl-…`)")),
    request_body = PathBody,
    responses(
        (status = 200, description = "The file's bytes", content(("application/octet-stream"))),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, description = "`not_found`: no such capsule or file", body = ErrorBody),
        (status = 409, description = "`invalid_state`: the capsule is not running", body = ErrorBody),
        (status = 500, response = Internal),
        (status = 502, response = AgentFailed),
        (status = 503, response = HostUnavailable),
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
    params(("id" = String, Path, description = "Capsule id (`cl-…`)")),
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    responses(
        (status = 204, description = "Written"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, description = "`not_found`: no such capsule", body = ErrorBody),
        (status = 409, description = "`invalid_state`: the capsule is not running", body = ErrorBody),
        (status = 500, response = Internal),
        (status = 502, response = AgentFailed),
        (status = 503, response = HostUnavailable),
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

/// Write a file, streamed
///
/// The same as `files/write` (the SDK's `upload_stream` calls this one, chunked).
#[utoipa::path(
    post,
    path = "/v1/capsules/{id}/files/stream/write",
    operation_id = "write_file_stream",
    tag = "files",
    params(("id" = String, Path, description = "Capsule id (`cl-…`)")),
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    responses(
        (status = 204, description = "Written"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, description = "`not_found`: no such capsule", body = ErrorBody),
        (status = 409, description = "`invalid_state`: the capsule is not running", body = ErrorBody),
        (status = 500, response = Internal),
        (status = 502, response = AgentFailed),
        (status = 503, response = HostUnavailable),
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
    params(("id" = String, Path, description = "Capsule id (`cl-…`)")),
    request_body = PathBody,
    responses(
        (status = 200, description = "Its entries", body = FileList),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, description = "`not_found`: no such capsule or directory", body = ErrorBody),
        (status = 409, description = "`invalid_state`: the capsule is not running", body = ErrorBody),
        (status = 500, response = Internal),
        (status = 502, response = AgentFailed),
        (status = 503, response = HostUnavailable),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: JsonBody<PathBody>,
) -> Result<Json<FileList>> {
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
    let entries = listed.entries.into_iter().map(FileEntry::from).collect();
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
    params(("id" = String, Path, description = "Capsule id (`cl-…`)")),
    request_body = PathBody,
    responses(
        (status = 200, description = "The directory", body = MadeDir),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, description = "`not_found`: no such capsule", body = ErrorBody),
        (status = 409, description = "`invalid_state`: the capsule is not running; `conflict`: the path exists", body = ErrorBody),
        (status = 500, response = Internal),
        (status = 502, response = AgentFailed),
        (status = 503, response = HostUnavailable),
        (status = 507, response = InsufficientStorage),
    )
)]
pub async fn mkdir(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: JsonBody<PathBody>,
) -> Result<Json<MadeDir>> {
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
    Ok(Json(MadeDir {
        entry: FileEntry::from(entry),
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
    params(("id" = String, Path, description = "Capsule id (`cl-…`)")),
    request_body = PathBody,
    responses(
        (status = 204, description = "Removed"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, description = "`not_found`: no such capsule or path", body = ErrorBody),
        (status = 409, description = "`invalid_state`: the capsule is not running", body = ErrorBody),
        (status = 500, response = Internal),
        (status = 502, response = AgentFailed),
        (status = 503, response = HostUnavailable),
    )
)]
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
            assert_same_json(&FileEntry::from(e.clone()), old(e.clone()));
            assert_same_json(
                &FileList {
                    entries: vec![FileEntry::from(e.clone())],
                },
                json!({ "entries": [old(e.clone())] }),
            );
            assert_same_json(
                &MadeDir {
                    entry: FileEntry::from(e.clone()),
                },
                json!({ "entry": old(e) }),
            );
        }
    }
}
