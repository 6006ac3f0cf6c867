//! Notifications against a real SMTP server (a small one in this file, on 127.0.0.1, speaking
//! the SMTP dialogue lettre uses) and a real HTTP endpoint for webhooks, with real backups
//! and an injected clock.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use chrono::{Duration, TimeZone, Utc};
use hmac::{Hmac, KeyInit, Mac};
use steward_core::notify::Event;
use steward_core::{Clock, ManualClock};
use steward_server::services::Actor;
use steward_server::{Config, SharedState};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// One message the SMTP server accepted.
#[derive(Debug, Clone)]
struct Mail {
    to: Vec<String>,
    data: String,
}

type Inbox = Arc<Mutex<Vec<Mail>>>;

/// A minimal SMTP server (RFC 5321 commands EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT)
/// on `listener`, storing every accepted message.
fn smtp_server(listener: TcpListener) -> Inbox {
    let inbox: Inbox = Arc::default();
    let store = inbox.clone();
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                return;
            };
            let store = store.clone();
            tokio::spawn(async move {
                let (r, mut w) = sock.into_split();
                let mut lines = BufReader::new(r).lines();
                w.write_all(b"220 test.local ESMTP\r\n").await.unwrap();
                let mut to = Vec::new();
                while let Ok(Some(line)) = lines.next_line().await {
                    let upper = line.to_ascii_uppercase();
                    let reply: &[u8] = if upper.starts_with("EHLO") {
                        b"250-test.local\r\n250 8BITMIME\r\n"
                    } else if upper.starts_with("RCPT TO:") {
                        let addr = line[8..].trim().trim_matches(['<', '>']).to_owned();
                        to.push(addr);
                        b"250 OK\r\n"
                    } else if upper == "DATA" {
                        w.write_all(b"354 go ahead\r\n").await.unwrap();
                        let mut data = String::new();
                        while let Ok(Some(l)) = lines.next_line().await {
                            if l == "." {
                                break;
                            }
                            data.push_str(&l);
                            data.push('\n');
                        }
                        store.lock().unwrap().push(Mail {
                            to: std::mem::take(&mut to),
                            data,
                        });
                        b"250 queued\r\n"
                    } else if upper == "QUIT" {
                        let _ = w.write_all(b"221 bye\r\n").await;
                        return;
                    } else if upper == "RSET" {
                        to.clear();
                        b"250 OK\r\n"
                    } else {
                        b"250 OK\r\n"
                    };
                    if w.write_all(reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    inbox
}

/// One webhook request the endpoint received.
#[derive(Debug, Clone)]
struct Hook {
    timestamp: String,
    signature: String,
    body: String,
}

async fn webhook_server() -> (String, Arc<Mutex<Vec<Hook>>>) {
    let got: Arc<Mutex<Vec<Hook>>> = Arc::default();
    let store = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let store = store.clone();
            async move {
                let h = |n: &str| {
                    headers
                        .get(n)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned()
                };
                store.lock().unwrap().push(Hook {
                    timestamp: h("x-steward-timestamp"),
                    signature: h("x-steward-signature"),
                    body,
                });
                "ok"
            }
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (url, got)
}

struct Env {
    dir: tempfile::TempDir,
    state: SharedState,
    clock: Arc<ManualClock>,
    admin: Actor,
    smtp_port: u16,
}

fn config(data: &std::path::Path, smtp_port: u16) -> Config {
    Config {
        data_dir: data.to_owned(),
        public_url: "http://steward.test:8080/".into(),
        smtp_host: Some("127.0.0.1".into()),
        smtp_port: Some(smtp_port),
        smtp_security: "none".into(),
        smtp_from: "Steward <steward@steward.test>".into(),
        notify_max_attempts: 3,
        ..Config::default()
    }
}

async fn prepare(
    data: std::path::PathBuf,
    smtp_port: u16,
    clock: Arc<ManualClock>,
) -> (SharedState, Option<steward_server::Bootstrap>) {
    tokio::task::spawn_blocking(move || {
        steward_server::prepare_with_clock(config(&data, smtp_port), clock).unwrap()
    })
    .await
    .unwrap()
}

/// A port nothing listens on (yet).
async fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

async fn env(smtp_port: u16) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(
        Utc.with_ymd_and_hms(2026, 11, 2, 10, 0, 0).unwrap(),
    ));
    let (state, boot) = prepare(dir.path().join("data"), smtp_port, clock.clone()).await;
    let admin = state
        .services
        .authenticate_token(&boot.unwrap().token)
        .unwrap();
    Env {
        dir,
        state,
        clock,
        admin,
        smtp_port,
    }
}

impl Env {
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&SharedState) -> T + Send + 'static,
    ) -> T {
        let st = self.state.clone();
        tokio::task::spawn_blocking(move || f(&st)).await.unwrap()
    }

    fn user(&self, name: &str, role: &str, email: &str) {
        let s = &self.state.services;
        s.create_user(&self.admin, name, role, Some("a-long-password-1"))
            .unwrap();
        s.set_user_email(&self.admin, name, Some(email)).unwrap();
    }

    /// An instance and one completed on-demand backup of it.
    async fn backed_up(&self, name: &str) {
        let admin = self.admin.clone();
        let name = name.to_owned();
        self.blocking(move |st| {
            let s = &st.services;
            s.create_instance(&admin, &name, "production", Some("9.0"))
                .unwrap();
            s.create_backup(&admin, &name, "nightly", None).unwrap();
            while st.services.run_next_job(&st.jobs).unwrap() {}
        })
        .await;
    }

    async fn deliver(&self) -> usize {
        steward_server::services::notify::deliver::deliver_due(&self.state)
            .await
            .unwrap()
    }

    fn log(&self) -> Vec<steward_server::services::DeliveryView> {
        self.state
            .services
            .notification_log(&self.admin, None, 1000)
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_succeeded_email_goes_to_administrators_and_extra_recipients() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let inbox = smtp_server(listener);
    let e = env(port).await;
    let s = &e.state.services;
    let admin_name = e.admin.username.clone();
    s.set_user_email(&e.admin, &admin_name, Some("root@example.com"))
        .unwrap();
    e.user("sam", "system_administrator", "sam@example.com");
    e.user("dana", "delegated_admin", "dana@example.com");
    e.user("vic", "viewer", "vic@example.com");
    let admin = e.admin.clone();
    e.blocking(move |st| {
        st.services
            .create_instance(&admin, "crm-other", "sandbox", Some("9.0"))
            .unwrap();
    })
    .await;
    e.backed_up("crm-prod").await;
    // Recipients added after the backup are not told about it.
    s.add_recipient(&e.admin, "crm-prod", "ops@example.com")
        .unwrap();
    s.add_recipient(&e.admin, "crm-other", "other@example.com")
        .unwrap();
    let admin = e.admin.clone();
    e.blocking(move |st| {
        st.services
            .create_backup(&admin, "crm-prod", "second", None)
            .unwrap();
        while st.services.run_next_job(&st.jobs).unwrap() {}
    })
    .await;
    assert!(e.deliver().await > 0);
    let mails = inbox.lock().unwrap().clone();
    let succeeded: Vec<&Mail> = mails
        .iter()
        .filter(|m| {
            m.data
                .contains("Subject: [Steward] Backup succeeded: crm-prod")
        })
        .collect();
    let to = |ms: &[&Mail]| -> BTreeSet<String> {
        ms.iter().flat_map(|m| m.to.iter().cloned()).collect()
    };
    // First backup: System Administrators only; second: also the instance's extra recipient.
    assert_eq!(succeeded.len(), 5, "{mails:#?}");
    assert_eq!(
        to(&succeeded),
        BTreeSet::from([
            "root@example.com".to_string(),
            "sam@example.com".to_string(),
            "ops@example.com".to_string()
        ])
    );
    assert!(
        !mails.iter().any(|m| m.data.contains("Backup started")),
        "started is in-product only by default"
    );
    for m in &succeeded {
        assert_eq!(m.to.len(), 1, "one message per recipient");
        assert!(m.data.contains("multipart/alternative"), "{}", m.data);
        assert!(m.data.contains("Content-Type: text/plain"), "{}", m.data);
        assert!(m.data.contains("Content-Type: text/html"), "{}", m.data);
        assert!(m.data.contains("crm-prod"));
        assert!(
            m.data
                .contains("http://steward.test:8080/instances/crm-prod")
        );
        assert!(m.data.contains("2026-11-02 10:00 UTC"), "{}", m.data);
    }
    let log = e.log();
    assert!(log.iter().all(|d| d.state == "sent"), "{log:#?}");
    assert!(!log.iter().any(|d| d.recipient == "other@example.com"));
    assert!(!log.iter().any(|d| d.recipient == "dana@example.com"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_signed_with_the_secret() {
    let (url, got) = webhook_server().await;
    let e = env(free_port().await).await;
    let secret = "a-secret-of-at-least-16";
    let created = e
        .state
        .services
        .create_webhook(&e.admin, &url, Some(secret))
        .unwrap();
    assert_eq!(created.secret, secret);
    e.backed_up("crm-prod").await;
    e.deliver().await;
    let hooks = got.lock().unwrap().clone();
    assert_eq!(hooks.len(), 2, "started and succeeded: {hooks:#?}");
    for h in &hooks {
        let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{}.{}", h.timestamp, h.body).as_bytes());
        let want = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        assert_eq!(h.signature, want);
        assert_eq!(h.timestamp, e.clock.now().timestamp().to_string());
        let body: serde_json::Value = serde_json::from_str(&h.body).unwrap();
        assert_eq!(body["instance"], "crm-prod");
        assert_eq!(body["link"], "http://steward.test:8080/instances/crm-prod");
    }
    let events: BTreeSet<String> = hooks
        .iter()
        .map(|h| {
            serde_json::from_str::<serde_json::Value>(&h.body).unwrap()["event"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        events,
        BTreeSet::from(["backup_started".to_string(), "backup_succeeded".to_string()])
    );
    // A tampered body does not verify.
    let h = &hooks[0];
    let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{}.{}x", h.timestamp, h.body).as_bytes());
    assert_ne!(
        h.signature,
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_down_then_up_gets_exactly_one_copy_and_restarts_send_nothing_twice() {
    let port = free_port().await;
    let mut e = env(port).await;
    let admin_name = e.admin.username.clone();
    e.state
        .services
        .set_user_email(&e.admin, &admin_name, Some("root@example.com"))
        .unwrap();
    e.backed_up("crm-prod").await;
    // The SMTP server is down: the attempt is recorded and a retry scheduled.
    assert_eq!(e.deliver().await, 1);
    let log = e.log();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].state, "pending");
    assert_eq!(log[0].attempts, 1);
    assert!(
        log[0].last_error.as_deref().unwrap().contains("SMTP"),
        "{log:#?}"
    );
    // The backup itself is not rolled back because delivery failed.
    let backups = e.state.services.list_backups(&e.admin, "crm-prod").unwrap();
    assert_eq!(backups[0].status, "completed");

    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let inbox = smtp_server(listener);
    // Up, but the retry is not due yet.
    assert_eq!(e.deliver().await, 0);
    assert!(inbox.lock().unwrap().is_empty());
    e.clock.advance(Duration::seconds(31));
    assert_eq!(e.deliver().await, 1);
    assert_eq!(inbox.lock().unwrap().len(), 1);
    let log = e.log();
    assert_eq!(log[0].state, "sent");
    assert_eq!(log[0].attempts, 2);
    assert!(log[0].sent_at.is_some());
    assert_eq!(e.deliver().await, 0);

    // Restart on the same data directory, much later: nothing is sent again.
    let data = e.state.config.data_dir.clone();
    let clock = e.clock.clone();
    let placeholder = prepare(e.dir.path().join("other"), e.smtp_port, clock.clone())
        .await
        .0;
    drop(std::mem::replace(&mut e.state, placeholder));
    e.state = prepare(data, port, clock.clone()).await.0;
    clock.advance(Duration::days(3));
    assert_eq!(e.deliver().await, 0);
    assert_eq!(inbox.lock().unwrap().len(), 1, "exactly one copy");
    assert_eq!(e.log()[0].state, "sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_give_up_after_the_last_attempt_with_the_error_in_the_log() {
    let e = env(free_port().await).await;
    let admin_name = e.admin.username.clone();
    e.state
        .services
        .set_user_email(&e.admin, &admin_name, Some("root@example.com"))
        .unwrap();
    e.backed_up("crm-prod").await;
    for _ in 0..3 {
        assert_eq!(e.deliver().await, 1);
        e.clock.advance(Duration::hours(2));
    }
    assert_eq!(e.deliver().await, 0);
    let log = e.log();
    assert_eq!(log[0].state, "failed");
    assert_eq!(log[0].attempts, 3);
    assert!(log[0].last_error.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schedule_is_data_the_operator_changes() {
    let e = env(free_port().await).await;
    let s = &e.state.services;
    let admin_name = e.admin.username.clone();
    s.set_user_email(&e.admin, &admin_name, Some("root@example.com"))
        .unwrap();
    let schedule = s.notification_schedule(&e.admin).unwrap();
    let get = |event: &str| schedule.iter().find(|x| x.event == event).unwrap().clone();
    assert_eq!(get("update_in_progress").audience, "all_admins_and_users");
    assert_eq!(get("reminder_90_days").channels, vec!["email", "webhook"]);
    // Backups started by email too; succeeded not at all.
    s.set_schedule(
        &e.admin,
        "backup_started",
        "all_admins_and_users",
        &["email".into()],
    )
    .unwrap();
    s.set_schedule(&e.admin, "backup_succeeded", "system_administrators", &[])
        .unwrap();
    e.user("vic", "viewer", "vic@example.com");
    e.backed_up("crm-prod").await;
    let log = e.log();
    let got: BTreeSet<(String, String)> = log
        .iter()
        .map(|d| (d.event.clone(), d.recipient.clone()))
        .collect();
    assert_eq!(
        got,
        BTreeSet::from([
            ("backup_started".to_string(), "root@example.com".to_string()),
            ("backup_started".to_string(), "vic@example.com".to_string()),
        ])
    );
    let err = s
        .set_schedule(&e.admin, "backup_exploded", "system_administrators", &[])
        .unwrap_err();
    assert_eq!(err.code, "invalid_value", "{err:?}");
    let err = s
        .set_schedule(
            &e.admin,
            "backup_failed",
            "system_administrators",
            &["fax".into()],
        )
        .unwrap_err();
    assert!(err.message.contains("fax"), "{err:?}");
    let dana = {
        s.create_user(
            &e.admin,
            "dana",
            "delegated_admin",
            Some("a-long-password-1"),
        )
        .unwrap();
        let t = s
            .token_for_credentials("dana", "a-long-password-1", "t")
            .unwrap();
        s.authenticate_token(&t.secret).unwrap()
    };
    let err = s
        .set_schedule(&dana, "backup_failed", "system_administrators", &[])
        .unwrap_err();
    assert_eq!(err.code, "forbidden");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_addresses_and_webhook_urls_are_refused_through_the_api() {
    let srv = steward_server::testing::TestServer::start().await;
    let c = reqwest::Client::new();
    let api = |p: &str| format!("{}/api/v1{p}", srv.url);
    let r = c
        .post(api("/instances"))
        .bearer_auth(&srv.token)
        .json(&serde_json::json!({"name": "crm-prod", "type": "production"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let post = |path: &str, body: serde_json::Value| {
        c.post(api(path)).bearer_auth(&srv.token).json(&body).send()
    };
    let r = post(
        "/instances/crm-prod/recipients",
        serde_json::json!({"email": "not an address"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], "invalid_email");
    for url in [
        "ftp://example.com/hook",
        "file:///etc/passwd",
        "example.com/hook",
    ] {
        let r = post("/webhooks", serde_json::json!({"url": url}))
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{url}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["code"], "invalid_webhook_url", "{url}");
    }
    let r = c
        .put(api("/users/admin/email"))
        .bearer_auth(&srv.token)
        .json(&serde_json::json!({"email": "admin@@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // Nothing changed.
    let list: Vec<serde_json::Value> = c
        .get(api("/webhooks"))
        .bearer_auth(&srv.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(list.is_empty());
    let list: Vec<serde_json::Value> = c
        .get(api("/instances/crm-prod/recipients"))
        .bearer_auth(&srv.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(list.is_empty());
    // Good values are accepted and listed.
    let r = post(
        "/instances/crm-prod/recipients",
        serde_json::json!({"email": "Ops@Example.com"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 201);
    let r = post(
        "/webhooks",
        serde_json::json!({"url": "https://hooks.example.com/steward"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 201);
    let created: serde_json::Value = r.json().await.unwrap();
    assert_eq!(created["secret"].as_str().unwrap().len(), 64);
    let r = c
        .delete(api("/instances/crm-prod/recipients/Ops@example.com"))
        .bearer_auth(&srv.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = c
        .get(api("/notifications/schedule"))
        .bearer_auth(&srv.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .get(api("/alerts/mine"))
        .bearer_auth(&srv.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .post(api("/alerts/4242/dismiss"))
        .bearer_auth(&srv.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = c
        .get(api("/notifications/log"))
        .bearer_auth(&srv.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restores_notify_by_email_naming_the_target_and_the_backup() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let inbox = smtp_server(listener);
    let e = env(port).await;
    let admin_name = e.admin.username.clone();
    e.state
        .services
        .set_user_email(&e.admin, &admin_name, Some("root@example.com"))
        .unwrap();
    e.backed_up("crm-prod").await;
    let admin = e.admin.clone();
    e.blocking(move |st| {
        let s = &st.services;
        s.create_instance(&admin, "crm-sand", "sandbox", Some("9.0"))
            .unwrap();
        let b = s.list_backups(&admin, "crm-prod").unwrap();
        s.restore_backup(&admin, b[0].id, "crm-sand").unwrap();
        while st.services.run_next_job(&st.jobs).unwrap() {}
    })
    .await;
    e.deliver().await;
    let mails = inbox.lock().unwrap().clone();
    let restored: Vec<&Mail> = mails
        .iter()
        .filter(|m| {
            m.data
                .contains("Subject: [Steward] Restore succeeded: crm-sand")
        })
        .collect();
    assert_eq!(restored.len(), 1, "{mails:#?}");
    assert!(restored[0].data.contains("nightly"), "names the backup");
    assert!(
        restored[0]
            .data
            .contains("http://steward.test:8080/instances/crm-sand")
    );
    let events: BTreeSet<String> = e.log().into_iter().map(|d| d.event).collect();
    assert_eq!(
        events,
        BTreeSet::from([
            "backup_succeeded".to_string(),
            "restore_succeeded".to_string()
        ]),
        "started events are in-product only by default"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_misconfigured_smtp_server_is_a_clear_error_in_the_log() {
    // The test server speaks plain SMTP and offers no STARTTLS.
    for (security, expect) in [("starttls", "STARTTLS"), ("tls", "")] {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let inbox = smtp_server(listener);
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(
            Utc.with_ymd_and_hms(2026, 11, 2, 10, 0, 0).unwrap(),
        ));
        let data = dir.path().join("data");
        let c = clock.clone();
        let (state, boot) = tokio::task::spawn_blocking(move || {
            let mut cfg = config(&data, port);
            cfg.smtp_security = security.into();
            steward_server::prepare_with_clock(cfg, c).unwrap()
        })
        .await
        .unwrap();
        let admin = state
            .services
            .authenticate_token(&boot.unwrap().token)
            .unwrap();
        let e = Env {
            dir,
            state,
            clock,
            admin,
            smtp_port: port,
        };
        let admin_name = e.admin.username.clone();
        e.state
            .services
            .set_user_email(&e.admin, &admin_name, Some("root@example.com"))
            .unwrap();
        e.backed_up("crm-prod").await;
        assert_eq!(e.deliver().await, 1);
        let log = e.log();
        assert_eq!(log[0].state, "pending", "{security}");
        let err = log[0].last_error.clone().unwrap();
        assert!(err.contains("SMTP server 127.0.0.1"), "{security}: {err}");
        assert!(err.contains(expect), "{security}: {err}");
        assert!(
            inbox.lock().unwrap().is_empty(),
            "{security}: nothing sent in clear"
        );
    }
}

#[test]
fn bad_smtp_settings_refuse_to_start() {
    let dir = tempfile::tempdir().unwrap();
    for (tweak, want) in [
        (
            Box::new(|c: &mut Config| c.smtp_security = "ssl".into()) as Box<dyn Fn(&mut Config)>,
            "smtp_security",
        ),
        (
            Box::new(|c: &mut Config| c.smtp_from = "nobody".into()),
            "smtp_from",
        ),
        (
            Box::new(|c: &mut Config| c.public_url = "ftp://x".into()),
            "public_url",
        ),
        (
            Box::new(|c: &mut Config| c.smtp_username = Some("u".into())),
            "smtp_password",
        ),
    ] {
        let mut cfg = config(&dir.path().join("data"), 25);
        tweak(&mut cfg);
        let err = match steward_server::prepare(cfg) {
            Ok(_) => panic!("{want}: started"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(want), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_product_alerts_are_dismissed_per_user() {
    let e = env(free_port().await).await;
    e.backed_up("crm-prod").await;
    let s = &e.state.services;
    // Another System Administrator: backup alerts go to System Administrators by default.
    s.create_user(
        &e.admin,
        "sam",
        "system_administrator",
        Some("a-long-password-1"),
    )
    .unwrap();
    let t = s
        .token_for_credentials("sam", "a-long-password-1", "t")
        .unwrap();
    let sam = s.authenticate_token(&t.secret).unwrap();
    let mine = s.my_alerts(&e.admin, 50).unwrap();
    assert_eq!(mine.len(), 2, "started and succeeded: {mine:#?}");
    assert!(mine[0].message.contains("succeeded"));
    s.dismiss_alert(&e.admin, mine[0].id).unwrap();
    s.dismiss_alert(&e.admin, mine[0].id).unwrap();
    let after = s.my_alerts(&e.admin, 50).unwrap();
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].id, mine[1].id);
    assert_eq!(
        s.my_alerts(&sam, 50).unwrap().len(),
        2,
        "others still see it"
    );
    assert_eq!(
        s.list_alerts(&e.admin, 50).unwrap().len(),
        2,
        "the history keeps it"
    );
    let err = s.dismiss_alert(&e.admin, 9999).unwrap_err();
    assert_eq!(err.code, "unknown_alert");
    let err = s.dismiss_alert(&Actor::system(), mine[1].id).unwrap_err();
    assert_eq!(err.code, "not_a_user");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_webhook_endpoint_is_retried_with_each_attempt_recorded() {
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = calls.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move {
                if n == 0 {
                    axum::http::StatusCode::SERVICE_UNAVAILABLE
                } else {
                    axum::http::StatusCode::OK
                }
            }
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let e = env(free_port().await).await;
    e.state
        .services
        .set_schedule(&e.admin, "backup_started", "system_administrators", &[])
        .unwrap();
    e.state
        .services
        .create_webhook(&e.admin, &url, None)
        .unwrap();
    e.backed_up("crm-prod").await;
    assert_eq!(e.deliver().await, 1);
    let log = e.log();
    assert_eq!((log[0].state.as_str(), log[0].attempts), ("pending", 1));
    assert!(
        log[0].last_error.as_deref().unwrap().contains("503"),
        "{log:#?}"
    );
    e.clock.advance(Duration::seconds(31));
    assert_eq!(e.deliver().await, 1);
    let log = e.log();
    assert_eq!((log[0].state.as_str(), log[0].attempts), ("sent", 2));
    assert_eq!(e.deliver().await, 0);
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
}

// ---------------------------------------------------------------------------------------
// in-product alerts for their audience, and the Notifications tab over HTTP
// ---------------------------------------------------------------------------------------

/// A user with an API token on `srv`, signed in with `password`.
fn user_token(srv: &steward_server::testing::TestServer, name: &str, role: &str) -> String {
    let s = &srv.state.services;
    let admin = s.authenticate_token(&srv.token).unwrap();
    s.create_user(&admin, name, role, Some("a-long-password-1"))
        .unwrap();
    s.token_for_credentials(name, "a-long-password-1", "t")
        .unwrap()
        .secret
}

/// Announces `event` the way every service does, in a store transaction.
fn announce(srv: &steward_server::testing::TestServer, event: Event, message: &str) {
    let s = &srv.state.services;
    s.store
        .write(|db| {
            s.announce(
                db,
                event,
                "info",
                Some("crm-prod"),
                message,
                serde_json::json!({}),
            )
        })
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_reach_the_audience_the_schedule_names_and_are_dismissed_through_the_api() {
    let srv = steward_server::testing::TestServer::start().await;
    let s = &srv.state.services;
    let admin = s.authenticate_token(&srv.token).unwrap();
    let vic = user_token(&srv, "vic", "viewer");
    let dana = user_token(&srv, "dana", "delegated_admin");
    let root2 = user_token(&srv, "root2", "system_administrator");
    // By default backup outcomes are in-product alerts for System Administrators only.
    announce(&srv, Event::BackupSucceeded, "for administrators");
    s.set_schedule(
        &admin,
        "backup_succeeded",
        "all_admins_and_users",
        &["in_product".into()],
    )
    .unwrap();
    announce(&srv, Event::BackupSucceeded, "for everyone");
    // Without the in-product channel there is no alert at all.
    s.set_schedule(
        &admin,
        "backup_failed",
        "all_admins_and_users",
        &["email".into()],
    )
    .unwrap();
    announce(&srv, Event::BackupFailed, "by email only");

    let c = reqwest::Client::new();
    let api = |p: &str| format!("{}/api/v1{p}", srv.url);
    let mine = |token: String| {
        let c = c.clone();
        let url = api("/alerts/mine");
        async move {
            let r = c.get(url).bearer_auth(token).send().await.unwrap();
            assert_eq!(r.status(), 200);
            let body: Vec<serde_json::Value> = r.json().await.unwrap();
            body.iter()
                .map(|a| {
                    (
                        a["id"].as_i64().unwrap(),
                        a["message"].as_str().unwrap().to_owned(),
                    )
                })
                .collect::<Vec<_>>()
        }
    };
    let messages = |v: &[(i64, String)]| v.iter().map(|(_, m)| m.clone()).collect::<Vec<_>>();
    let admin_sees = mine(srv.token.clone()).await;
    assert_eq!(
        messages(&admin_sees),
        ["for everyone", "for administrators"]
    );
    assert_eq!(messages(&mine(root2.clone()).await), messages(&admin_sees));
    let vic_sees = mine(vic.clone()).await;
    assert_eq!(messages(&vic_sees), ["for everyone"]);
    assert_eq!(messages(&mine(dana.clone()).await), ["for everyone"]);

    // Dismissing hides the alert from that user only.
    let r = c
        .post(api(&format!("/alerts/{}/dismiss", vic_sees[0].0)))
        .bearer_auth(&vic)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert!(mine(vic.clone()).await.is_empty());
    assert_eq!(messages(&mine(dana).await), ["for everyone"]);
    assert_eq!(messages(&mine(srv.token.clone()).await).len(), 2);
    let r = c
        .post(api("/alerts/9999/dismiss"))
        .bearer_auth(&vic)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], "unknown_alert");
    // The history of the Backup & Restore tab keeps every alert.
    assert_eq!(s.list_alerts(&admin, 50).unwrap().len(), 2);
}

/// A browser session over plain HTTP: its cookie and the CSRF token its forms carry.
struct WebUser {
    http: reqwest::Client,
    base: String,
    cookie: String,
    csrf: String,
}

impl WebUser {
    async fn sign_in(
        srv: &steward_server::testing::TestServer,
        name: &str,
        password: &str,
    ) -> Self {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let cookie_of = |r: &reqwest::Response, name: &str| {
            r.headers()
                .get_all("set-cookie")
                .iter()
                .filter_map(|c| c.to_str().ok())
                .find_map(|c| c.strip_prefix(&format!("{name}=")))
                .map(|c| c.split(';').next().unwrap().to_owned())
                .unwrap_or_else(|| panic!("no {name} cookie"))
        };
        let form = http.get(format!("{}/login", srv.url)).send().await.unwrap();
        let login_csrf = cookie_of(&form, "steward_login_csrf");
        let r = http
            .post(format!("{}/login", srv.url))
            .header("cookie", format!("steward_login_csrf={login_csrf}"))
            .form(&[
                ("username", name),
                ("password", password),
                ("csrf", &login_csrf),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303, "{name} signs in");
        let mut user = Self {
            http,
            base: srv.url.clone(),
            cookie: format!("steward_session={}", cookie_of(&r, "steward_session")),
            csrf: String::new(),
        };
        let (_, html) = user.get("/notifications").await;
        user.csrf = html
            .split("name=\"csrf\" value=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .expect("a form with a CSRF token")
            .to_owned();
        user
    }

    async fn get(&self, path: &str) -> (u16, String) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// Posts `fields` plus the session's CSRF token (unless `csrf` is false).
    async fn post(&self, path: &str, fields: &[(&str, &str)], csrf: bool) -> (u16, String) {
        let mut all: Vec<(&str, &str)> = fields.to_vec();
        if csrf {
            all.push(("csrf", &self.csrf));
        }
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .form(&all)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_notifications_tab_changes_settings_only_through_csrf_protected_forms() {
    let srv = steward_server::testing::TestServer::start().await;
    let s = &srv.state.services;
    let admin = s.authenticate_token(&srv.token).unwrap();
    s.create_instance(&admin, "crm-prod", "production", None)
        .unwrap();
    user_token(&srv, "vic", "viewer");
    let root = WebUser::sign_in(&srv, "admin", &srv.admin_password).await;
    let entry = |event: &str| {
        s.notification_schedule(&admin)
            .unwrap()
            .into_iter()
            .find(|e| e.event == event)
            .unwrap()
    };
    let (status, html) = root.get("/notifications").await;
    assert_eq!(status, 200);
    assert!(
        html.contains("id=\"schedule-form-backup_failed\""),
        "{html}"
    );
    assert!(html.contains("Fallback to secondary update"));

    // The schedule: refused without the token, saved with it, then back to the default.
    let change = [("audience", "all_admins_and_users"), ("in_product", "on")];
    let (status, _) = root
        .post("/notifications/schedule/backup_failed", &change, false)
        .await;
    assert_eq!(status, 403);
    assert!(!entry("backup_failed").customized, "nothing changed");
    let (status, _) = root
        .post("/notifications/schedule/backup_failed", &change, true)
        .await;
    assert_eq!(status, 303);
    let e = entry("backup_failed");
    assert_eq!(
        (e.audience.as_str(), e.channels.clone(), e.customized),
        ("all_admins_and_users", vec!["in_product".to_string()], true)
    );
    let (status, _) = root
        .post(
            "/notifications/schedule/backup_failed",
            &[("audience", "everybody")],
            true,
        )
        .await;
    assert_eq!(status, 400, "an unknown audience");
    assert_eq!(entry("backup_failed").audience, "all_admins_and_users");
    let (status, _) = root
        .post("/notifications/schedule/backup_failed/reset", &[], true)
        .await;
    assert_eq!(status, 303);
    let e = entry("backup_failed");
    assert_eq!(
        (e.audience.as_str(), e.channels.len(), e.customized),
        ("system_administrators", 3, false)
    );

    // Recipients: a bad address is refused with the reason and stores nothing.
    let (status, html) = root
        .post(
            "/notifications/recipients",
            &[("instance", "crm-prod"), ("email", "ops at example")],
            true,
        )
        .await;
    assert_eq!(status, 400);
    assert!(html.contains("is not an email address"), "{html}");
    assert!(s.list_recipients(&admin, "crm-prod").unwrap().is_empty());
    let (status, _) = root
        .post(
            "/notifications/recipients",
            &[("instance", "crm-prod"), ("email", "ops@example.com")],
            true,
        )
        .await;
    assert_eq!(status, 303);
    assert_eq!(s.list_recipients(&admin, "crm-prod").unwrap().len(), 1);
    let (status, html) = root
        .get("/notifications/recipients/remove?instance=crm-prod&email=ops%40example.com")
        .await;
    assert_eq!(status, 200);
    assert!(html.contains("Stop sending"), "a confirmation first");
    assert_eq!(s.list_recipients(&admin, "crm-prod").unwrap().len(), 1);
    let (status, _) = root
        .post(
            "/notifications/recipients/remove",
            &[("instance", "crm-prod"), ("email", "ops@example.com")],
            true,
        )
        .await;
    assert_eq!(status, 303);
    assert!(s.list_recipients(&admin, "crm-prod").unwrap().is_empty());

    // Webhooks: the URL is checked; the secret is shown once.
    let (status, html) = root
        .post(
            "/notifications/webhooks",
            &[("url", "ftp://example.com/x")],
            true,
        )
        .await;
    assert_eq!(status, 400);
    assert!(html.contains("only http and https"), "{html}");
    assert!(s.list_webhooks(&admin).unwrap().is_empty());
    let (status, html) = root
        .post(
            "/notifications/webhooks",
            &[("url", "https://hooks.example.com/steward")],
            true,
        )
        .await;
    assert_eq!(status, 201);
    let secret = html
        .split("id=\"webhook-secret\">")
        .nth(1)
        .and_then(|s| s.split('<').next())
        .expect("the secret is shown")
        .to_owned();
    assert_eq!(secret.len(), 64, "{secret}");
    let (_, again) = root.get("/notifications").await;
    assert!(!again.contains(&secret), "only once");
    assert!(again.contains("https://hooks.example.com/steward"));
    let id = s.list_webhooks(&admin).unwrap()[0].id;
    let (status, _) = root
        .post(&format!("/notifications/webhooks/{id}/delete"), &[], true)
        .await;
    assert_eq!(status, 303);
    assert!(s.list_webhooks(&admin).unwrap().is_empty());

    // A viewer sees the schedule read-only and cannot change it with a valid form either.
    let vic = WebUser::sign_in(&srv, "vic", "a-long-password-1").await;
    let (status, html) = vic.get("/notifications").await;
    assert_eq!(status, 200);
    assert!(html.contains("id=\"schedule-read-only\""));
    assert!(!html.contains("schedule-form-"), "no edit forms");
    assert!(!html.contains("add-recipient-form"));
    let (status, _) = vic
        .post("/notifications/schedule/backup_failed", &change, true)
        .await;
    assert_eq!(status, 403);
    assert!(!entry("backup_failed").customized);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_banner_shows_each_user_their_alerts_and_dismisses_for_one_user_only() {
    let srv = steward_server::testing::TestServer::start().await;
    let s = &srv.state.services;
    let admin = s.authenticate_token(&srv.token).unwrap();
    user_token(&srv, "vic", "viewer");
    announce(&srv, Event::RestoreFailed, "restore of crm-prod failed");
    let root = WebUser::sign_in(&srv, "admin", &srv.admin_password).await;
    let vic = WebUser::sign_in(&srv, "vic", "a-long-password-1").await;
    let (_, html) = root.get("/instances").await;
    assert!(html.contains("id=\"latest-alert\""), "{html}");
    assert!(
        html.contains("restore of crm-prod failed") || html.contains("Restore of crm-prod failed")
    );
    let (_, html) = vic.get("/instances").await;
    assert!(
        !html.contains("id=\"latest-alert\""),
        "a viewer is not in the audience of restore alerts"
    );
    let id = s.my_alerts(&admin, 1).unwrap()[0].id;
    let (status, _) = root
        .post(&format!("/alerts/{id}/dismiss"), &[], false)
        .await;
    assert_eq!(status, 403, "not without the form's token");
    let (status, _) = root.post(&format!("/alerts/{id}/dismiss"), &[], true).await;
    assert_eq!(status, 303);
    let (_, html) = root.get("/instances").await;
    assert!(!html.contains("id=\"latest-alert\""), "dismissed");
    // Another System Administrator still sees it.
    let token = user_token(&srv, "root2", "system_administrator");
    let root2 = s.authenticate_token(&token).unwrap();
    assert_eq!(s.my_alerts(&root2, 10).unwrap()[0].id, id);
}

/// Seed 001's communications schedule for updates and the refresh events, by email: who gets
/// which message. "Update scheduled" and refresh outcomes go to All Admins (System
/// Administrators, plus the instance's extra recipients); "Update successful" to All Admins and
/// Users (everyone with access); "Update in progress" and "Refresh accepted" send no email.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_and_refresh_emails_reach_the_people_the_schedule_names() {
    use steward_server::services::updates::{ScheduleRequest, UpdateNowRequest};
    use steward_server::services::workitems::RefreshRequest;

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let inbox = smtp_server(listener);
    let e = env(port).await;
    let s = &e.state.services;
    let admin_name = e.admin.username.clone();
    s.set_user_email(&e.admin, &admin_name, Some("root@example.com"))
        .unwrap();
    e.user("sam", "system_administrator", "sam@example.com");
    e.user("dana", "delegated_admin", "dana@example.com");
    e.user("vic", "viewer", "vic@example.com");
    let admin = e.admin.clone();
    let now = e.clock.now();
    e.blocking(move |st| {
        let s = &st.services;
        for (name, kind, release) in [
            ("crm-prod", "production", "8.2"),
            ("crm-sand", "sandbox", "8.2"),
            ("crm-src", "production", "9.1"),
            ("crm-test", "sandbox", "9.1"),
        ] {
            s.create_instance(&admin, name, kind, Some(release))
                .unwrap();
        }
        s.add_recipient(&admin, "crm-prod", "ops@example.com")
            .unwrap();
        // An update scheduled on production; a sandbox updated now.
        let at = |d: i64| (now + Duration::days(d)).to_rfc3339();
        s.schedule_update(
            &admin,
            "crm-prod",
            &ScheduleRequest {
                target: "9.0".into(),
                preferred_start: at(40),
                alternate_start: at(41),
                time_zone: None,
            },
        )
        .unwrap();
        s.update_now(
            &admin,
            "crm-sand",
            &UpdateNowRequest {
                target: Some("9.0".into()),
                confirm: false,
            },
        )
        .unwrap();
        while st.services.run_next_job(&st.jobs).unwrap() {}
        // A refresh of crm-test from crm-src, run at its window.
        s.request_refresh(
            &admin,
            &RefreshRequest {
                source: "crm-src".into(),
                target: "crm-test".into(),
                at: None,
                window_start: now + Duration::hours(25),
                acknowledge: true,
            },
        )
        .unwrap();
    })
    .await;
    e.clock.advance(Duration::hours(26));
    e.blocking(|st| {
        st.services.tick_workitems().unwrap();
        while st.services.run_next_job(&st.jobs).unwrap() {}
    })
    .await;
    e.deliver().await;

    let mails = inbox.lock().unwrap().clone();
    let to = |subject: &str| -> BTreeSet<String> {
        mails
            .iter()
            .filter(|m| m.data.contains(&format!("Subject: [Steward] {subject}")))
            .flat_map(|m| m.to.iter().cloned())
            .collect()
    };
    let set = |names: &[&str]| -> BTreeSet<String> {
        names.iter().map(|n| format!("{n}@example.com")).collect()
    };
    assert_eq!(
        to("Update scheduled: crm-prod"),
        set(&["root", "sam", "ops"]),
        "All Admins and the instance's extra recipient"
    );
    assert_eq!(
        to("Update scheduled: crm-sand"),
        set(&["root", "sam"]),
        "update now schedules too"
    );
    assert_eq!(
        to("Update successful: crm-sand"),
        set(&["root", "sam", "dana", "vic"]),
        "All Admins and Users"
    );
    assert!(
        to("Update in progress").is_empty(),
        "no email for in progress"
    );
    assert!(to("Refresh accepted").is_empty(), "in-product only");
    assert_eq!(to("Refresh succeeded: crm-test"), set(&["root", "sam"]));
    let success = mails
        .iter()
        .find(|m| {
            m.data
                .contains("Subject: [Steward] Update successful: crm-sand")
        })
        .unwrap();
    assert!(success.data.contains("9.0"), "{}", success.data);
    assert!(
        success
            .data
            .contains("http://steward.test:8080/instances/crm-sand"),
        "{}",
        success.data
    );
    // Every event was recorded (webhooks aside, the log holds what was sent and to whom).
    let log = e.log();
    assert!(log.iter().all(|d| d.state == "sent"), "{log:#?}");
    for event in [
        "update_scheduled",
        "update_in_progress",
        "update_succeeded",
        "refresh_accepted",
        "refresh_started",
        "refresh_succeeded",
    ] {
        let emailed = log.iter().any(|d| d.event == event);
        let silent = matches!(
            event,
            "update_in_progress" | "refresh_accepted" | "refresh_started"
        );
        assert_eq!(emailed, !silent, "{event}: {log:#?}");
    }
}
