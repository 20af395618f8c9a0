//! The RPC handlers of `filesystem.Filesystem`.

use std::{fs, path::Path, time::Duration};

use futures_util::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use wrenn_proto::filesystem::{
    watch_dir_response::{Event as WEvent, KeepAlive, StartEvent},
    CreateWatcherRequest, CreateWatcherResponse, EntryInfo, GetWatcherEventsRequest,
    GetWatcherEventsResponse, ListDirRequest, ListDirResponse, MakeDirRequest, MakeDirResponse,
    MoveRequest, MoveResponse, RemoveRequest, RemoveResponse, RemoveWatcherRequest,
    RemoveWatcherResponse, StatRequest, StatResponse, WatchDirRequest, WatchDirResponse,
};

use super::{
    entry::{entry_from_meta, entry_info},
    watch::{self, WatchSpec},
};
use crate::{
    auth,
    connect::Call,
    error::{EnvdError, Result},
    paths::{self, Access},
    state::SharedEnvd,
    users::{User, UserDb},
};

const WATCH_KEEPALIVE: Duration = Duration::from_secs(30);
/// Entries one ListDir returns at most.
const MAX_LIST_ENTRIES: usize = 100_000;

fn caller(envd: &SharedEnvd, call: &Call) -> Result<(User, UserDb)> {
    envd.user(auth::basic_user(&call.headers)?.as_deref())
}

fn parent_of(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("/"))
}

pub async fn stat(envd: SharedEnvd, call: Call, req: StatRequest) -> Result<StatResponse> {
    let (user, db) = caller(&envd, &call)?;
    let path = paths::resolve(&req.path, &user)?;
    Ok(StatResponse {
        entry: Some(entry_info(&path, &db)?),
    })
}

pub async fn make_dir(
    envd: SharedEnvd,
    call: Call,
    req: MakeDirRequest,
) -> Result<MakeDirResponse> {
    let (user, db) = caller(&envd, &call)?;
    let path = paths::resolve(&req.path, &user)?;
    match fs::metadata(&path) {
        Ok(m) if m.is_dir() => {
            return Err(EnvdError::AlreadyExists(format!(
                "directory '{}' already exists",
                path.display()
            )))
        }
        Ok(_) => {
            return Err(EnvdError::InvalidArgument(format!(
                "'{}' exists and is not a directory",
                path.display()
            )))
        }
        Err(_) => {}
    }
    paths::create_dirs(&path, &user)?;
    Ok(MakeDirResponse {
        entry: Some(entry_info(&path, &db)?),
    })
}

pub async fn r#move(envd: SharedEnvd, call: Call, req: MoveRequest) -> Result<MoveResponse> {
    let (user, db) = caller(&envd, &call)?;
    let source = paths::resolve(&req.source, &user)?;
    let destination = paths::resolve(&req.destination, &user)?;
    if fs::symlink_metadata(&source).is_err() {
        return Err(EnvdError::NotFound(format!(
            "source '{}' does not exist",
            source.display()
        )));
    }
    if source == Path::new("/") {
        return Err(EnvdError::InvalidArgument("cannot move /".into()));
    }
    paths::require(&user, parent_of(&source), Access::Write)?;
    paths::create_dirs(parent_of(&destination), &user)?;
    paths::require(&user, parent_of(&destination), Access::Write)?;
    fs::rename(&source, &destination).map_err(|e| {
        EnvdError::io(
            format!("moving {} to {}", source.display(), destination.display()),
            e,
        )
    })?;
    Ok(MoveResponse {
        entry: Some(entry_info(&destination, &db)?),
    })
}

fn walk(dir: &Path, depth: u32, db: &UserDb, out: &mut Vec<EntryInfo>) -> Result<()> {
    let mut children: Vec<_> = fs::read_dir(dir)
        .map_err(|e| EnvdError::io(format!("listing {}", dir.display()), e))?
        .filter_map(|e| e.ok())
        .collect();
    children.sort_by_key(|e| e.file_name());
    for child in children {
        if out.len() >= MAX_LIST_ENTRIES {
            return Err(EnvdError::ResourceExhausted(format!(
                "more than {MAX_LIST_ENTRIES} entries; list a smaller depth"
            )));
        }
        let path = child.path();
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue; // removed while listing
        };
        out.push(entry_from_meta(&path, &meta, db));
        if depth > 1 && meta.is_dir() {
            // Unreadable subdirectories are listed but not descended into.
            let _ = walk(&path, depth - 1, db, out);
        }
    }
    Ok(())
}

pub async fn list_dir(
    envd: SharedEnvd,
    call: Call,
    req: ListDirRequest,
) -> Result<ListDirResponse> {
    let (user, db) = caller(&envd, &call)?;
    let path = paths::resolve(&req.path, &user)?;
    let meta = fs::metadata(&path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            EnvdError::NotFound(format!("directory '{}' does not exist", path.display()))
        } else {
            EnvdError::io(format!("stat {}", path.display()), e)
        }
    })?;
    if !meta.is_dir() {
        return Err(EnvdError::InvalidArgument(format!(
            "'{}' is not a directory",
            path.display()
        )));
    }
    paths::require(&user, &path, Access::Read)?;
    let depth = req.depth.max(1);
    let entries = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        walk(&path, depth, &db, &mut out).map(|_| out)
    })
    .await
    .map_err(|e| EnvdError::Internal(format!("listing task failed: {e}")))??;
    Ok(ListDirResponse { entries })
}

pub async fn remove(envd: SharedEnvd, call: Call, req: RemoveRequest) -> Result<RemoveResponse> {
    let (user, _) = caller(&envd, &call)?;
    let path = paths::resolve(&req.path, &user)?;
    if path == Path::new("/") {
        return Err(EnvdError::InvalidArgument("refusing to remove /".into()));
    }
    let meta = match fs::symlink_metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(RemoveResponse {}),
        Err(e) => return Err(EnvdError::io(format!("stat {}", path.display()), e)),
    };
    paths::require(&user, parent_of(&path), Access::Write)?;
    let result = if meta.is_dir() {
        let p = path.clone();
        tokio::task::spawn_blocking(move || fs::remove_dir_all(p))
            .await
            .map_err(|e| EnvdError::Internal(format!("remove task failed: {e}")))?
    } else {
        fs::remove_file(&path)
    };
    match result {
        Ok(()) => Ok(RemoveResponse {}),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(RemoveResponse {}),
        Err(e) => Err(EnvdError::io(format!("removing {}", path.display()), e)),
    }
}

fn watch_spec(
    user: &User,
    path: &str,
    recursive: bool,
    include_entry: bool,
    allow_network_mounts: bool,
) -> Result<WatchSpec> {
    let dir = paths::resolve(path, user)?;
    if dir.exists() {
        paths::require(user, &dir, Access::Read)?;
    }
    Ok(WatchSpec {
        dir,
        recursive,
        include_entry,
        allow_network_mounts,
    })
}

pub async fn watch_dir(
    envd: SharedEnvd,
    call: Call,
    req: WatchDirRequest,
) -> Result<impl Stream<Item = Result<WatchDirResponse>>> {
    let (user, _) = caller(&envd, &call)?;
    let spec = watch_spec(
        &user,
        &req.path,
        req.recursive,
        req.include_entry,
        req.allow_network_mounts,
    )?;
    let (ev_tx, mut ev_rx) = mpsc::channel(4096);
    let watcher = watch::watch(&spec, move |ev| {
        if ev_tx.try_send(ev).is_err() {
            tracing::warn!("watch stream is not keeping up; dropping an event");
        }
    })?;
    let (tx, rx) = mpsc::channel::<Result<WatchDirResponse>>(64);
    tokio::spawn(async move {
        let _watcher = watcher; // watching ends when this task does
        let msg = |e| Ok(WatchDirResponse { event: Some(e) });
        if tx.send(msg(WEvent::Start(StartEvent {}))).await.is_err() {
            return;
        }
        let mut ticker = tokio::time::interval(WATCH_KEEPALIVE);
        ticker.tick().await;
        loop {
            let next = tokio::select! {
                ev = ev_rx.recv() => match ev {
                    Some(ev) => WEvent::Filesystem(ev),
                    None => return,
                },
                _ = ticker.tick() => WEvent::Keepalive(KeepAlive {}),
                _ = tx.closed() => return,
            };
            if tx.send(msg(next)).await.is_err() {
                return;
            }
        }
    });
    Ok(ReceiverStream::new(rx))
}

pub async fn create_watcher(
    envd: SharedEnvd,
    call: Call,
    req: CreateWatcherRequest,
) -> Result<CreateWatcherResponse> {
    let (user, _) = caller(&envd, &call)?;
    let spec = watch_spec(
        &user,
        &req.path,
        req.recursive,
        req.include_entry,
        req.allow_network_mounts,
    )?;
    Ok(CreateWatcherResponse {
        watcher_id: envd.watchers.create(&spec)?,
    })
}

pub async fn get_watcher_events(
    envd: SharedEnvd,
    _call: Call,
    req: GetWatcherEventsRequest,
) -> Result<GetWatcherEventsResponse> {
    Ok(GetWatcherEventsResponse {
        events: envd.watchers.drain(&req.watcher_id)?,
    })
}

pub async fn remove_watcher(
    envd: SharedEnvd,
    _call: Call,
    req: RemoveWatcherRequest,
) -> Result<RemoveWatcherResponse> {
    envd.watchers.remove(&req.watcher_id)?;
    Ok(RemoveWatcherResponse {})
}
