//! Point-in-time restore through the REST API, against a real server with continuous capture
//! on, real SQLite instance databases and a real backup repository: commits are made on a
//! production instance with (time, content hash) recorded after each, then the instance is
//! restored into a sandbox at random moments and each result is compared with the content
//! committed at the last commit at or before that moment. Also: the range with its gaps, and
//! every bad input refused with its specific code and nothing changed.

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::{Method, StatusCode};
use serde_json::json;
use steward_server::testing::TestServer;

mod pitr_support;
use pitr_support::*;

async fn server() -> Api {
    capturing(|_| {}).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restores_to_random_moments_give_exactly_what_was_committed_then() {
    let api = server().await;
    let prod = api.create("crm-prod", "production").await;
    let sand = api.create("crm-sand", "sandbox").await;
    // Capture starts (a chain with its base snapshot) without anyone asking.
    let start = Utc::now();
    let r = api.wait_through("crm-prod", start).await;
    assert_eq!(r["capturing"], true, "{r}");

    // Commits of varied sizes, with (time, content) recorded after each and a pause, so the
    // moments between commits are unambiguous.
    let mut history: Vec<(DateTime<Utc>, String)> = vec![(Utc::now(), content(&prod))];
    let writer = rusqlite::Connection::open(&prod).unwrap();
    writer.busy_timeout(Duration::from_secs(5)).unwrap();
    for i in 0..24u32 {
        let tx = writer.unchecked_transaction().unwrap();
        match i % 4 {
            0 => {
                for j in 0..(1 + i * 7) {
                    tx.execute(
                        "INSERT INTO accounts (name) VALUES (?1)",
                        [format!(
                            "account {i}-{j} {}",
                            "q".repeat((j as usize * 13) % 300)
                        )],
                    )
                    .unwrap();
                }
            }
            1 => {
                tx.execute(
                    "UPDATE accounts SET name = name || ' changed' WHERE id % 3 = ?1",
                    [i64::from(i % 3)],
                )
                .unwrap();
            }
            2 => {
                tx.execute("DELETE FROM accounts WHERE id % 5 = 0", [])
                    .unwrap();
            }
            _ => {
                tx.execute(
                    "INSERT INTO accounts (name) VALUES (?1)",
                    [format!("big {i} {}", "z".repeat(20_000))],
                )
                .unwrap();
            }
        }
        tx.commit().unwrap();
        // Capture looks every 20 ms here and stamps a commit when it reads it: the moment
        // recorded is well after the commit and well before the next one.
        tokio::time::sleep(Duration::from_millis(80)).await;
        history.push((Utc::now(), content(&prod)));
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    // The sandbox's documents are the application's files: a restore never touches them.
    let docs = std::path::PathBuf::from(
        api.get("/api/v1/instances/crm-sand").await["documents_path"]
            .as_str()
            .unwrap(),
    );
    std::fs::create_dir_all(&docs).unwrap();
    std::fs::write(docs.join("contract.pdf"), b"the sandbox's own document").unwrap();
    let end = Utc::now();
    let range = api.wait_through("crm-prod", end).await;
    assert!(
        range["description"].as_str().unwrap().starts_with("from "),
        "{range}"
    );

    // Moments: just before each recorded point's next commit, spread over the history.
    let picks = [1usize, 4, 7, 10, 13, 17, 21, 24];
    for &k in &picks {
        let (at, expected) = &history[k];
        let (s, v) = api
            .call(
                Method::POST,
                "/api/v1/restores",
                Some(json!({"instance": "crm-prod", "at": at.to_rfc3339(), "target": "crm-sand"})),
            )
            .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{v}");
        assert_eq!(v["release"], "9.1");
        let job = api.wait_job(v["job"]["id"].as_i64().unwrap()).await;
        assert_eq!(job["state"], "succeeded", "{job}");
        assert_eq!(
            &content(&sand),
            expected,
            "the sandbox holds what was committed at the last commit at or before {at} (point {k})"
        );
        let sandbox = api.get("/api/v1/instances/crm-sand").await;
        assert_eq!(sandbox["state"], "available", "{sandbox}");
        assert_eq!(
            std::fs::read(docs.join("contract.pdf")).unwrap(),
            b"the sandbox's own document",
            "the documents folder is untouched"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_moments_and_targets_are_refused_and_change_nothing() {
    let api = server().await;
    let prod = api.create("crm-prod", "production").await;
    api.create("crm-prod2", "production").await;
    let sand = api.create("crm-sand", "sandbox").await;
    api.wait_through("crm-prod", Utc::now()).await;
    let before = content(&sand);
    let jobs_before = api.get("/api/v1/jobs").await.as_array().unwrap().len();
    let cases = [
        (
            json!({"instance": "crm-prod", "at": (Utc::now() + chrono::Duration::hours(1)).to_rfc3339(), "target": "crm-sand"}),
            StatusCode::CONFLICT,
            "moment_in_future",
        ),
        (
            json!({"instance": "crm-prod", "at": (Utc::now() - chrono::Duration::days(30)).to_rfc3339(), "target": "crm-sand"}),
            StatusCode::CONFLICT,
            "moment_before_retention",
        ),
        (
            json!({"instance": "crm-prod", "at": (Utc::now() - chrono::Duration::hours(1)).to_rfc3339(), "target": "crm-sand"}),
            StatusCode::CONFLICT,
            "moment_outside_range",
        ),
        (
            json!({"instance": "crm-prod", "at": "yesterday at noon", "target": "crm-sand"}),
            StatusCode::BAD_REQUEST,
            "invalid_time",
        ),
        (
            json!({"instance": "crm-prod", "at": Utc::now().to_rfc3339(), "target": "crm-prod2"}),
            StatusCode::CONFLICT,
            "target_not_sandbox",
        ),
        (
            json!({"instance": "nope", "at": Utc::now().to_rfc3339(), "target": "crm-sand"}),
            StatusCode::NOT_FOUND,
            "unknown_instance",
        ),
    ];
    for (body, status, code) in cases {
        let (s, v) = api
            .call(Method::POST, "/api/v1/restores", Some(body.clone()))
            .await;
        assert_eq!((s, v["code"].as_str()), (status, Some(code)), "{body}: {v}");
        assert!(!v["message"].as_str().unwrap().is_empty());
    }
    // The range is named in a refusal outside it.
    let (_, v) = api
        .call(
            Method::POST,
            "/api/v1/restores",
            Some(json!({"instance": "crm-prod", "at": (Utc::now() - chrono::Duration::hours(1)).to_rfc3339(), "target": "crm-sand"})),
        )
        .await;
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("restorable range of crm-prod: from "),
        "{v}"
    );
    assert_eq!(content(&sand), before, "the sandbox is untouched");
    assert_eq!(
        api.get("/api/v1/jobs").await.as_array().unwrap().len(),
        jobs_before,
        "no job was queued"
    );
    let s = api.get("/api/v1/instances/crm-sand").await;
    assert_eq!(s["state"], "available");
    drop(prod);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_never_captured_is_refused_by_name() {
    let api = Api::new(TestServer::start().await); // capture off
    api.create("crm-prod", "production").await;
    api.create("crm-sand", "sandbox").await;
    let r = api.range("crm-prod").await;
    assert_eq!(r["capturing"], false);
    assert!(r["spans"].as_array().unwrap().is_empty());
    let (s, v) = api
        .call(
            Method::POST,
            "/api/v1/restores",
            Some(json!({"instance": "crm-prod", "at": Utc::now().to_rfc3339(), "target": "crm-sand"})),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["code"], "never_captured", "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_sandbox_ends_its_chain_and_the_range_shows_the_gap() {
    let api = server().await;
    api.create("crm-prod", "production").await;
    api.create("crm-sand", "sandbox").await;
    api.wait_through("crm-sand", Utc::now()).await;
    api.wait_through("crm-prod", Utc::now()).await;
    let at = Utc::now();
    api.wait_through("crm-prod", at).await;
    let (s, v) = api
        .call(
            Method::POST,
            "/api/v1/restores",
            Some(json!({"instance": "crm-prod", "at": at.to_rfc3339(), "target": "crm-sand"})),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let job = api.wait_job(v["job"]["id"].as_i64().unwrap()).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    // Capture of the sandbox started again after the restore, with a new chain.
    let after = Utc::now();
    let r = api.wait_through("crm-sand", after).await;
    let spans = r["spans"].as_array().unwrap();
    assert!(spans.len() >= 2, "{r}");
    let reasons: Vec<&str> = r["gaps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["reason"].as_str().unwrap())
        .collect();
    assert!(
        reasons.contains(&"the instance was restored"),
        "the gap is named: {r}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_drops_whole_chains_older_than_it_and_keeps_the_rest() {
    use std::sync::Arc;
    use steward_core::ManualClock;
    let now = Utc::now();
    let clock = Arc::new(ManualClock::new(now));
    let api = Api::new(
        TestServer::start_with(|c| c.capture_retention_days = 7, Some(clock.clone())).await,
    );
    let db = api.create("crm-prod", "production").await;
    let st = api.srv.state.clone();
    let (old_base, new_base) = tokio::task::spawn_blocking(move || {
        let s = &st.services;
        let inst = s
            .store
            .read(|d| d.instance_by_name("crm-prod"))
            .unwrap()
            .unwrap();
        let base = |label: &str| {
            let mut meta = std::collections::BTreeMap::new();
            meta.insert("kind".to_owned(), label.to_owned());
            s.repo()
                .unwrap()
                .backup_sqlite(std::path::Path::new(&db), meta, &|_| {})
                .unwrap()
                .id
        };
        let (old_base, mid_base, new_base) = (base("old"), base("mid"), base("new"));
        let day = chrono::Duration::days(1);
        for (b, start, through, end) in [
            (
                &old_base,
                now - day * 10,
                now - day * 9,
                Some("Steward was stopped"),
            ),
            (
                &mid_base,
                now - day * 9,
                now - day * 6,
                Some("the instance was restored"),
            ),
            (&new_base, now - day * 6, now, None),
        ] {
            s.store
                .write(|d| {
                    let c = d.open_chain(
                        &steward_store::NewChain {
                            instance_id: inst.id,
                            instance_name: inst.name.clone(),
                            base_repo_id: b.clone(),
                            release: Some("9.1".into()),
                            started_at: start,
                        },
                        "superseded",
                    )?;
                    d.confirm_chain(c.id, through)?;
                    if let Some(r) = end {
                        d.end_chain(c.id, through, r)?;
                    }
                    Ok::<_, steward_store::StoreError>(())
                })
                .unwrap();
        }
        s.expire_and_prune().unwrap();
        let left = s.store.read(|d| d.chains_of(inst.id)).unwrap();
        let bases: Vec<String> = left.iter().map(|c| c.base_repo_id.clone()).collect();
        assert_eq!(
            bases,
            vec![mid_base.clone(), new_base.clone()],
            "the chain wholly before retention went; the one reaching into it stayed whole"
        );
        (old_base, new_base)
    })
    .await
    .unwrap();
    let st = api.srv.state.clone();
    tokio::task::spawn_blocking(move || {
        let s = &st.services;
        assert!(
            matches!(
                s.repo().unwrap().manifest(&old_base),
                Err(steward_repo::RepoError::BackupNotFound(_))
            ),
            "the expired chain's base snapshot is gone from the repository"
        );
        assert!(s.repo().unwrap().manifest(&new_base).is_ok());
    })
    .await
    .unwrap();
    let r = api.range("crm-prod").await;
    assert_eq!(r["spans"].as_array().unwrap().len(), 2, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_to_a_moment_takes_the_release_the_source_ran_then() {
    let api = server().await;
    let (s, v) = api
        .call(
            Method::POST,
            "/api/v1/instances",
            Some(json!({"name": "crm-old", "type": "sandbox", "release": "8.2"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    api.create("crm-sand", "sandbox").await;
    api.wait_through("crm-old", Utc::now()).await;
    let before_update = Utc::now();
    api.wait_through("crm-old", before_update).await;

    // An update to 9.0 ends the chain (the instance is updating) and a new one starts on 9.0.
    let (s, u) = api
        .call(
            Method::POST,
            "/api/v1/instances/crm-old/updates/now",
            Some(json!({"target": "9.0"})),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{u}");
    for _ in 0..1200 {
        let i = api.get("/api/v1/instances/crm-old").await;
        if i["release"] == "9.0" && i["state"] == "available" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The new chain starts (a base snapshot on 9.0) once the instance is available again.
    for _ in 0..400 {
        let r = api.range("crm-old").await;
        if r["spans"].as_array().unwrap().last().unwrap()["release"] == "9.0" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let after_update = Utc::now();
    let r = api.wait_through("crm-old", after_update).await;
    let releases: Vec<&str> = r["spans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["release"].as_str().unwrap())
        .collect();
    assert_eq!(releases.first(), Some(&"8.2"), "{r}");
    assert_eq!(releases.last(), Some(&"9.0"), "{r}");
    assert!(
        r["gaps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["reason"] == "the instance was updated"),
        "{r}"
    );

    for (at, release) in [(before_update, "8.2"), (after_update, "9.0")] {
        let (s, v) = api
            .call(
                Method::POST,
                "/api/v1/restores",
                Some(json!({"instance": "crm-old", "at": at.to_rfc3339(), "target": "crm-sand"})),
            )
            .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{v}");
        assert_eq!(v["release"], release, "{v}");
        let job = api.wait_job(v["job"]["id"].as_i64().unwrap()).await;
        assert_eq!(job["state"], "succeeded", "{job}");
        let sand = api.get("/api/v1/instances/crm-sand").await;
        assert_eq!(
            sand["release"], release,
            "the target takes the release the source ran at {at}"
        );
    }
}
