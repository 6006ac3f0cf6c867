//! The Backup & Restore, Work items and Notifications pages with more instances than a select
//! can offer (issue #12, point 5): above 200 instances every instance picker of these pages
//! is a name field, a form sent with a typed name works and an unknown name gets a clear
//! error with nothing changed; the Backup & Restore tab's storage table shows 50 instances a
//! page (`?page=`, `?q=`); and the storage totals (recorded database storage, the backup
//! repository's size, which is kept rather than listed on every view) stay right after
//! backups, deletes and prune.
//!
//! A real server on port 0 with real SQLite instances (or a real PostgreSQL control plane with
//! `STEWARD_TEST_STORE=postgres`), a real backup repository on disk, a manual clock, and the
//! pages fetched and the forms posted over HTTP with a signed-in session.

use std::sync::Arc;
use std::time::{Duration as StdDuration, Instant};

use chrono::{DateTime, Duration, TimeZone, Utc};
use steward_core::ManualClock;
use steward_server::services::backups::REPO_TOTAL_MAX_AGE;
use steward_server::services::{Actor, InstanceListQuery, Services};
use steward_server::testing::TestServer;

mod web_support;
use web_support::{Web, rows, tag_of, text_of};

fn start_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 2, 10, 0, 0).unwrap()
}

async fn server(clock: &Arc<ManualClock>) -> TestServer {
    TestServer::start_with(
        |c| {
            c.system_backup_time = "off".into();
            c.restore_drill_schedule = "off".into();
            c.prune_grace_seconds = 0;
        },
        Some(clock.clone()),
    )
    .await
}

/// Creates `shop-000` … `shop-{n-1}` (sandboxes) and `crm-prod` (production).
async fn fleet(srv: &TestServer, n: usize) {
    let st = srv.state.clone();
    tokio::task::spawn_blocking(move || {
        let s = &st.services;
        s.create_instance(&Actor::system(), "crm-prod", "production", None)
            .unwrap();
        for i in 0..n {
            s.create_instance(&Actor::system(), &format!("shop-{i:03}"), "sandbox", None)
                .unwrap();
        }
    })
    .await
    .unwrap();
}

/// Waits until the server's job runner has finished every job.
fn jobs_done(s: &Services) {
    let deadline = Instant::now() + StdDuration::from_secs(30);
    loop {
        let jobs = s.list_jobs(&Actor::system(), None, None).unwrap();
        if jobs
            .iter()
            .all(|j| !matches!(j.state.as_str(), "queued" | "running"))
        {
            return;
        }
        assert!(Instant::now() < deadline, "jobs still running: {jobs:?}");
        std::thread::sleep(StdDuration::from_millis(20));
    }
}

async fn run_jobs(srv: &TestServer) {
    let st = srv.state.clone();
    tokio::task::spawn_blocking(move || jobs_done(&st.services))
        .await
        .unwrap();
}

fn shops(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("shop-{i:03}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_large_fleet_the_pages_page_and_their_pickers_take_typed_names() {
    let clock = Arc::new(ManualClock::new(start_time()));
    let srv = server(&clock).await;
    let started = Instant::now();
    fleet(&srv, 210).await;
    eprintln!("211 instances in {:.1} s", started.elapsed().as_secs_f64());
    let web = Web::sign_in(&srv).await;
    let s = &srv.state.services;

    // --- Backup & Restore: the storage table, 50 a page, with the fleet's totals -----------
    let first = web.page("/backups").await;
    assert_eq!(
        tag_of(&first, "backups-for"),
        "input",
        "a name field above 200"
    );
    assert!(
        first.contains("Backups of crm-prod"),
        "the first instance by name"
    );
    let mut all = vec!["crm-prod".to_owned()];
    all.extend(shops(0..210));
    assert_eq!(rows(&first, "storage-"), all[0..50]);
    assert!(first.contains("1–50 of 211"), "{first}");
    let pager = &first[first.find("class=\"pager\"").unwrap()..];
    assert!(
        pager[..pager.find("</nav>").unwrap()].contains("instance=crm-prod&amp;page=2\""),
        "{pager}"
    );
    let fleet_bytes = s
        .list_instances(&Actor::system())
        .unwrap()
        .total_storage_bytes;
    assert!(fleet_bytes > 0);
    let second = web.page("/backups?instance=shop-100&page=2").await;
    assert_eq!(rows(&second, "storage-"), all[50..100]);
    assert!(second.contains("Backups of shop-100"));
    assert!(second.contains("51–100 of 211"));
    let last = web.page("/backups?page=5").await;
    assert_eq!(rows(&last, "storage-"), all[200..211]);
    let found = web.page("/backups?q=SHOP-20").await;
    assert_eq!(rows(&found, "storage-"), shops(200..210));
    assert!(found.contains("1–10 of 10 matching “SHOP-20”"), "{found}");
    let past = web.page("/backups?page=9").await;
    assert!(rows(&past, "storage-").is_empty());
    assert!(past.contains("No instances on this page."));
    assert!(past.contains("class=\"pager\""), "the pager is still there");
    let (status, junk) = web.get("/backups?page=two").await;
    assert_eq!(status, 400);
    assert!(junk.contains("Page must be a whole number"), "{junk}");

    // --- New backup of a typed name; an unknown name changes nothing ----------------------
    let (status, location, _) = web
        .post(
            "/backups?instance=shop-150",
            "/backups/new",
            &[("instance", "shop-150"), ("label", "typed"), ("notes", "")],
        )
        .await;
    assert_eq!(status, 303);
    assert_eq!(location.as_deref(), Some("/backups?instance=shop-150"));
    let (status, _, html) = web
        .post(
            "/backups",
            "/backups/new",
            &[("instance", "shop-999"), ("label", "typo"), ("notes", "")],
        )
        .await;
    assert_eq!(status, 404);
    assert!(html.contains("There is no instance named"), "{html}");
    assert_eq!(tag_of(&html, "backups-for"), "input");
    run_jobs(&srv).await;
    let backups = s.list_backups(&Actor::system(), "shop-150").unwrap();
    assert_eq!(backups.len(), 1);
    assert_eq!(backups[0].status, "completed");
    let (_, html) = web.get("/backups?instance=shop-999").await;
    assert!(html.contains("There is no instance named"), "{html}");

    // The storage table shows the backup on its row; the totals are the fleet's.
    let row = web.page("/backups?instance=shop-150&page=4").await;
    let cells = row.split("<tr id=\"storage-shop-150\"").nth(1).unwrap();
    let cells = &cells[..cells.find("</tr>").unwrap()];
    assert!(
        cells.contains("<td class=\"num\">1</td>"),
        "one backup: {cells}"
    );
    let storage = s.storage(&Actor::system()).unwrap();
    assert_eq!(storage.instances.len(), 211, "the API lists every instance");
    assert_eq!(
        storage.total_database_bytes,
        s.list_instances(&Actor::system())
            .unwrap()
            .total_storage_bytes,
        "the recorded storage, as the Instances tab counts it"
    );
    let mine = storage
        .instances
        .iter()
        .find(|i| i.name == "shop-150")
        .unwrap();
    assert_eq!(
        (mine.backup_count, mine.backup_bytes),
        (1, backups[0].stored_bytes.unwrap())
    );
    assert!(
        storage
            .instances
            .iter()
            .filter(|i| i.backup_count > 0)
            .count()
            == 1
    );
    // The page's view: one page of the match, the chosen instance, the fleet's totals.
    let paged = s
        .storage_page(
            &Actor::system(),
            &InstanceListQuery {
                contains: Some("shop-1".into()),
                offset: 50,
                limit: Some(50),
                ..Default::default()
            },
            Some("shop-150"),
        )
        .unwrap();
    assert_eq!(paged.total, 100, "shop-100 … shop-199");
    let names: Vec<String> = paged.instances.iter().map(|i| i.name.clone()).collect();
    assert_eq!(names, shops(150..200));
    assert_eq!(paged.instances[0].backup_count, 1);
    assert_eq!(paged.chosen.as_ref().unwrap().backup_count, 1);
    assert_eq!(paged.total_database_bytes, storage.total_database_bytes);
    assert_eq!(paged.total_backup_bytes, Some(storage.total_backup_bytes));

    // --- Restore into a typed target -----------------------------------------------------
    let id = backups[0].id;
    let target_page = web.page(&format!("/backups/{id}/restore")).await;
    assert_eq!(tag_of(&target_page, "target"), "input");
    let (status, html) = web
        .get(&format!("/backups/{id}/restore/review?target=nope-1"))
        .await;
    assert_eq!(status, 404, "{html}");
    assert!(html.contains("There is no instance named"), "{html}");
    assert!(
        html.contains("value=\"nope-1\""),
        "the typed name is kept: {html}"
    );
    let review = web
        .page(&format!("/backups/{id}/restore/review?target=shop-151"))
        .await;
    assert!(review.contains("shop-151"));
    let (status, location, _) = web
        .post(
            &format!("/backups/{id}/restore/review?target=shop-151"),
            &format!("/backups/{id}/restore"),
            &[("target", "shop-151")],
        )
        .await;
    assert_eq!(status, 303);
    assert_eq!(location.as_deref(), Some("/backups?instance=shop-151"));
    run_jobs(&srv).await;
    let restores = s
        .list_jobs(&Actor::system(), Some("shop-151"), None)
        .unwrap();
    assert!(
        restores
            .iter()
            .any(|j| j.kind == "restore" && j.state == "succeeded"),
        "{restores:?}"
    );

    // --- Work items: filter and refresh form with typed names ------------------------------
    let list = web.page("/workitems").await;
    assert_eq!(tag_of(&list, "filter-instance"), "input");
    let (status, html) = web.get("/workitems?instance=nope-2").await;
    assert_eq!(status, 404, "{html}");
    assert!(html.contains("There is no instance named"), "{html}");
    let form = web.page("/workitems/refresh").await;
    assert_eq!(tag_of(&form, "pick-source"), "input");
    let form = web.page("/workitems/refresh?source=shop-150").await;
    assert_eq!(tag_of(&form, "refresh-target"), "input");
    let window = (start_time() + Duration::days(3))
        .format("%Y-%m-%dT%H:%M")
        .to_string();
    let refresh = |target: &'static str| {
        let window = window.clone();
        let web = &web;
        async move {
            web.post(
                "/workitems/refresh?source=shop-150",
                "/workitems/refresh",
                &[
                    ("source", "shop-150"),
                    ("target", target),
                    ("at", "latest"),
                    ("window_start", window.as_str()),
                    ("time_zone", "UTC"),
                    ("ack_erase", "yes"),
                    ("ack_unavailable", "yes"),
                    ("ack_documents", "yes"),
                ],
            )
            .await
        }
    };
    let (status, _, html) = refresh("shop-99x").await;
    assert_eq!(status, 404, "{html}");
    assert!(html.contains("There is no instance named"), "{html}");
    assert_eq!(tag_of(&html, "refresh-target"), "input");
    assert!(
        s.list_work_items(&Actor::system(), None, None)
            .unwrap()
            .is_empty()
    );
    let (status, location, html) = refresh("shop-152").await;
    assert_eq!(status, 303, "{html}");
    assert_eq!(location.as_deref(), Some("/workitems"));
    let items = s.list_work_items(&Actor::system(), None, None).unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(
        (items[0].source.as_str(), items[0].target.as_str()),
        ("shop-150", "shop-152")
    );
    let filtered = web.page("/workitems?instance=shop-152").await;
    assert_eq!(rows(&filtered, "workitem-").len(), 1);

    // --- Notifications: recipients of a typed name ----------------------------------------
    let page = web.page("/notifications").await;
    assert_eq!(tag_of(&page, "recipients-for"), "input");
    assert_eq!(tag_of(&page, "log-instance"), "input");
    let (status, location, _) = web
        .post(
            "/notifications?instance=shop-123",
            "/notifications/recipients",
            &[("instance", "shop-123"), ("email", "ops@example.com")],
        )
        .await;
    assert_eq!(status, 303);
    assert!(location.unwrap().contains("instance=shop-123"));
    let (status, _, html) = web
        .post(
            "/notifications",
            "/notifications/recipients",
            &[("instance", "shop-9999"), ("email", "ops@example.com")],
        )
        .await;
    assert_eq!(status, 404, "{html}");
    assert!(html.contains("There is no instance named"), "{html}");
    let shown = web.page("/notifications?instance=shop-123").await;
    assert_eq!(
        text_of(&shown, "recipients-for").len(),
        0,
        "an input has no text"
    );
    assert!(shown.contains("ops@example.com"));
    assert_eq!(
        s.list_recipients(&Actor::system(), "shop-123")
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_repository_total_is_kept_and_follows_backups_deletes_and_prune() {
    let clock = Arc::new(ManualClock::new(start_time()));
    let srv = TestServer::start_with(
        |c| {
            c.system_backup_time = "02:00".into();
            c.system_backup_spread_minutes = 0;
            c.restore_drill_schedule = "off".into();
            c.prune_grace_seconds = 0;
        },
        Some(clock.clone()),
    )
    .await;
    fleet(&srv, 2).await;
    let st = srv.state.clone();
    let repo_dir = srv.data_dir.join("backups");
    let c = clock.clone();
    tokio::task::spawn_blocking(move || {
        let clock = c;
        let s = &st.services;
        let admin = Actor::system();
        let listed = || s.repo().unwrap().stats().unwrap().total_bytes;
        let kept = || s.storage(&admin).unwrap().total_backup_bytes;

        // The first view lists the repository.
        let empty = kept();
        assert_eq!(empty, listed());

        // An on-demand backup: the view right after it has the new total.
        s.create_backup(&admin, "shop-000", "one", None).unwrap();
        jobs_done(s);
        let one = kept();
        assert!(one > empty, "{one} > {empty}");
        assert_eq!(one, listed());

        // Another, then its delete: at once too.
        let b2 = s.create_backup(&admin, "shop-001", "two", None).unwrap();
        jobs_done(s);
        let two = kept();
        assert!(two > one, "{two} > {one}");
        s.delete_backup(&admin, b2.id).unwrap();
        let deleted = kept();
        assert!(deleted < two, "its manifest is gone: {deleted} < {two}");
        assert_eq!(deleted, listed());

        // Expiry and prune reclaim the data: at once.
        clock.advance(Duration::days(4));
        let report = s.expire_and_prune().unwrap();
        assert_eq!(report.expired, 1, "the first backup expired");
        assert!(report.bytes_deleted > 0);
        let pruned = kept();
        assert!(pruned < deleted, "{pruned} < {deleted}");
        assert_eq!(pruned, listed());

        // What another node (or capture, or a drill) writes is not listed on every view: the
        // kept total holds until it is older than REPO_TOTAL_MAX_AGE; the view after that
        // lists it again in the background.
        let proofs = repo_dir.join("proofs");
        std::fs::create_dir_all(&proofs).unwrap();
        std::fs::write(proofs.join("written-elsewhere"), vec![7u8; 5000]).unwrap();
        assert_eq!(listed(), pruned + 5000);
        assert_eq!(kept(), pruned, "kept, not listed again");
        clock.advance(REPO_TOTAL_MAX_AGE - Duration::seconds(1));
        assert_eq!(kept(), pruned, "still young enough");
        clock.advance(Duration::seconds(2));
        let deadline = Instant::now() + StdDuration::from_secs(15);
        while kept() != pruned + 5000 {
            assert!(
                Instant::now() < deadline,
                "the old total was never listed again"
            );
            std::thread::sleep(StdDuration::from_millis(20));
        }
    })
    .await
    .unwrap();

    // The fleet's system backups list it again in the background: the total follows.
    let st = srv.state.clone();
    tokio::task::spawn_blocking(move || {
        let s = &st.services;
        let admin = Actor::system();
        let before = s.storage(&admin).unwrap().total_backup_bytes;
        clock.set(Utc.with_ymd_and_hms(2026, 11, 7, 2, 30, 0).unwrap());
        assert_eq!(s.schedule_system_backups().unwrap(), 3);
        jobs_done(s);
        let listed = s.repo().unwrap().stats().unwrap().total_bytes;
        assert!(listed > before);
        let deadline = Instant::now() + StdDuration::from_secs(15);
        loop {
            let kept = s.storage(&admin).unwrap().total_backup_bytes;
            if kept == listed {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "kept {kept}, the repository holds {listed}"
            );
            std::thread::sleep(StdDuration::from_millis(20));
        }
        let rows = s.storage(&admin).unwrap();
        assert!(
            rows.instances.iter().all(|i| i.backup_count == 1),
            "{rows:?}"
        );
    })
    .await
    .unwrap();
}
