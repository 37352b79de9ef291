//! The directory store against a real SQLite file and a real PostgreSQL server: the same
//! checks for both.
#![allow(clippy::unwrap_used, unreachable_pub)]

use portcullis_scim::filter::parse_filter;
use portcullis_scim::resource::{Normalized, normalize};
use portcullis_scim::schema;
use portcullis_scim::store::{DirectoryStore, LoginKeys, SqlDirectory};
use portcullis_testkit::{PostgresServer, TempDir};
use serde_json::{Value, json};

fn user(body: Value) -> Normalized {
    normalize(&schema::USER, body.as_object().unwrap()).unwrap()
}

fn group(body: Value) -> Normalized {
    normalize(&schema::GROUP, body.as_object().unwrap()).unwrap()
}

async fn exercise(dir: &SqlDirectory) {
    let t = "okta";
    // Create and read back.
    let alice = dir
        .create_user(t, user(json!({"userName": "Alice@Example.com", "externalId": "00u1",
            "name": {"givenName": "Alice"}, "emails": [{"value": "alice@example.com", "type": "work", "primary": true}],
            "title": "Engineer", "active": true,
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "R&D"}})))
        .await
        .unwrap();
    let back = dir.get_user(t, &alice.id).await.unwrap().unwrap();
    assert_eq!(back, alice);
    assert!(dir.get_user(t, "no-such-id").await.unwrap().is_none());
    assert!(
        dir.get_user("other-tenant", &alice.id)
            .await
            .unwrap()
            .is_none(),
        "tenants are separate"
    );

    // userName is unique ignoring case; 409 uniqueness.
    let dup = dir
        .create_user(t, user(json!({"userName": "alice@EXAMPLE.com"})))
        .await
        .unwrap_err();
    assert_eq!((dup.status, dup.scim_type), (409, Some("uniqueness")));
    // Another tenant may reuse it.
    dir.create_user("microsoft", user(json!({"userName": "alice@example.com"})))
        .await
        .unwrap();

    let bob = dir
        .create_user(t, user(json!({"userName": "bob", "emails": [{"value": "Bob@Example.com", "type": "home"}], "active": false})))
        .await
        .unwrap();

    // Filters, translated to SQL.
    let query = |f: &str| parse_filter(f).unwrap();
    let ids = |list: (usize, Vec<portcullis_scim::resource::UserRecord>)| -> Vec<String> {
        list.1.into_iter().map(|u| u.id).collect()
    };
    assert_eq!(
        ids(dir
            .list_users(t, Some(&query(r#"userName eq "ALICE@example.com""#)), 1, 10)
            .await
            .unwrap()),
        vec![alice.id.clone()]
    );
    assert_eq!(
        ids(dir
            .list_users(t, Some(&query(r#"externalId eq "00u1""#)), 1, 10)
            .await
            .unwrap()),
        vec![alice.id.clone()]
    );
    assert!(
        ids(dir
            .list_users(t, Some(&query(r#"externalId eq "00U1""#)), 1, 10)
            .await
            .unwrap())
        .is_empty(),
        "externalId is case-exact"
    );
    assert_eq!(
        ids(dir
            .list_users(
                t,
                Some(&query(
                    r#"emails[type eq "work"].value eq "ALICE@example.com""#
                )),
                1,
                10
            )
            .await
            .unwrap()),
        vec![alice.id.clone()]
    );
    assert_eq!(
        ids(dir
            .list_users(t, Some(&query(r#"emails.value co "bob@""#)), 1, 10)
            .await
            .unwrap()),
        vec![bob.id.clone()]
    );
    assert_eq!(
        ids(dir
            .list_users(t, Some(&query("active eq false")), 1, 10)
            .await
            .unwrap()),
        vec![bob.id.clone()],
        "inactive users stay visible"
    );
    assert_eq!(
        ids(dir
            .list_users(t, Some(&query(r#"name.givenName sw "ali""#)), 1, 10)
            .await
            .unwrap()),
        vec![alice.id.clone()]
    );
    assert_eq!(ids(dir.list_users(t, Some(&query(r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department eq "r&d""#)), 1, 10).await.unwrap()), vec![alice.id.clone()]);
    assert_eq!(
        ids(dir
            .list_users(
                t,
                Some(&query(r#"title pr and not (userName eq "bob")"#)),
                1,
                10
            )
            .await
            .unwrap()),
        vec![alice.id.clone()]
    );
    assert_eq!(
        dir.list_users(t, Some(&query(r#"userName eq "nobody""#)), 1, 10)
            .await
            .unwrap(),
        (0, vec![])
    );

    // Pagination: 1-based, stable order, count=0 gives totals only.
    for i in 0..5 {
        dir.create_user(t, user(json!({"userName": format!("page-{i}")})))
            .await
            .unwrap();
    }
    let (total, first) = dir.list_users(t, None, 1, 3).await.unwrap();
    assert_eq!((total, first.len()), (7, 3));
    assert_eq!(first[0].id, alice.id);
    let (_, second) = dir.list_users(t, None, 4, 3).await.unwrap();
    assert!(second.iter().all(|u| !first.contains(u)));
    assert_eq!(dir.list_users(t, None, 1, 0).await.unwrap(), (7, vec![]));

    // Update is atomic and bumps the version; a failing change stores nothing.
    let (before, after) = dir
        .update_user(t, &bob.id, |u| {
            let mut attrs = u.attributes.clone();
            attrs.insert("active".into(), json!(true));
            Ok(Normalized {
                external_id: u.external_id.clone(),
                attributes: attrs,
                members: vec![],
            })
        })
        .await
        .unwrap()
        .unwrap();
    assert!(!before.active() && after.active());
    assert_eq!(after.version, before.version + 1);
    let err = dir
        .update_user(t, &bob.id, |_| {
            Err(portcullis_scim::error::ScimError::invalid_value("no"))
        })
        .await
        .unwrap_err();
    assert_eq!(err.status, 400);
    assert_eq!(dir.get_user(t, &bob.id).await.unwrap().unwrap(), after);
    // Renaming onto another user's name is refused.
    let clash = dir
        .update_user(t, &bob.id, |u| {
            let mut attrs = u.attributes.clone();
            attrs.insert("userName".into(), json!("alice@example.com"));
            Ok(Normalized {
                external_id: None,
                attributes: attrs,
                members: vec![],
            })
        })
        .await
        .unwrap_err();
    assert_eq!(clash.status, 409);

    // Groups and memberships.
    let ops = dir
        .create_group(t, group(json!({"displayName": "Ops", "externalId": "g-ext", "members": [{"value": alice.id}, {"value": bob.id}]})))
        .await
        .unwrap();
    let read = dir.get_group(t, &ops.id, true).await.unwrap().unwrap();
    assert_eq!(
        read.members
            .iter()
            .map(|m| m.value.clone())
            .collect::<Vec<_>>(),
        vec![alice.id.clone(), bob.id.clone()]
    );
    assert!(
        dir.get_group(t, &ops.id, false)
            .await
            .unwrap()
            .unwrap()
            .members
            .is_empty()
    );
    let bad = dir
        .create_group(
            t,
            group(json!({"displayName": "X", "members": [{"value": "not-a-user"}]})),
        )
        .await
        .unwrap_err();
    assert_eq!(bad.scim_type, Some("invalidValue"));
    assert_eq!(
        dir.user_groups(t, &alice.id).await.unwrap(),
        vec![(ops.id.clone(), "Ops".to_string())]
    );
    let found = dir
        .list_groups(t, Some(&query(r#"displayName eq "ops""#)), 1, 10, false)
        .await
        .unwrap();
    assert_eq!(found.0, 1);
    let with_member = dir
        .list_groups(
            t,
            Some(&query(&format!(r#"members[value eq "{}"]"#, bob.id))),
            1,
            10,
            true,
        )
        .await
        .unwrap();
    assert_eq!(with_member.1[0].members.len(), 2);

    // The login lookup: externalId, then user name, then email, ignoring case.
    let by_ext = dir
        .find_login_user(
            t,
            &LoginKeys {
                external_id: Some("00u1".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (by_ext.id.as_str(), by_ext.active, by_ext.groups.clone()),
        (alice.id.as_str(), true, vec!["Ops".to_string()])
    );
    let by_name = dir
        .find_login_user(
            t,
            &LoginKeys {
                user_names: vec!["BOB".into()],
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_name.id, bob.id);
    let by_email = dir
        .find_login_user(
            t,
            &LoginKeys {
                emails: vec!["bob@example.COM".into()],
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_email.id, bob.id);
    assert!(
        dir.find_login_user(
            t,
            &LoginKeys {
                user_names: vec!["mallory".into()],
                ..Default::default()
            }
        )
        .await
        .unwrap()
        .is_none()
    );

    // Deleting a user removes its memberships.
    dir.delete_user(t, &bob.id).await.unwrap().unwrap();
    assert!(dir.get_user(t, &bob.id).await.unwrap().is_none());
    assert_eq!(
        dir.get_group(t, &ops.id, true)
            .await
            .unwrap()
            .unwrap()
            .members
            .len(),
        1
    );
    assert!(dir.delete_user(t, &bob.id).await.unwrap().is_none());
    dir.delete_group(t, &ops.id).await.unwrap().unwrap();
    assert!(dir.user_groups(t, &alice.id).await.unwrap().is_empty());
    dir.ready().await.unwrap();
}

#[tokio::test]
async fn sqlite_directory() {
    let tmp = TempDir::new("scim-sqlite");
    let url = format!("sqlite://{}", tmp.path().join("directory.db").display());
    let dir = SqlDirectory::open(&url).await.unwrap();
    exercise(&dir).await;
    drop(dir);
    // Data written before a restart is there after it (and migrations are not rerun).
    let again = SqlDirectory::open(&url).await.unwrap();
    assert_eq!(again.list_users("okta", None, 1, 0).await.unwrap().0, 6);
}

#[tokio::test]
#[cfg_attr(not(feature = "e2e"), ignore = "needs PostgreSQL: run scripts/test")]
async fn postgres_directory() {
    let pg = PostgresServer::start();
    let url = pg.database("directory");
    let dir = SqlDirectory::open(&url).await.unwrap();
    exercise(&dir).await;
    drop(dir);
    let again = SqlDirectory::open(&url).await.unwrap();
    assert_eq!(again.list_users("okta", None, 1, 0).await.unwrap().0, 6);
}

#[tokio::test]
#[cfg_attr(not(feature = "e2e"), ignore = "needs PostgreSQL: run scripts/test")]
async fn replicas_migrating_at_once_do_not_collide() {
    let pg = PostgresServer::start();
    let url = pg.database("race");
    let (a, b, c) = tokio::join!(
        SqlDirectory::open(&url),
        SqlDirectory::open(&url),
        SqlDirectory::open(&url)
    );
    for d in [a, b, c] {
        d.expect("open").ready().await.unwrap();
    }
}

#[tokio::test]
async fn a_bad_database_url_is_refused_clearly() {
    let err = SqlDirectory::open("mysql://x").await.err().unwrap();
    assert!(
        err.to_string().contains("sqlite:// or postgres://"),
        "{err}"
    );
}
