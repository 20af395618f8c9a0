//! Teams, members and roles, and what each caller may reach in another team.

use reqwest::{Method, StatusCode};
use serde_json::json;

use super::{error_code, start, As, Case};

#[tokio::test]
async fn teams_members_and_roles() {
    let s = start().await;
    let ada = s.signup("ada@example.com").await;
    let bob = s.signup("bob@example.com").await;
    let carol = s.signup("carol@example.com").await;
    let members = |team: &str| format!("/v1/teams/{team}/members");
    let member = |team: &str, user: &str| format!("/v1/teams/{team}/members/{user}");

    let (st, t) = s
        .call(
            Method::POST,
            "/v1/teams",
            As::User(&ada.token),
            Some(json!({ "name": "research" })),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{t}");
    assert_eq!(t["role"], "owner");
    let team = t["id"].as_str().unwrap().to_string();
    let (_, mine) = s
        .call(Method::GET, "/v1/teams", As::User(&ada.token), None)
        .await;
    let names: Vec<&str> = mine
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ada's team", "research"]);

    // Ada adds Bob as a member.
    let add = |email: &str, role: &str| Some(json!({ "email": email, "role": role }));
    let (st, m) = s
        .call(
            Method::POST,
            &members(&team),
            As::User(&ada.token),
            add("BOB@example.com", "member"),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{m}");
    assert_eq!(m["user_id"], bob.id.as_str());
    assert_eq!(m["role"], "member");
    for (body, want) in [
        (add("bob@example.com", "admin"), (409, "conflict")),
        (add("nobody@example.com", "member"), (404, "not_found")),
        (add("carol@example.com", "owner"), (400, "invalid_request")),
    ] {
        let (st, b) = s
            .call(Method::POST, &members(&team), As::User(&ada.token), body)
            .await;
        assert_eq!(error_code(st, &b), want, "{b}");
    }
    // Bob sees the team and its members, but a member changes nothing.
    let (st, list) = s
        .call(Method::GET, &members(&team), As::User(&bob.token), None)
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(list.as_array().unwrap().len(), 2);
    for (method, path, body) in [
        (
            Method::POST,
            members(&team),
            add("carol@example.com", "member"),
        ),
        (
            Method::PATCH,
            member(&team, &bob.id),
            Some(json!({ "role": "admin" })),
        ),
        (Method::DELETE, member(&team, &ada.id), None),
    ] {
        let (st, b) = s.call(method, &path, As::User(&bob.token), body).await;
        assert_eq!(error_code(st, &b), (403, "forbidden"), "{path}");
    }

    // Ada makes Bob an admin; an admin adds and promotes plain members...
    let role = |r: &str| Some(json!({ "role": r }));
    let (st, m) = s
        .call(
            Method::PATCH,
            &member(&team, &bob.id),
            As::User(&ada.token),
            role("admin"),
        )
        .await;
    assert_eq!((st, m["role"].as_str()), (StatusCode::OK, Some("admin")));
    let (st, _) = s
        .call(
            Method::POST,
            &members(&team),
            As::User(&bob.token),
            add("carol@example.com", "member"),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED);
    let (st, _) = s
        .call(
            Method::PATCH,
            &member(&team, &carol.id),
            As::User(&bob.token),
            role("admin"),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    // ...but never touches admins or owners, nor makes owners.
    for (path, body) in [
        (member(&team, &carol.id), role("member")),
        (member(&team, &ada.id), role("member")),
        (member(&team, &bob.id), role("owner")),
    ] {
        let (st, b) = s
            .call(Method::PATCH, &path, As::User(&bob.token), body)
            .await;
        assert_eq!(error_code(st, &b), (403, "forbidden"), "{path}");
    }
    let (st, b) = s
        .call(
            Method::DELETE,
            &member(&team, &carol.id),
            As::User(&bob.token),
            None,
        )
        .await;
    assert_eq!(error_code(st, &b), (403, "forbidden"));
    // An owner does; Carol, a member again, may leave on her own.
    let (st, _) = s
        .call(
            Method::PATCH,
            &member(&team, &carol.id),
            As::User(&ada.token),
            role("member"),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = s
        .call(
            Method::DELETE,
            &member(&team, &carol.id),
            As::User(&carol.token),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, b) = s
        .call(Method::GET, &members(&team), As::User(&carol.token), None)
        .await;
    assert_eq!(error_code(st, &b), (404, "not_found"));
    // Not a member (any more): 404 for changes too.
    let (st, b) = s
        .call(
            Method::DELETE,
            &member(&team, &carol.id),
            As::User(&ada.token),
            None,
        )
        .await;
    assert_eq!(error_code(st, &b), (404, "not_found"));

    // The last owner can neither step down nor be removed.
    let (st, b) = s
        .call(
            Method::PATCH,
            &member(&team, &ada.id),
            As::User(&ada.token),
            role("admin"),
        )
        .await;
    assert_eq!(error_code(st, &b), (409, "conflict"));
    for who in [&ada, &bob] {
        let (st, b) = s
            .call(
                Method::DELETE,
                &member(&team, &ada.id),
                As::User(&who.token),
                None,
            )
            .await;
        let want = if who.id == ada.id {
            (409, "conflict")
        } else {
            (403, "forbidden")
        };
        assert_eq!(error_code(st, &b), want);
    }
    // Handing over: Bob becomes owner, Ada steps down, Bob removes her.
    let (st, _) = s
        .call(
            Method::PATCH,
            &member(&team, &bob.id),
            As::User(&ada.token),
            role("owner"),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = s
        .call(
            Method::PATCH,
            &member(&team, &ada.id),
            As::User(&ada.token),
            role("admin"),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = s
        .call(
            Method::DELETE,
            &member(&team, &ada.id),
            As::User(&bob.token),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (_, mine) = s
        .call(Method::GET, "/v1/teams", As::User(&ada.token), None)
        .await;
    assert_eq!(mine.as_array().unwrap().len(), 1);
    let (_, list) = s
        .call(Method::GET, &members(&team), As::User(&bob.token), None)
        .await;
    let roles: Vec<(&str, &str)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["email"].as_str().unwrap(), m["role"].as_str().unwrap()))
        .collect();
    assert_eq!(roles, [("bob@example.com", "owner")]);

    // API keys cannot manage teams.
    let (_, key) = s.new_key(As::User(&bob.token), "k").await;
    let (st, b) = s.call(Method::GET, "/v1/teams", As::Key(&key), None).await;
    assert_eq!(error_code(st, &b), (403, "forbidden"));
    let (st, b) = s
        .call(Method::GET, &members(&bob.team), As::Key(&key), None)
        .await;
    assert_eq!(error_code(st, &b), (403, "forbidden"));
}

#[tokio::test]
async fn tenant_matrix() {
    let s = start().await;
    let ada = s.signup("ada@example.com").await; // team A
    let bob = s.signup("bob@example.com").await; // team B
    let (_, a_key) = s.new_key(As::User(&ada.token), "a").await;
    let (b_key_id, b_key) = s.new_key(As::User(&bob.token), "b").await;
    let b = bob.team.as_str();
    let missing_team = "team-0000000000000000000000000";

    // Team A's credentials against team B (and against a team that does not exist: the
    // same answer, so existence never leaks).
    let a_user = As::User(&ada.token);
    let a_key_ = As::Key(&a_key);
    let cases: Vec<Case<'_>> = vec![
        // Reading B's keys, log and capsules by choosing B's team.
        (
            Method::GET,
            "/v1/api-keys".into(),
            As::UserIn(&ada.token, b),
            None,
            (404, "not_found"),
        ),
        (
            Method::GET,
            "/v1/api-keys".into(),
            As::UserIn(&ada.token, missing_team),
            None,
            (404, "not_found"),
        ),
        (
            Method::GET,
            "/v1/api-keys".into(),
            As::UserIn(&a_key, b),
            None,
            (404, "not_found"),
        ),
        (
            Method::GET,
            "/v1/audit".into(),
            As::UserIn(&ada.token, b),
            None,
            (404, "not_found"),
        ),
        (
            Method::GET,
            "/v1/audit".into(),
            As::UserIn(&a_key, b),
            None,
            (404, "not_found"),
        ),
        (
            Method::GET,
            "/v1/capsules".into(),
            As::UserIn(&ada.token, b),
            None,
            (404, "not_found"),
        ),
        (
            Method::POST,
            "/v1/api-keys".into(),
            As::UserIn(&ada.token, b),
            Some(json!({"name": "x"})),
            (404, "not_found"),
        ),
        // Deleting B's key.
        (
            Method::DELETE,
            format!("/v1/api-keys/{b_key_id}"),
            a_user,
            None,
            (404, "not_found"),
        ),
        (
            Method::DELETE,
            format!("/v1/api-keys/{b_key_id}"),
            a_key_,
            None,
            (404, "not_found"),
        ),
        (
            Method::DELETE,
            format!("/v1/api-keys/{b_key_id}"),
            As::UserIn(&ada.token, b),
            None,
            (404, "not_found"),
        ),
        // B's members.
        (
            Method::GET,
            format!("/v1/teams/{b}/members"),
            a_user,
            None,
            (404, "not_found"),
        ),
        (
            Method::GET,
            format!("/v1/teams/{missing_team}/members"),
            a_user,
            None,
            (404, "not_found"),
        ),
        (
            Method::GET,
            format!("/v1/teams/{b}/members"),
            a_key_,
            None,
            (403, "forbidden"),
        ),
        (
            Method::POST,
            format!("/v1/teams/{b}/members"),
            a_user,
            Some(json!({"email": "ada@example.com", "role": "admin"})),
            (404, "not_found"),
        ),
        (
            Method::POST,
            format!("/v1/teams/{b}/members"),
            a_key_,
            Some(json!({"email": "ada@example.com"})),
            (403, "forbidden"),
        ),
        (
            Method::PATCH,
            format!("/v1/teams/{b}/members/{}", bob.id),
            a_user,
            Some(json!({"role": "member"})),
            (404, "not_found"),
        ),
        (
            Method::DELETE,
            format!("/v1/teams/{b}/members/{}", bob.id),
            a_user,
            None,
            (404, "not_found"),
        ),
        (
            Method::DELETE,
            format!("/v1/teams/{b}/members/{}", bob.id),
            a_key_,
            None,
            (403, "forbidden"),
        ),
    ];
    for (method, path, who, body, want) in cases {
        let (st, got) = s.call(method.clone(), &path, who, body).await;
        assert_eq!(error_code(st, &got), want, "{method} {path}: {got}");
        if want.0 == 404 && path.contains("/v1/teams/") {
            let msg = got["error"]["message"].as_str().unwrap();
            assert!(
                msg.starts_with("team ") && msg.ends_with(" not found"),
                "{msg}"
            );
        }
    }

    // Nothing of B's changed: its key works, Bob is still its only member and owner, and its
    // log holds only Bob's own actions.
    let (st, keys) = s
        .call(Method::GET, "/v1/api-keys", As::Key(&b_key), None)
        .await;
    assert_eq!((st, keys.as_array().unwrap().len()), (StatusCode::OK, 1));
    let (_, members) = s
        .call(
            Method::GET,
            &format!("/v1/teams/{b}/members"),
            As::User(&bob.token),
            None,
        )
        .await;
    assert_eq!(members.as_array().unwrap().len(), 1);
    assert_eq!(members[0]["role"], "owner");
    let (_, log) = s
        .call(Method::GET, "/v1/audit", As::Key(&b_key), None)
        .await;
    let entries = log["entries"].as_array().unwrap();
    assert!(!entries.is_empty());
    assert!(
        entries.iter().all(|e| e["actor"]["id"] == bob.id.as_str()),
        "{log}"
    );
    // And A's log shows nothing of B's.
    let (_, log) = s.call(Method::GET, "/v1/audit", a_user, None).await;
    assert!(!log.to_string().contains(&bob.id) && !log.to_string().contains(&b_key_id));

    // B deletes its key: it stops working.
    let (st, _) = s
        .call(
            Method::DELETE,
            &format!("/v1/api-keys/{b_key_id}"),
            As::User(&bob.token),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, got) = s
        .call(Method::GET, "/v1/audit", As::Key(&b_key), None)
        .await;
    assert_eq!(error_code(st, &got), (401, "unauthorized"));
}
