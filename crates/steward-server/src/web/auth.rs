//! Signing in and out of the admin center.

use axum::extract::State;
use axum::http::header::SET_COOKIE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use minijinja::context;

use super::render::{Page, sentence};
use super::session::{
    ClientAddress, Cookies, LOGIN_CSRF_COOKIE, LoginPosted, Posted, SESSION_COOKIE, cookie,
    flash_of, random_token, redirect,
};
use crate::SharedState;
use crate::api::status_of;

/// How long a sign-in form stays usable, in seconds.
const LOGIN_FORM_SECS: i64 = 2 * 60 * 60;

/// `GET /login`: the sign-in form (or straight to the instances when signed in already).
pub async fn login_page(State(st): State<SharedState>, headers: HeaderMap) -> Response {
    if let Some(c) = cookie(&headers, SESSION_COOKIE)
        && st.run(move |s| s.session(&c)).await.is_ok()
    {
        return redirect("/instances", []);
    }
    login_form(&st, &headers, StatusCode::OK, None, "")
}

/// The sign-in form with a double-submit token: the request's `steward_login_csrf` cookie
/// when it has a well-formed one (so several tabs work), else a new one.
fn login_form(
    st: &SharedState,
    headers: &HeaderMap,
    status: StatusCode,
    error: Option<String>,
    username: &str,
) -> Response {
    let token = cookie(headers, LOGIN_CSRF_COOKIE)
        .filter(|t| t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()))
        .unwrap_or_else(random_token);
    let page = Page::anonymous("Sign in").with_notice(flash_of(headers));
    let mut response = page.render(
        st,
        status,
        "login.html",
        context! { login_csrf => token, username => username, error => error },
    );
    let set = Cookies::new(&st.config).set(LOGIN_CSRF_COOKIE, &token, LOGIN_FORM_SECS);
    response.headers_mut().append(SET_COOKIE, set);
    response
}

/// `POST /login` (username, password, csrf)
pub async fn login(
    State(st): State<SharedState>,
    ClientAddress(client): ClientAddress,
    headers: HeaderMap,
    form: LoginPosted,
) -> Response {
    let username = form.field("username").trim().to_owned();
    let password = form.field("password").to_owned();
    let user = username.clone();
    match st
        .run(move |s| s.login_from(&user, &password, client))
        .await
    {
        Ok((_, session)) => {
            let cookies = Cookies::new(&st.config);
            let max_age = (session.expires_at - st.services.now())
                .num_seconds()
                .max(60);
            redirect(
                "/instances",
                [
                    cookies.set(SESSION_COOKIE, &session.cookie, max_age),
                    cookies.clear(LOGIN_CSRF_COOKIE),
                ],
            )
        }
        Err(e) => login_form(
            &st,
            &headers,
            status_of(e.kind),
            Some(sentence(&e.message)),
            &username,
        ),
    }
}

/// `POST /logout` (csrf): ends the session and forgets the cookie.
pub async fn logout(State(st): State<SharedState>, form: Posted) -> Response {
    let session_cookie = form.session.cookie.clone();
    if let Err(e) = st.run(move |s| s.logout(&session_cookie)).await {
        return Page::new(&form.session, "", "Sign out").service_error(&st, &e);
    }
    let cookies = Cookies::new(&st.config);
    redirect(
        "/login",
        [
            cookies.clear(SESSION_COOKIE),
            cookies.flash("You have signed out."),
        ],
    )
}
