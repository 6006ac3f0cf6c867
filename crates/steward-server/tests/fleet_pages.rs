//! The admin center's fleet views with more instances than a page holds (issue #12, point 5):
//! the Updates tab (`/updates`) and the Restore drills page (`/drills`) show 50 instances a
//! page by name (drills: by reason, then name) with `?page=` and `?q=`, while their counts
//! stay those of the whole fleet. A real server on port 0 with real SQLite instances (or a
//! real PostgreSQL control plane with `STEWARD_TEST_STORE=postgres`), a manual clock, and
//! the pages fetched over HTTP with a signed-in session.

use std::sync::Arc;
use std::time::{Duration as StdDuration, Instant};

use chrono::{DateTime, Duration, TimeZone, Utc};
use steward_core::drill::{Attention, attention};
use steward_core::{Clock, ManualClock};
use steward_server::services::Actor;
use steward_server::services::drills::DrillFleetQuery;
use steward_server::services::updates::ScheduleRequest;
use steward_server::testing::TestServer;

mod web_support;
use web_support::{Web, rows, text_of};

/// 2018-09-01 10:00 UTC: 9.1 is the latest release, so an instance on 9.1 is up to date and
/// one on 9.0 has an update available.
fn start_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2018, 9, 1, 10, 0, 0).unwrap()
}

async fn server(clock: &Arc<ManualClock>) -> TestServer {
    TestServer::start_with(
        |c| {
            c.system_backup_time = "off".into();
            c.restore_drill_schedule = "off".into();
            c.update_rehearsal_days = 0;
            c.prune_grace_seconds = 0;
        },
        Some(clock.clone()),
    )
    .await
}

/// Creates `app-000` … `app-{n-1}`: every third one on 9.1 (up to date), the others on 9.0.
async fn instances(srv: &TestServer, n: usize) {
    let st = srv.state.clone();
    tokio::task::spawn_blocking(move || {
        for i in 0..n {
            let release = if i % 3 == 0 { "9.1" } else { "9.0" };
            st.services
                .create_instance(
                    &Actor::system(),
                    &format!("app-{i:03}"),
                    "sandbox",
                    Some(release),
                )
                .unwrap();
        }
    })
    .await
    .unwrap();
}

fn names(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("app-{i:03}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_updates_fleet_shows_pages_of_50_and_counts_the_whole_fleet() {
    let clock = Arc::new(ManualClock::new(start_time()));
    let srv = server(&clock).await;
    instances(&srv, 125).await;
    // app-110 has an open update, app-112 a cancelled one: rows of page 3 (app-111 is on
    // the latest release).
    let st = srv.state.clone();
    tokio::task::spawn_blocking(move || {
        let s = &st.services;
        for name in ["app-110", "app-112"] {
            s.schedule_update(
                &Actor::system(),
                name,
                &ScheduleRequest {
                    target: "9.1".into(),
                    preferred_start: "2018-09-10T22:00:00Z".into(),
                    alternate_start: "2018-09-17T22:00:00Z".into(),
                    time_zone: None,
                },
            )
            .unwrap();
        }
        s.cancel_update(&Actor::system(), "app-112").unwrap();
    })
    .await
    .unwrap();
    let web = Web::sign_in(&srv).await.unescaping();
    // 125 instances, every third (0, 3, …, 123: 42 of them) on the latest release.
    let available = (125 - 42).to_string();

    let first = web.page("/updates").await;
    assert_eq!(rows(&first, "fleet-"), names(0..50), "page 1, by name");
    assert_eq!(text_of(&first, "fleet-total"), "125");
    assert_eq!(text_of(&first, "available-count"), available);
    assert!(first.contains("1–50 of 125"), "the pager: {first}");
    assert!(first.contains("href=\"/updates?page=2\""), "{first}");
    assert!(first.contains("Update is Available"), "app-001 on 9.0");

    let second = web.page("/updates?page=2").await;
    assert_eq!(rows(&second, "fleet-"), names(50..100));
    assert_eq!(text_of(&second, "available-count"), available);
    let third = web.page("/updates?page=3").await;
    assert_eq!(rows(&third, "fleet-"), names(100..125), "the rest");
    assert!(third.contains("101–125 of 125"), "{third}");
    assert!(!third.contains("rel=\"next\""), "the last page");
    // The page's updates, loaded for its rows: the open one and the last one's result.
    let row = |html: &str, name: &str| -> String {
        let at = html.find(&format!("<tr id=\"fleet-{name}\"")).unwrap();
        html[at..at + html[at..].find("</tr>").unwrap()].to_owned()
    };
    let open = row(&third, "app-110");
    assert!(open.contains("9.0 → 9.1"), "{open}");
    assert!(open.contains("2018-09-10 22:00 UTC"), "{open}");
    let cancelled = row(&third, "app-112");
    assert!(
        cancelled.contains("Cancelled") && cancelled.contains("Update is Available"),
        "{cancelled}"
    );
    assert!(row(&third, "app-111").contains("Up to date"), "{third}");
    assert!(row(&third, "app-113").contains("Update is Available"));

    // Past the end: an empty table and the pager, not an error.
    let past = web.page("/updates?page=9").await;
    assert!(rows(&past, "fleet-").is_empty());
    assert!(past.contains("id=\"no-rows\""), "{past}");
    assert!(past.contains("rel=\"prev\""), "{past}");
    assert_eq!(text_of(&past, "fleet-total"), "125");

    // Finding by name (any case); the counts stay the whole fleet's.
    let found = web.page("/updates?q=APP-01").await;
    assert_eq!(rows(&found, "fleet-"), names(10..20));
    assert!(found.contains("1–10 of 10"), "{found}");
    assert_eq!(text_of(&found, "available-count"), available);
    assert_eq!(text_of(&found, "fleet-total"), "125");
    let none = web.page("/updates?q=zzz").await;
    assert!(rows(&none, "fleet-").is_empty());
    assert!(none.contains("No instance's name contains “zzz”"), "{none}");

    // A junk page number: a clear 400 that names it.
    for bad in ["two", "0", "-3"] {
        let (status, html) = web.get(&format!("/updates?page={bad}")).await;
        assert_eq!(status, 400, "{bad}: {html}");
        assert!(
            html.contains("whole number from 1") && html.contains(bad),
            "{bad}: {html}"
        );
    }

    // The policy form and the instance pages still work beside the paged table.
    assert!(first.contains("id=\"policy-form\""), "{first}");
    let one = web.page("/updates/app-110").await;
    assert!(one.contains("9.1"), "{one}");
}

/// Takes a completed backup of `instance`.
async fn backup(srv: &TestServer, instance: &str) {
    let st = srv.state.clone();
    let name = instance.to_owned();
    tokio::task::spawn_blocking(move || {
        let s = &st.services;
        let b = s
            .create_backup(&Actor::system(), &name, "nightly", None)
            .unwrap();
        let deadline = Instant::now() + StdDuration::from_secs(120);
        loop {
            while s.run_next_job(&st.jobs).unwrap() {}
            let b = s.show_backup(&Actor::system(), b.id).unwrap();
            if b.status == "completed" {
                return;
            }
            assert!(
                b.status != "failed" && Instant::now() < deadline,
                "backup of {name}: {b:?}"
            );
            std::thread::sleep(StdDuration::from_millis(50));
        }
    })
    .await
    .unwrap();
}

/// Runs a drill of `instance` to its end; its state.
async fn drill(srv: &TestServer, instance: &str) -> String {
    let st = srv.state.clone();
    let name = instance.to_owned();
    tokio::task::spawn_blocking(move || {
        let s = &st.services;
        let d = s.run_drill(&Actor::system(), &name, None).unwrap();
        let deadline = Instant::now() + StdDuration::from_secs(120);
        loop {
            // The server's drill worker may take it first.
            let _ = s.run_next_drill();
            let d = s.show_drill(&Actor::system(), d.id).unwrap();
            if d.state == "passed" || d.state == "failed" {
                return d.state;
            }
            assert!(Instant::now() < deadline, "drill of {name}: {d:?}");
            std::thread::sleep(StdDuration::from_millis(50));
        }
    })
    .await
    .unwrap()
}

/// Flips a byte in the middle of every pack of the repository.
fn corrupt_packs(data_dir: &std::path::Path) {
    let files = |d: &std::path::Path| -> Vec<std::path::PathBuf> {
        std::fs::read_dir(d)
            .map(|r| r.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    };
    let mut n = 0;
    for sub in files(&data_dir.join("backups").join("data")) {
        for p in files(&sub) {
            let mut bytes = std::fs::read(&p).unwrap();
            let i = bytes.len() / 2;
            bytes[i] ^= 0xff;
            std::fs::write(&p, bytes).unwrap();
            n += 1;
        }
    }
    assert!(n > 0, "the repository has packs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drills_fleet_shows_pages_of_50_by_reason_and_counts_the_whole_fleet() {
    let clock = Arc::new(ManualClock::new(start_time()));
    let srv = server(&clock).await;
    // 205 instances: more than a form's instance picker offers as a list.
    instances(&srv, 205).await;
    // app-150's drill passed 10 days ago (stale: older than the default 7 days), app-151's
    // passed now, app-152's failed now; the other 202 were never drilled.
    for name in ["app-150", "app-151", "app-152"] {
        backup(&srv, name).await;
    }
    assert_eq!(drill(&srv, "app-150").await, "passed");
    clock.advance(Duration::days(10));
    assert_eq!(drill(&srv, "app-151").await, "passed");
    corrupt_packs(&srv.data_dir);
    assert_eq!(drill(&srv, "app-152").await, "failed");

    let admin = srv.state.services.authenticate_token(&srv.token).unwrap();
    let stale_days = srv
        .state
        .services
        .drill_fleet_page(&admin, &DrillFleetQuery::default())
        .unwrap()
        .stale_days;
    assert!(
        stale_days < 10,
        "app-150's drill is stale ({stale_days} days)"
    );

    let web = Web::sign_in(&srv).await.unescaping();
    // Failed first, then never drilled by name, then stale: 1 + 202 + 1 = 204 of 205.
    let mut never: Vec<String> = names(0..205);
    never.retain(|n| !["app-150", "app-151", "app-152"].contains(&n.as_str()));
    let mut expected = vec!["app-152".to_owned()];
    expected.extend(never.iter().cloned());
    expected.push("app-150".to_owned());
    assert_eq!(expected.len(), 204);

    let first = web.page("/drills").await;
    assert_eq!(rows(&first, "attention-"), expected[..50], "page 1");
    assert_eq!(text_of(&first, "attention-total"), "204");
    assert_eq!(text_of(&first, "fleet-total"), "205");
    assert_eq!(text_of(&first, "count-failed"), "1");
    assert_eq!(text_of(&first, "count-never"), "202");
    assert_eq!(text_of(&first, "count-stale"), "1");
    assert!(first.contains("1–50 of 204"), "{first}");
    let mut shown = rows(&first, "attention-");
    for page in 2..=5 {
        let html = web.page(&format!("/drills?page={page}")).await;
        assert_eq!(text_of(&html, "count-never"), "202", "page {page}");
        shown.extend(rows(&html, "attention-"));
    }
    assert_eq!(shown, expected, "every page in order, each instance once");
    let last = web.page("/drills?page=5").await;
    assert_eq!(rows(&last, "attention-").len(), 4);
    assert!(
        last.contains("attention-app-150\" class=\"attention-stale\""),
        "{last}"
    );
    assert!(
        first.contains("attention-app-152\" class=\"attention-failed\""),
        "{first}"
    );

    // The filters are kept across pages; q finds by name; the counts stay the fleet's.
    let failed = web.page("/drills?failed=on").await;
    assert_eq!(rows(&failed, "attention-"), ["app-152"]);
    assert_eq!(text_of(&failed, "attention-total"), "1");
    let found = web.page("/drills?q=app-15").await;
    assert_eq!(
        rows(&found, "attention-"),
        [
            "app-152", "app-153", "app-154", "app-155", "app-156", "app-157", "app-158", "app-159",
            "app-150"
        ]
    );
    assert_eq!(text_of(&found, "count-never"), "202");
    let kept = web.page("/drills?stale_days=30&q=app-1").await;
    assert!(
        !rows(&kept, "attention-").contains(&"app-150".to_owned()),
        "not stale at 30 days"
    );
    assert!(
        kept.contains("href=\"/drills?stale_days=30&q=app-1&page=2\""),
        "{kept}"
    );
    assert_eq!(text_of(&kept, "count-stale"), "0");

    // Past the end: an empty table and the pager.
    let past = web.page("/drills?page=7").await;
    assert!(rows(&past, "attention-").is_empty());
    assert!(
        past.contains("id=\"no-rows\"") && past.contains("rel=\"prev\""),
        "{past}"
    );
    // A junk page number: a clear 400 that names it.
    let (status, html) = web.get("/drills?page=last").await;
    assert_eq!(status, 400, "{html}");
    assert!(
        html.contains("whole number from 1") && html.contains("last"),
        "{html}"
    );

    // More than 200 instances: the run form asks for a name instead of a 205-entry list.
    assert!(
        first.contains("<input id=\"drill-instance\" name=\"instance\""),
        "{first}"
    );
    assert!(!first.contains("<select id=\"drill-instance\""));

    // The SQL's reasons are the rule's (`steward_core::drill::attention`), at the edges too.
    let now = clock.now();
    for (days, want) in [(10, None), (9, Some(Attention::Stale))] {
        let fleet = srv
            .state
            .services
            .drill_fleet_page(
                &admin,
                &DrillFleetQuery {
                    stale_days: Some(days),
                    contains: Some("app-150".into()),
                    ..Default::default()
                },
            )
            .unwrap();
        let last = srv
            .state
            .services
            .list_drills(&admin, Some("app-150"))
            .unwrap()
            .remove(0);
        let rule = attention(Some((last.finished_at.unwrap(), true)), now, days as u32);
        assert_eq!(rule, want, "{days} days");
        assert_eq!(
            fleet.instances.first().map(|i| i.reason.clone()),
            rule.map(|r| r.as_str().to_owned()),
            "{days} days"
        );
    }
}
