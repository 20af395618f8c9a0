//! Directory watching over inotify: the streamed `WatchDir` and the polled
//! `CreateWatcher`/`GetWatcherEvents`/`RemoveWatcher`.

use std::{
    collections::{HashMap, VecDeque},
    path::PathBuf,
    sync::{Arc, Mutex},
};

use notify::{
    event::{ModifyKind, RenameMode},
    EventKind, RecommendedWatcher, RecursiveMode, Watcher,
};
use wrenn_proto::filesystem::{EventType, FilesystemEvent};

use super::entry::entry_info;
use crate::{
    error::{EnvdError, Result},
    users::UserDb,
};

/// Events a polled watcher keeps between two `GetWatcherEvents` (oldest dropped first).
pub const POLLED_BACKLOG: usize = 10_000;

/// What to watch and how to describe it.
#[derive(Debug, Clone)]
pub struct WatchSpec {
    pub dir: PathBuf,
    pub recursive: bool,
    pub include_entry: bool,
    pub allow_network_mounts: bool,
}

/// Filesystems whose changes inotify cannot see from here.
const NETWORK_FS_MAGICS: &[i64] = &[0x6969, 0x517B, 0xFF53_4D42, 0xFE53_4D42, 0x6573_5546];

fn check_dir(spec: &WatchSpec) -> Result<()> {
    let meta = std::fs::metadata(&spec.dir).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            EnvdError::NotFound(format!("directory '{}' does not exist", spec.dir.display()))
        } else {
            EnvdError::io(format!("stat {}", spec.dir.display()), e)
        }
    })?;
    if !meta.is_dir() {
        return Err(EnvdError::InvalidArgument(format!(
            "'{}' is not a directory",
            spec.dir.display()
        )));
    }
    if !spec.allow_network_mounts {
        if let Ok(fs) = nix::sys::statfs::statfs(&spec.dir) {
            #[allow(clippy::unnecessary_cast)] // c_long is i64 only on 64-bit targets
            let magic = fs.filesystem_type().0 as i64;
            if NETWORK_FS_MAGICS.contains(&magic) {
                return Err(EnvdError::FailedPrecondition(format!(
                    "'{}' is on a network filesystem; set allow_network_mounts to watch it anyway",
                    spec.dir.display()
                )));
            }
        }
    }
    Ok(())
}

fn event_types(kind: &EventKind) -> Option<EventType> {
    match kind {
        EventKind::Create(_) => Some(EventType::Create),
        EventKind::Remove(_) => Some(EventType::Remove),
        EventKind::Modify(ModifyKind::Metadata(_)) => Some(EventType::Chmod),
        EventKind::Modify(ModifyKind::Name(RenameMode::From)) => Some(EventType::Rename),
        EventKind::Modify(ModifyKind::Name(RenameMode::To)) => Some(EventType::Create),
        // inotify reports a rename as From, To and Both; From and To already say it all.
        EventKind::Modify(ModifyKind::Name(_)) => None,
        EventKind::Modify(_) => Some(EventType::Write),
        EventKind::Access(_) | EventKind::Any | EventKind::Other => None,
    }
}

/// Starts watching; each event is described and handed to `sink`.
pub fn watch(
    spec: &WatchSpec,
    sink: impl Fn(FilesystemEvent) + Send + 'static,
) -> Result<RecommendedWatcher> {
    check_dir(spec)?;
    let db = UserDb::load().unwrap_or_default();
    let root = spec.dir.clone();
    let include_entry = spec.include_entry;
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let Ok(event) = res else { return };
        let Some(kind) = event_types(&event.kind) else {
            return;
        };
        for path in &event.paths {
            let Ok(rel) = path.strip_prefix(&root) else {
                continue;
            };
            if rel.as_os_str().is_empty() {
                continue;
            }
            let entry = if include_entry && kind != EventType::Remove && kind != EventType::Rename {
                entry_info(path, &db).ok()
            } else {
                None
            };
            sink(FilesystemEvent {
                name: rel.to_string_lossy().into_owned(),
                r#type: kind as i32,
                entry,
            });
        }
    })
    .map_err(|e| EnvdError::Internal(format!("starting a watcher: {e}")))?;
    let mode = if spec.recursive {
        RecursiveMode::Recursive
    } else {
        RecursiveMode::NonRecursive
    };
    watcher.watch(&spec.dir, mode).map_err(|e| match e.kind {
        notify::ErrorKind::MaxFilesWatch => {
            EnvdError::ResourceExhausted("the inotify watch limit is reached".into())
        }
        notify::ErrorKind::PathNotFound => {
            EnvdError::NotFound(format!("directory '{}' does not exist", spec.dir.display()))
        }
        _ => EnvdError::Internal(format!("watching {}: {e}", spec.dir.display())),
    })?;
    Ok(watcher)
}

struct Polled {
    _watcher: Mutex<RecommendedWatcher>,
    events: Arc<Mutex<VecDeque<FilesystemEvent>>>,
}

/// The polled watchers, by id.
#[derive(Default)]
pub struct Watchers {
    map: Mutex<HashMap<String, Arc<Polled>>>,
}

impl std::fmt::Debug for Watchers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watchers").finish_non_exhaustive()
    }
}

fn new_id() -> String {
    let mut b = [0u8; 12];
    if getrandom::fill(&mut b).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        b[..12].copy_from_slice(&nanos.to_le_bytes()[..12]);
    }
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("w-{hex}")
}

impl Watchers {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Polled>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn create(&self, spec: &WatchSpec) -> Result<String> {
        let events: Arc<Mutex<VecDeque<FilesystemEvent>>> = Arc::default();
        let sink = events.clone();
        let watcher = watch(spec, move |ev| {
            let mut q = sink.lock().unwrap_or_else(|e| e.into_inner());
            if q.len() >= POLLED_BACKLOG {
                q.pop_front();
            }
            q.push_back(ev);
        })?;
        let id = new_id();
        self.lock().insert(
            id.clone(),
            Arc::new(Polled {
                _watcher: Mutex::new(watcher),
                events,
            }),
        );
        Ok(id)
    }

    fn get(&self, id: &str) -> Result<Arc<Polled>> {
        self.lock()
            .get(id)
            .cloned()
            .ok_or_else(|| EnvdError::NotFound(format!("watcher '{id}' not found")))
    }

    /// Everything seen since the last call.
    pub fn drain(&self, id: &str) -> Result<Vec<FilesystemEvent>> {
        let w = self.get(id)?;
        let mut q = w.events.lock().unwrap_or_else(|e| e.into_inner());
        Ok(q.drain(..).collect())
    }

    pub fn remove(&self, id: &str) -> Result<()> {
        self.lock()
            .remove(id)
            .map(|_| ())
            .ok_or_else(|| EnvdError::NotFound(format!("watcher '{id}' not found")))
    }
}
