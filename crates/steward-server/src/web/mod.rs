//! The web admin center: server-rendered pages over the same services the API calls.
//!
//! Invariants: every page needs a live browser session (else a redirect to `/login`); every
//! form carries the session's CSRF token and every POST is refused (403, nothing changed)
//! without it; permissions shown in pages come from `steward_core::policy::authorize`;
//! templates and assets are embedded in the binary.
//!
//! Routes: `/` → `/instances`; `/login` (GET, POST); `/logout` (POST); `/instances` (GET,
//! POST create); `/instances/{name}`; `/instances/{name}/switch` (POST);
//! `/instances/{name}/delete` (GET confirmation, POST); `/audit`; `/backups?instance=`,
//! `/backups/new` (POST), `/backups/verify` (POST), `/backups/{id}/edit` (GET, POST), `/backups/{id}/delete` (GET
//! confirmation, POST), `/backups/{id}/restore` (GET select target, POST restore),
//! `/backups/{id}/restore/review?target=` (GET); restore to a moment (`pitr.rs`:
//! `/backups/restore-at/review` (GET), `/backups/restore-at` (POST)); the Updates tab (`updates.rs`: `/updates`,
//! `/updates/policy`, `/updates/{name}` and its schedule, approve, withdraw, reschedule,
//! cancel, now and rehearse forms); the Work items tab (`workitems.rs`: `/workitems`,
//! `/workitems/refresh`, `/workitems/{id}` and its reschedule, cancel and accept forms); the
//! Notifications tab (`notifications.rs`: `/notifications` with the schedule, recipients and
//! webhook forms) and `/alerts/{id}/dismiss`; the Restore drills page (`drills.rs`: `/drills`
//! with the fleet view, `/drills/run`); the Nodes page (`nodes.rs`: `/nodes`); `/assets/{file}`.

mod assets;
mod audit;
mod auth;
mod backups;
mod drills;
mod instances;
mod nodes;
mod notifications;
mod paging;
mod pitr;
mod render;
mod session;
mod updates;
mod workitems;

use axum::Router;
use axum::extract::State;
use axum::http::header::{
    CONTENT_SECURITY_POLICY, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{Redirect, Response};
use axum::routing::{get, post};

pub use render::format_size;
pub use session::{CSRF_MESSAGE, csrf_matches};
pub use updates::time_in_zone;
pub use workitems::parse_local_time;

use crate::SharedState;
use render::Page;

pub fn router(state: SharedState) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/instances") }))
        .route("/login", get(auth::login_page).post(auth::login))
        .route("/logout", post(auth::logout))
        .route("/instances", get(instances::list).post(instances::create))
        .route("/instances/{name}", get(instances::show))
        .route("/instances/{name}/switch", post(instances::switch))
        .route(
            "/instances/{name}/delete",
            get(instances::confirm_delete).post(instances::delete),
        )
        .route("/audit", get(audit::page))
        .route("/backups", get(backups::list))
        .route("/backups/new", post(backups::create))
        .route("/backups/verify", post(backups::verify))
        .route(
            "/backups/{id}/edit",
            get(backups::edit_form).post(backups::edit),
        )
        .route(
            "/backups/{id}/delete",
            get(backups::confirm_delete).post(backups::delete),
        )
        .route(
            "/backups/{id}/restore",
            get(backups::select_target).post(backups::restore),
        )
        .route("/backups/{id}/restore/review", get(backups::review))
        .merge(updates::routes())
        .merge(workitems::routes())
        .merge(notifications::routes())
        .merge(drills::routes())
        .merge(nodes::routes())
        .merge(pitr::routes())
        .route("/assets/{file}", get(assets::serve))
        .fallback(not_found)
        .layer(axum::middleware::map_response(security_headers))
        .with_state(state)
}

/// Headers every admin center response carries: no framing, no sniffing, scripts and
/// styles only from Steward itself.
async fn security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'",
        ),
    );
    h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    response
}

async fn not_found(State(st): State<SharedState>) -> Response {
    Page::anonymous("Not found").error(
        &st,
        StatusCode::NOT_FOUND,
        "Not found",
        "There is no page at this address.",
    )
}
