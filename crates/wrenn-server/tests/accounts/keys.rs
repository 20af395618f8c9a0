//! API keys: their lifecycle, their death with their owner's membership, the admin key.

use reqwest::{Method, StatusCode};
use serde_json::json;

use super::{error_code, start, As};

#[tokio::test]
async fn api_key_lifecycle() {
    let s = start().await;
    let ada = s.signup("ada@example.com").await;
    let bob = s.signup("bob@example.com").await;
    // Bob is a plain member of Ada's team.
    let (st, _) = s
        .call(
            Method::POST,
            &format!("/v1/teams/{}/members", ada.team),
            As::User(&ada.token),
            Some(json!({ "email": "bob@example.com" })),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED);

    let (st, made) = s
        .call(
            Method::POST,
            "/v1/api-keys",
            As::User(&ada.token),
            Some(json!({ "name": "ci" })),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{made}");
    let key = made["key"].as_str().unwrap().to_string();
    let id = made["id"].as_str().unwrap().to_string();
    assert!(key.starts_with("wrn_") && key.len() == 36);
    assert_eq!(made["prefix"], &key[..8]);
    assert_eq!(made["created_by"], ada.id.as_str());
    assert!(made["last_used_at"].is_null());

    // Both ways of presenting a key; its use is recorded.
    for who in [As::Key(&key), As::BearerKey(&key)] {
        let (st, _) = s.call(Method::GET, "/v1/api-keys", who, None).await;
        assert_eq!(st, StatusCode::OK);
    }
    let (_, list) = s
        .call(Method::GET, "/v1/api-keys", As::User(&ada.token), None)
        .await;
    let list = list.as_array().unwrap().clone();
    assert_eq!(list.len(), 1);
    let listed = &list[0];
    assert_eq!(listed["id"], id.as_str());
    assert!(listed["last_used_at"].is_string());
    assert!(listed.get("key").is_none() && listed.get("key_hash").is_none());
    assert!(!listed.to_string().contains(&key[8..]));

    // A key of the team may make and delete keys; a plain member may only list them.
    let (other_id, other_key) = s.new_key(As::Key(&key), "from a key").await;
    let bob_here = As::UserIn(&bob.token, &ada.team);
    let (st, list) = s.call(Method::GET, "/v1/api-keys", bob_here, None).await;
    assert_eq!((st, list.as_array().unwrap().len()), (StatusCode::OK, 2));
    let (st, b) = s
        .call(
            Method::POST,
            "/v1/api-keys",
            bob_here,
            Some(json!({ "name": "x" })),
        )
        .await;
    assert_eq!(error_code(st, &b), (403, "forbidden"));
    let (st, b) = s
        .call(
            Method::DELETE,
            &format!("/v1/api-keys/{id}"),
            bob_here,
            None,
        )
        .await;
    assert_eq!(error_code(st, &b), (403, "forbidden"));
    // Bob's own team is his default; his keys there are his business.
    let (st, list) = s
        .call(Method::GET, "/v1/api-keys", As::User(&bob.token), None)
        .await;
    assert_eq!((st, list), (StatusCode::OK, json!([])));

    // Deleted keys stop working at once.
    let (st, _) = s
        .call(
            Method::DELETE,
            &format!("/v1/api-keys/{other_id}"),
            As::Key(&key),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, b) = s
        .call(Method::GET, "/v1/api-keys", As::Key(&other_key), None)
        .await;
    assert_eq!(error_code(st, &b), (401, "unauthorized"));
    let (st, _) = s
        .call(
            Method::DELETE,
            &format!("/v1/api-keys/{id}"),
            As::User(&ada.token),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    for who in [As::Key(&key), As::BearerKey(&key)] {
        let (st, b) = s.call(Method::GET, "/v1/capsules", who, None).await;
        assert_eq!(error_code(st, &b), (401, "unauthorized"));
    }
    for path in [
        format!("/v1/api-keys/{id}"),
        "/v1/api-keys/not-a-key-id".to_string(),
    ] {
        let (st, b) = s
            .call(Method::DELETE, &path, As::User(&ada.token), None)
            .await;
        assert_eq!(error_code(st, &b), (404, "not_found"));
    }
}

/// A key dies with its owner's membership: removing a member (or a member leaving) deletes
/// the keys they own in that team, including keys their keys made, audited; the team's own
/// keys and the other members' keys keep working.
#[tokio::test]
async fn removed_members_keys_stop_working() {
    let s = start().await;
    let ada = s.signup("ada@example.com").await;
    let bob = s.signup("bob@example.com").await;
    let carol = s.signup("carol@example.com").await;
    let team = ada.team.as_str();
    for (email, role) in [("bob@example.com", "admin"), ("carol@example.com", "admin")] {
        let (st, b) = s
            .call(
                Method::POST,
                &format!("/v1/teams/{team}/members"),
                As::User(&ada.token),
                Some(json!({ "email": email, "role": role })),
            )
            .await;
        assert_eq!(st, StatusCode::CREATED, "{b}");
    }
    // The team's own key (no owner), Ada's, Bob's, a key Bob's key made, and Carol's.
    let (_, team_key) =
        s.db.create_api_key(team, "team's own")
            .await
            .map(|(r, k)| (r.id, k))
            .unwrap();
    let (_, ada_key) = s.new_key(As::User(&ada.token), "ada").await;
    let (bob_key_id, bob_key) = s.new_key(As::UserIn(&bob.token, team), "bob").await;
    let (chained_id, chained) = s.new_key(As::Key(&bob_key), "made by bob's key").await;
    let (_, carol_key) = s.new_key(As::UserIn(&carol.token, team), "carol").await;
    let (_, from_team_key) = s
        .new_key(As::Key(&team_key), "made by the team's key")
        .await;
    // Ownership is shown.
    let (_, list) = s
        .call(Method::GET, "/v1/api-keys", As::User(&ada.token), None)
        .await;
    let owner_of = |id: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|k| k["id"] == id)
            .map(|k| k["owner_id"].clone())
            .unwrap()
    };
    assert_eq!(owner_of(&bob_key_id), json!(bob.id));
    assert_eq!(owner_of(&chained_id), json!(bob.id));
    assert_eq!(list.as_array().unwrap().len(), 6);
    assert!(list
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["owner_id"].is_null())
        .all(|k| k["name"] == "team's own" || k["name"] == "made by the team's key"));

    let works = |key: String| {
        let s = &s;
        async move {
            let (st, _) = s
                .call(Method::GET, "/v1/capsules", As::Key(&key), None)
                .await;
            st
        }
    };
    for k in [
        &team_key,
        &ada_key,
        &bob_key,
        &chained,
        &carol_key,
        &from_team_key,
    ] {
        assert_eq!(works(k.clone()).await, StatusCode::OK);
    }

    // Ada removes Bob: his key and the key it made stop working at once.
    let (st, _) = s
        .call(
            Method::DELETE,
            &format!("/v1/teams/{team}/members/{}", bob.id),
            As::User(&ada.token),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    for k in [&bob_key, &chained] {
        let (st, b) = s
            .call(Method::POST, "/v1/capsules", As::Key(k), Some(json!({})))
            .await;
        assert_eq!(error_code(st, &b), (401, "unauthorized"));
    }
    for k in [&team_key, &ada_key, &carol_key, &from_team_key] {
        assert_eq!(works(k.clone()).await, StatusCode::OK);
    }
    // Carol leaves: her key dies too.
    let (st, _) = s
        .call(
            Method::DELETE,
            &format!("/v1/teams/{team}/members/{}", carol.id),
            As::User(&carol.token),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    assert_eq!(works(carol_key.clone()).await, StatusCode::UNAUTHORIZED);
    let (_, list) = s
        .call(Method::GET, "/v1/api-keys", As::User(&ada.token), None)
        .await;
    assert_eq!(list.as_array().unwrap().len(), 3, "{list}");
    // Audited, in the same order as done.
    let (_, log) = s
        .call(Method::GET, "/v1/audit", As::User(&ada.token), None)
        .await;
    let actions: Vec<(String, String)> = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .take(5)
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_string(),
                e["resource"]["id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(actions[0].0, "api_key.delete");
    assert_eq!(
        actions[1],
        ("team.member.remove".to_string(), carol.id.clone())
    );
    let bob_deletions: Vec<&str> = actions[2..4].iter().map(|a| a.1.as_str()).collect();
    assert!(
        bob_deletions.contains(&bob_key_id.as_str())
            && bob_deletions.contains(&chained_id.as_str())
    );
    assert!(actions[2..4].iter().all(|a| a.0 == "api_key.delete"));
    assert_eq!(
        actions[4],
        ("team.member.remove".to_string(), bob.id.clone())
    );
    // Bob, added back, does not get his old keys back.
    let (st, _) = s
        .call(
            Method::POST,
            &format!("/v1/teams/{team}/members"),
            As::User(&ada.token),
            Some(json!({ "email": "bob@example.com" })),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED);
    assert_eq!(works(bob_key).await, StatusCode::UNAUTHORIZED);
}

/// The server's admin key cannot be deleted through the API; the server replaces a key file
/// that is missing or whose key no longer works, deleting the previous admin key.
#[tokio::test]
async fn the_admin_key_is_protected_and_replaced() {
    use std::os::unix::fs::PermissionsExt;
    use wrenn_server::{bootstrap, AdminKey};
    let s = start().await;
    let dir = tempfile::tempdir().unwrap();
    let (key_file, pw_file) = (
        dir.path().join("admin-api-key"),
        dir.path().join("admin-password"),
    );
    let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap().trim().to_string();
    let AdminKey::Made(first) = bootstrap(&s.db, &key_file, &pw_file).await.unwrap() else {
        panic!("the first start makes the admin key");
    };
    assert_eq!(read(&key_file), first);
    for f in [&key_file, &pw_file] {
        assert_eq!(
            std::fs::metadata(f).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    assert_eq!(
        bootstrap(&s.db, &key_file, &pw_file).await.unwrap(),
        AdminKey::Kept
    );
    // Deleting it through the API is refused, with the way out in the message.
    let (_, list) = s
        .call(Method::GET, "/v1/api-keys", As::Key(&first), None)
        .await;
    let id = list[0]["id"].as_str().unwrap().to_string();
    assert!(list[0]["created_by"].is_null() && list[0]["owner_id"].is_null());
    let admin = s.login(wrenn_server::ADMIN_EMAIL, &read(&pw_file)).await;
    for who in [As::Key(&first), As::User(&admin)] {
        let (st, b) = s
            .call(Method::DELETE, &format!("/v1/api-keys/{id}"), who, None)
            .await;
        assert_eq!(error_code(st, &b), (409, "conflict"));
        assert!(
            b["error"]["message"]
                .as_str()
                .unwrap()
                .contains("admin-api-key"),
            "{b}"
        );
    }
    // Other keys of the team are deleted as usual.
    let (other, _) = s.new_key(As::Key(&first), "other").await;
    let (st, _) = s
        .call(
            Method::DELETE,
            &format!("/v1/api-keys/{other}"),
            As::Key(&first),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    // A file whose key does not work (here: damaged) is replaced; the old key is deleted.
    std::fs::write(&key_file, "wrn_not-a-key\n").unwrap();
    let AdminKey::Replaced(second) = bootstrap(&s.db, &key_file, &pw_file).await.unwrap() else {
        panic!("a key file that does not work is replaced");
    };
    assert_eq!(read(&key_file), second);
    let (st, _) = s
        .call(Method::GET, "/v1/capsules", As::Key(&second), None)
        .await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = s
        .call(Method::GET, "/v1/capsules", As::Key(&first), None)
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    // A missing file too.
    std::fs::remove_file(&key_file).unwrap();
    let AdminKey::Replaced(third) = bootstrap(&s.db, &key_file, &pw_file).await.unwrap() else {
        panic!("a missing key file is replaced");
    };
    let (st, _) = s
        .call(Method::GET, "/v1/capsules", As::Key(&third), None)
        .await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = s
        .call(Method::GET, "/v1/capsules", As::Key(&second), None)
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert_eq!(
        bootstrap(&s.db, &key_file, &pw_file).await.unwrap(),
        AdminKey::Kept
    );
    // The replacements are in the team's audit log as the server's own doing.
    let (_, log) = s
        .call(Method::GET, "/v1/audit", As::Key(&third), None)
        .await;
    let by_system = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["actor"]["type"] == "system")
        .count();
    assert_eq!(by_system, 4, "{log}");
}
