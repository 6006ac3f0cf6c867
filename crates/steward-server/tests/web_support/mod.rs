//! The admin center over plain HTTP, for page tests that need no browser: `Web`, a signed-in
//! session (the sign-in form posted, its session cookie kept) that fetches pages and posts
//! forms with their CSRF token, and helpers that read rows and elements out of a page.
//! Include with `mod web_support;`.
#![allow(dead_code)]

use steward_server::testing::TestServer;

/// A signed-in browser session, without a browser: the sign-in form posted over HTTP.
pub struct Web {
    url: String,
    cookie: String,
    http: reqwest::Client,
    /// Pages come back with the templates' HTML escapes undone (see [`unescape`]).
    unescaped: bool,
}

impl Web {
    pub async fn sign_in(srv: &TestServer) -> Self {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let csrf = "cd".repeat(32);
        let resp = http
            .post(format!("{}/login", srv.url))
            .header("cookie", format!("steward_login_csrf={csrf}"))
            .form(&[
                ("username", "admin"),
                ("password", srv.admin_password.as_str()),
                ("csrf", csrf.as_str()),
            ])
            .send()
            .await
            .unwrap();
        let cookie = resp
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with("steward_session="))
            .and_then(|v| v.split(';').next())
            .unwrap_or_else(|| panic!("signed in: {}", resp.status()))
            .to_owned();
        Self {
            url: srv.url.clone(),
            cookie,
            http,
            unescaped: false,
        }
    }

    /// The same session, its pages read as people read them (see [`unescape`]).
    pub fn unescaping(self) -> Self {
        Self {
            unescaped: true,
            ..self
        }
    }

    /// The session cookie (`steward_session=…`), for requests the helpers do not make.
    pub fn cookie(&self) -> &str {
        &self.cookie
    }

    /// `GET path`: the status and the page.
    pub async fn get(&self, path: &str) -> (u16, String) {
        let resp = self
            .http
            .get(format!("{}{path}", self.url))
            .header("cookie", &self.cookie)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let html = resp.text().await.unwrap();
        (
            status,
            if self.unescaped {
                unescape(&html)
            } else {
                html
            },
        )
    }

    /// `GET path`, which must answer 200.
    pub async fn page(&self, path: &str) -> String {
        let (status, html) = self.get(path).await;
        assert_eq!(status, 200, "{path}: {html}");
        html
    }

    /// Posts `fields` and the session's CSRF token (read from `form_page`): the status, the
    /// redirect's location (if any) and the page.
    pub async fn post(
        &self,
        form_page: &str,
        path: &str,
        fields: &[(&str, &str)],
    ) -> (u16, Option<String>, String) {
        let html = self.page(form_page).await;
        let csrf = html
            .split("name=\"csrf\" value=\"")
            .nth(1)
            .unwrap_or_else(|| panic!("no CSRF token on {form_page}"))
            .split('"')
            .next()
            .unwrap()
            .to_owned();
        let mut form: Vec<(&str, &str)> = vec![("csrf", csrf.as_str())];
        form.extend_from_slice(fields);
        let resp = self
            .http
            .post(format!("{}{path}", self.url))
            .header("cookie", &self.cookie)
            .form(&form)
            .send()
            .await
            .unwrap();
        let location = resp
            .headers()
            .get("location")
            .map(|l| l.to_str().unwrap().to_owned());
        (resp.status().as_u16(), location, resp.text().await.unwrap())
    }
}

/// The page as people read it: the templates' HTML escapes undone (`&#x2f;` is `/`).
pub fn unescape(html: &str) -> String {
    html.replace("&#x2f;", "/")
        .replace("&#x27;", "'")
        .replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// The ids of the rows the page's table shows, in order: `<tr id="{prefix}NAME"`.
pub fn rows(html: &str, prefix: &str) -> Vec<String> {
    let marker = format!("<tr id=\"{prefix}");
    html.split(&marker)
        .skip(1)
        .map(|rest| rest[..rest.find('"').unwrap()].to_owned())
        .collect()
}

/// The tag of the element with `id`: `input` or `select` for a picker.
pub fn tag_of(html: &str, id: &str) -> String {
    let at = html
        .find(&format!(" id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in {html}"));
    let open = html[..at].rfind('<').unwrap();
    html[open + 1..at].to_owned()
}

/// The text of the element with `id` (up to its first tag).
pub fn text_of(html: &str, id: &str) -> String {
    let at = html
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in {html}"));
    let rest = &html[at..];
    let start = rest.find('>').unwrap() + 1;
    let end = rest[start..].find('<').unwrap();
    rest[start..start + end].trim().to_owned()
}
