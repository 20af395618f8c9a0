//! filesystem.Filesystem against a real envd on loopback.

mod common;

use std::{os::unix::fs::MetadataExt, time::Duration};

use common::*;
use serde_json::{json, Value};

fn names(entries: &Value) -> Vec<String> {
    entries
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| e["path"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn stat_describes_entries_like_e2b() {
    let envd = Envd::start().await;
    let dir = scratch();
    let file = dir.path().join("f.txt");
    std::fs::write(&file, b"12345").unwrap();
    std::os::unix::fs::symlink(&file, dir.path().join("link")).unwrap();
    std::os::unix::fs::symlink("/nowhere/at/all", dir.path().join("dangling")).unwrap();

    let (status, body) = envd
        .unary(
            "/filesystem.Filesystem/Stat",
            json!({"path": file.to_str().unwrap()}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let e = &body["entry"];
    assert_eq!(e["name"], "f.txt");
    assert_eq!(e["type"], "FILE_TYPE_FILE");
    assert_eq!(e["path"], file.to_str().unwrap());
    assert_eq!(e["size"], "5");
    assert_eq!(e["owner"], "root");
    let mode = std::fs::metadata(&file).unwrap().mode() & 0o777;
    assert_eq!(e["mode"], mode);
    assert!(e["permissions"].as_str().unwrap().starts_with('-'));
    let t = e["modifiedTime"].as_str().expect("RFC 3339 string");
    assert!(t.starts_with("20") && t.contains('T'), "{t}");

    let (_, body) = envd
        .unary(
            "/filesystem.Filesystem/Stat",
            json!({"path": dir.path().join("link").to_str().unwrap()}),
        )
        .await;
    assert_eq!(body["entry"]["isSymlink"], true);
    assert_eq!(body["entry"]["type"], "FILE_TYPE_FILE");
    assert_eq!(body["entry"]["symlinkTarget"], file.to_str().unwrap());
    assert!(body["entry"]["permissions"]
        .as_str()
        .unwrap()
        .starts_with('L'));

    let (_, body) = envd
        .unary(
            "/filesystem.Filesystem/Stat",
            json!({"path": dir.path().join("dangling").to_str().unwrap()}),
        )
        .await;
    assert_eq!(body["entry"]["type"], "FILE_TYPE_SYMLINK");
    assert_eq!(body["entry"]["symlinkTarget"], "/nowhere/at/all");

    let (status, body) = envd
        .unary(
            "/filesystem.Filesystem/Stat",
            json!({"path": "/definitely/not/here"}),
        )
        .await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("/definitely/not/here"));

    // ~ and relative paths resolve under the user's home.
    let (status, body) = envd
        .unary_with(
            "/filesystem.Filesystem/Stat",
            json!({"path": "~"}),
            &[("authorization", &basic("user"))],
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["entry"]["path"], "/home/user");
}

#[tokio::test]
async fn make_dir_move_remove() {
    let envd = Envd::start().await;
    let dir = scratch();
    let deep = dir.path().join("a/b/c");
    let user = [("authorization", basic("user"))];
    let user: Vec<(&str, &str)> = user.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (status, body) = envd
        .unary_with(
            "/filesystem.Filesystem/MakeDir",
            json!({"path": deep.to_str().unwrap()}),
            &user,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["entry"]["type"], "FILE_TYPE_DIRECTORY");
    assert_eq!(body["entry"]["owner"], "user");
    // Parents were created for the user too.
    assert_eq!(
        std::fs::metadata(dir.path().join("a")).unwrap().uid(),
        user_uid()
    );

    let (status, body) = envd
        .unary(
            "/filesystem.Filesystem/MakeDir",
            json!({"path": deep.to_str().unwrap()}),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("already_exists"))
    );
    std::fs::write(dir.path().join("file"), b"x").unwrap();
    let (status, body) = envd
        .unary(
            "/filesystem.Filesystem/MakeDir",
            json!({"path": dir.path().join("file").to_str().unwrap()}),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_argument"))
    );

    let dest = dir.path().join("moved/into/place.txt");
    let (status, body) = envd
        .unary(
            "/filesystem.Filesystem/Move",
            json!({"source": dir.path().join("file").to_str().unwrap(), "destination": dest.to_str().unwrap()}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["entry"]["path"], dest.to_str().unwrap());
    assert_eq!(std::fs::read(&dest).unwrap(), b"x");
    let (status, body) = envd
        .unary(
            "/filesystem.Filesystem/Move",
            json!({"source": dir.path().join("file").to_str().unwrap(), "destination": dest.to_str().unwrap()}),
        )
        .await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));

    let (status, _) = envd
        .unary(
            "/filesystem.Filesystem/Remove",
            json!({"path": dir.path().join("a").to_str().unwrap()}),
        )
        .await;
    assert_eq!(status, 200);
    assert!(!dir.path().join("a").exists());
    // Removing what is not there succeeds, as upstream.
    let (status, _) = envd
        .unary(
            "/filesystem.Filesystem/Remove",
            json!({"path": dir.path().join("a").to_str().unwrap()}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = envd
        .unary("/filesystem.Filesystem/Remove", json!({"path": "/"}))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_argument"))
    );
}

fn user_uid() -> u32 {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    passwd
        .lines()
        .find(|l| l.starts_with("user:"))
        .and_then(|l| l.split(':').nth(2))
        .and_then(|u| u.parse().ok())
        .expect("the test machine has a 'user' account (make deps creates it)")
}

#[tokio::test]
async fn permissions_are_enforced_for_non_root() {
    let envd = Envd::start().await;
    let dir = scratch();
    let locked = dir.path().join("locked");
    std::fs::create_dir(&locked).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o700)).unwrap();
    let (status, body) = envd
        .unary_with(
            "/filesystem.Filesystem/MakeDir",
            json!({"path": locked.join("x").to_str().unwrap()}),
            &[("authorization", &basic("user"))],
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("permission_denied")),
        "{body}"
    );
    let (status, _) = envd
        .unary_with(
            "/filesystem.Filesystem/ListDir",
            json!({"path": locked.to_str().unwrap()}),
            &[("authorization", &basic("user"))],
        )
        .await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn list_dir_with_depth() {
    let envd = Envd::start().await;
    let dir = scratch();
    let root = dir.path();
    std::fs::create_dir_all(root.join("d1/d2/d3")).unwrap();
    std::fs::write(root.join("f0"), b"").unwrap();
    std::fs::write(root.join("d1/f1"), b"").unwrap();
    std::fs::write(root.join("d1/d2/f2"), b"").unwrap();
    std::os::unix::fs::symlink(root.join("d1"), root.join("linkdir")).unwrap();
    let p = |s: &str| root.join(s).to_str().unwrap().to_string();

    let (status, body) = envd
        .unary(
            "/filesystem.Filesystem/ListDir",
            json!({"path": root.to_str().unwrap()}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        names(&body["entries"]),
        vec![p("d1"), p("f0"), p("linkdir")]
    );

    let (_, body) = envd
        .unary(
            "/filesystem.Filesystem/ListDir",
            json!({"path": root.to_str().unwrap(), "depth": 2}),
        )
        .await;
    // Walk order; the symlinked directory is not followed.
    assert_eq!(
        names(&body["entries"]),
        vec![p("d1"), p("d1/d2"), p("d1/f1"), p("f0"), p("linkdir")]
    );
    let link = body["entries"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(link["isSymlink"], true);
    assert_eq!(link["type"], "FILE_TYPE_DIRECTORY");

    let (_, body) = envd
        .unary(
            "/filesystem.Filesystem/ListDir",
            json!({"path": root.to_str().unwrap(), "depth": 10}),
        )
        .await;
    assert_eq!(body["entries"].as_array().unwrap().len(), 7);

    let (status, body) = envd
        .unary("/filesystem.Filesystem/ListDir", json!({"path": p("nope")}))
        .await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));
    let (status, body) = envd
        .unary("/filesystem.Filesystem/ListDir", json!({"path": p("f0")}))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_argument"))
    );
}

#[tokio::test]
async fn watch_dir_streams_events() {
    let envd = Envd::start().await;
    let dir = scratch();
    let root = dir.path().to_path_buf();
    let mut call = envd
        .open_stream(
            "/filesystem.Filesystem/WatchDir",
            json!({"path": root.to_str().unwrap(), "recursive": true, "includeEntry": true}),
            &[],
        )
        .await;
    let first = call.next().await.unwrap();
    assert!(first.get("start").is_some(), "{first}");
    std::fs::create_dir(root.join("sub")).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    std::fs::write(root.join("sub/new.txt"), b"hello").unwrap();
    std::fs::remove_file(root.join("sub/new.txt")).unwrap();
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !seen
        .iter()
        .any(|(n, t): &(String, String)| n == "sub/new.txt" && t == "EVENT_TYPE_REMOVE")
    {
        let Ok(Some(m)) = tokio::time::timeout_at(deadline, call.next()).await else {
            break;
        };
        if let Some(fs) = m.get("filesystem") {
            seen.push((
                fs["name"].as_str().unwrap().to_string(),
                fs["type"].as_str().unwrap().to_string(),
            ));
            if fs["name"] == "sub" && fs["type"] == "EVENT_TYPE_CREATE" {
                assert_eq!(fs["entry"]["type"], "FILE_TYPE_DIRECTORY");
            }
        }
    }
    let has = |n: &str, t: &str| seen.iter().any(|(a, b)| a == n && b == t);
    assert!(has("sub", "EVENT_TYPE_CREATE"), "{seen:?}");
    assert!(has("sub/new.txt", "EVENT_TYPE_CREATE"), "{seen:?}");
    assert!(has("sub/new.txt", "EVENT_TYPE_WRITE"), "{seen:?}");
    assert!(has("sub/new.txt", "EVENT_TYPE_REMOVE"), "{seen:?}");

    let (_, end) = envd
        .stream(
            "/filesystem.Filesystem/WatchDir",
            json!({"path": "/no/such/dir"}),
            &[],
        )
        .await;
    assert_eq!(end["error"]["code"], "not_found");
}

#[tokio::test]
async fn polled_watchers() {
    let envd = Envd::start().await;
    let dir = scratch();
    let (status, body) = envd
        .unary(
            "/filesystem.Filesystem/CreateWatcher",
            json!({"path": dir.path().to_str().unwrap()}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let id = body["watcherId"].as_str().unwrap().to_string();
    std::fs::write(dir.path().join("a.txt"), b"1").unwrap();
    std::fs::rename(dir.path().join("a.txt"), dir.path().join("b.txt")).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, body) = envd
        .unary(
            "/filesystem.Filesystem/GetWatcherEvents",
            json!({"watcherId": id}),
        )
        .await;
    let events: Vec<(String, String)> = body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().into(),
                e["type"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert!(
        events.contains(&("a.txt".into(), "EVENT_TYPE_CREATE".into())),
        "{events:?}"
    );
    assert!(
        events.contains(&("a.txt".into(), "EVENT_TYPE_RENAME".into())),
        "{events:?}"
    );
    assert!(
        events.contains(&("b.txt".into(), "EVENT_TYPE_CREATE".into())),
        "{events:?}"
    );
    // Drained: nothing new now.
    let (_, body) = envd
        .unary(
            "/filesystem.Filesystem/GetWatcherEvents",
            json!({"watcherId": id}),
        )
        .await;
    assert!(body.get("events").is_none() || body["events"].as_array().unwrap().is_empty());
    let (status, _) = envd
        .unary(
            "/filesystem.Filesystem/RemoveWatcher",
            json!({"watcherId": id}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = envd
        .unary(
            "/filesystem.Filesystem/GetWatcherEvents",
            json!({"watcherId": id}),
        )
        .await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));
}
