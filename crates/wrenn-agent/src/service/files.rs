//! Files in a capsule: whole and streamed read/write, list, stat, mkdir, move, remove, and
//! `WatchDir` (streamed inotify events). These go straight to the capsule's envd.

use tokio_stream::{wrappers::ReceiverStream, StreamExt};
use tonic::{Request, Response, Status};
use wrenn_proto::{
    agent::v1::{watch_dir_event, FsEventType, WatchDirEvent, WatchDirRequest},
    agent::v1::{
        write_file_stream_request::Part, FileChunk, FileEntry, FileRequest, FileType,
        ListDirRequest, ListDirResponse, MoveRequest, ReadFileResponse, RemoveResponse,
        WriteFileRequest, WriteFileStreamRequest,
    },
    filesystem,
};

use super::{
    capsule_id, envd_broke, too_large, user_of, AgentService, MAX_WHOLE_FILE, STREAM_CHUNK,
};
use crate::envd_client;

pub(super) fn entry(e: filesystem::EntryInfo) -> FileEntry {
    let kind = match filesystem::FileType::try_from(e.r#type) {
        Ok(filesystem::FileType::File) => FileType::File,
        Ok(filesystem::FileType::Directory) => FileType::Directory,
        Ok(filesystem::FileType::Symlink) => FileType::Symlink,
        _ => FileType::Unspecified,
    };
    FileEntry {
        name: e.name,
        path: e.path,
        r#type: if e.is_symlink {
            FileType::Symlink
        } else {
            kind
        } as i32,
        size: e.size,
        mode: e.mode,
        permissions: e.permissions,
        owner: e.owner,
        group: e.group,
        modified_unix: e.modified_time.map(|t| t.seconds).unwrap_or(0),
        symlink_target: e.symlink_target.unwrap_or_default(),
    }
}

pub(super) fn fs_event_type(kind: &str) -> FsEventType {
    match kind {
        "EVENT_TYPE_CREATE" => FsEventType::Create,
        "EVENT_TYPE_WRITE" => FsEventType::Write,
        "EVENT_TYPE_REMOVE" => FsEventType::Remove,
        "EVENT_TYPE_RENAME" => FsEventType::Rename,
        "EVENT_TYPE_CHMOD" => FsEventType::Chmod,
        _ => FsEventType::Unspecified,
    }
}

pub(super) async fn stat_entry(
    envd: &envd_client::EnvdClient,
    path: &str,
    user: &str,
) -> Result<Response<FileEntry>, Status> {
    let st: filesystem::StatResponse = envd
        .unary(
            "/filesystem.Filesystem/Stat",
            &filesystem::StatRequest { path: path.into() },
            user_of(user),
        )
        .await?;
    Ok(Response::new(entry(st.entry.unwrap_or_default())))
}

pub(super) async fn read_file(
    svc: &AgentService,
    req: Request<FileRequest>,
) -> Result<Response<ReadFileResponse>, Status> {
    let r = req.into_inner();
    let mut resp = svc
        .envd(&r.capsule_id)?
        .read_file_stream(&r.path, user_of(&r.user))
        .await?;
    let mut content = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| envd_broke(format!("reading {}: {}", r.path, e.without_url())))?
    {
        content.extend_from_slice(&chunk);
        if content.len() > MAX_WHOLE_FILE {
            return Err(too_large(format!(
                "{} is larger than {MAX_WHOLE_FILE} bytes; use ReadFileStream",
                r.path
            )));
        }
    }
    Ok(Response::new(ReadFileResponse { content }))
}

pub(super) async fn write_file(
    svc: &AgentService,
    req: Request<WriteFileRequest>,
) -> Result<Response<FileEntry>, Status> {
    let r = req.into_inner();
    let envd = svc.envd(&r.capsule_id)?;
    envd.write_file(&r.path, user_of(&r.user), r.content.into())
        .await?;
    stat_entry(&envd, &r.path, &r.user).await
}

pub(super) async fn read_file_stream(
    svc: &AgentService,
    req: Request<FileRequest>,
) -> Result<Response<ReceiverStream<Result<FileChunk, Status>>>, Status> {
    let r = req.into_inner();
    let mut resp = svc
        .envd(&r.capsule_id)?
        .read_file_stream(&r.path, user_of(&r.user))
        .await?;
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tokio::spawn(async move {
        let mut pending: Vec<u8> = Vec::with_capacity(STREAM_CHUNK);
        loop {
            match resp.chunk().await {
                Ok(Some(c)) => {
                    pending.extend_from_slice(&c);
                    if pending.len() >= STREAM_CHUNK {
                        let data =
                            std::mem::replace(&mut pending, Vec::with_capacity(STREAM_CHUNK));
                        if tx.send(Ok(FileChunk { data })).await.is_err() {
                            return;
                        }
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let _ = tx
                        .send(Err(envd_broke(format!("reading: {}", e.without_url()))))
                        .await;
                    return;
                }
            }
        }
        if !pending.is_empty() {
            let _ = tx.send(Ok(FileChunk { data: pending })).await;
        }
    });
    Ok(Response::new(ReceiverStream::new(rx)))
}

pub(super) async fn write_file_stream(
    svc: &AgentService,
    req: Request<tonic::Streaming<WriteFileStreamRequest>>,
) -> Result<Response<FileEntry>, Status> {
    let mut parts = req.into_inner();
    let start = match parts.next().await {
        Some(Ok(WriteFileStreamRequest {
            part: Some(Part::Start(s)),
        })) => s,
        Some(Err(e)) => return Err(e),
        _ => return Err(Status::invalid_argument("the first message must be start")),
    };
    let id = capsule_id(&start.capsule_id)?;
    let envd = svc.manager.envd(&id)?;
    let body = parts.map(|m| match m {
        Ok(WriteFileStreamRequest {
            part: Some(Part::Data(d)),
        }) => Ok(bytes::Bytes::from(d)),
        Ok(_) => Err(std::io::Error::other("only data may follow start")),
        Err(e) => Err(std::io::Error::other(e.to_string())),
    });
    envd.write_file(
        &start.path,
        user_of(&start.user),
        reqwest::Body::wrap_stream(body),
    )
    .await?;
    stat_entry(&envd, &start.path, &start.user).await
}

pub(super) async fn list_dir(
    svc: &AgentService,
    req: Request<ListDirRequest>,
) -> Result<Response<ListDirResponse>, Status> {
    let r = req.into_inner();
    let list: filesystem::ListDirResponse = svc
        .envd(&r.capsule_id)?
        .unary(
            "/filesystem.Filesystem/ListDir",
            &filesystem::ListDirRequest {
                path: r.path,
                depth: r.depth,
            },
            user_of(&r.user),
        )
        .await?;
    Ok(Response::new(ListDirResponse {
        entries: list.entries.into_iter().map(entry).collect(),
    }))
}

pub(super) async fn stat(
    svc: &AgentService,
    req: Request<FileRequest>,
) -> Result<Response<FileEntry>, Status> {
    let r = req.into_inner();
    let envd = svc.envd(&r.capsule_id)?;
    stat_entry(&envd, &r.path, &r.user).await
}

pub(super) async fn make_dir(
    svc: &AgentService,
    req: Request<FileRequest>,
) -> Result<Response<FileEntry>, Status> {
    let r = req.into_inner();
    let made: filesystem::MakeDirResponse = svc
        .envd(&r.capsule_id)?
        .unary(
            "/filesystem.Filesystem/MakeDir",
            &filesystem::MakeDirRequest { path: r.path },
            user_of(&r.user),
        )
        .await?;
    Ok(Response::new(entry(made.entry.unwrap_or_default())))
}

pub(super) async fn r#move(
    svc: &AgentService,
    req: Request<MoveRequest>,
) -> Result<Response<FileEntry>, Status> {
    let r = req.into_inner();
    let moved: filesystem::MoveResponse = svc
        .envd(&r.capsule_id)?
        .unary(
            "/filesystem.Filesystem/Move",
            &filesystem::MoveRequest {
                source: r.source,
                destination: r.destination,
            },
            user_of(&r.user),
        )
        .await?;
    Ok(Response::new(entry(moved.entry.unwrap_or_default())))
}

pub(super) async fn watch_dir(
    svc: &AgentService,
    req: Request<WatchDirRequest>,
) -> Result<Response<ReceiverStream<Result<WatchDirEvent, Status>>>, Status> {
    let r = req.into_inner();
    let mut events = svc
        .envd(&r.capsule_id)?
        .watch_dir(&r.path, r.recursive, user_of(&r.user))
        .await?;
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        while let Some(ev) = events.recv().await {
            let msg = ev.map_err(Status::from).map(|ev| {
                let event = match ev {
                    envd_client::WatchEvent::Started => {
                        watch_dir_event::Event::Started(watch_dir_event::Started {})
                    }
                    envd_client::WatchEvent::Changed { name, kind } => {
                        watch_dir_event::Event::Fs(watch_dir_event::FsEvent {
                            name,
                            r#type: fs_event_type(&kind) as i32,
                        })
                    }
                };
                WatchDirEvent { event: Some(event) }
            });
            // Dropping `events` when the client goes away ends the watch in envd.
            if tx.send(msg).await.is_err() {
                return;
            }
        }
    });
    Ok(Response::new(ReceiverStream::new(rx)))
}

pub(super) async fn remove(
    svc: &AgentService,
    req: Request<FileRequest>,
) -> Result<Response<RemoveResponse>, Status> {
    let r = req.into_inner();
    let _: filesystem::RemoveResponse = svc
        .envd(&r.capsule_id)?
        .unary(
            "/filesystem.Filesystem/Remove",
            &filesystem::RemoveRequest { path: r.path },
            user_of(&r.user),
        )
        .await?;
    Ok(Response::new(RemoveResponse {}))
}
