//! The list commands read every page the server answers: `steward instance list` and
//! `steward drill list` with more instances than one page holds (1,000), against a real
//! `steward serve` whose instances were created over the REST API.

mod common;

use common::*;

/// Creates `n` sandboxes `pg-0000` … over the API, four requests at a time.
fn create_many(s: &Server, n: usize) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let http = reqwest::Client::new();
        let mut left: Vec<usize> = (0..n).collect();
        while !left.is_empty() {
            let batch: Vec<usize> = left.drain(..left.len().min(4)).collect();
            let calls = batch.into_iter().map(|i| {
                let http = http.clone();
                let url = format!("{}/api/v1/instances", s.url);
                async move {
                    let r = http
                        .post(url)
                        .bearer_auth(TOKEN)
                        .json(&serde_json::json!({"name": format!("pg-{i:04}"), "type": "sandbox"}))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status().as_u16(), 201, "{}", r.text().await.unwrap());
                }
            });
            for c in calls.collect::<Vec<_>>() {
                c.await;
            }
        }
    });
}

#[test]
fn list_commands_read_every_page() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&data_dir(&tmp));
    const N: usize = 1001;
    create_many(&s, N);

    let all = s.run(&["instance", "list", "--json"]).ok().json();
    let names: Vec<&str> = all["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len() as u64, all["total"].as_u64().unwrap());
    assert!(names.len() > 1000, "more than one page: {}", names.len());
    assert!(names.contains(&"pg-0000") && names.contains(&"pg-1000"));
    let mut sorted = names.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), names.len(), "no instance twice");

    // Never drilled: every one of them needs attention.
    let fleet = s.run(&["drill", "list", "--json"]).ok().json();
    let listed = fleet["instances"].as_array().unwrap();
    assert_eq!(listed.len() as u64, fleet["matching"].as_u64().unwrap());
    assert!(listed.len() >= N, "more than one page: {}", listed.len());
    assert!(fleet["next_offset"].is_null());
}
