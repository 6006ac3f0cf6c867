//! The Nodes page (`/nodes`): every Steward node sharing this control plane, with its status
//! (up, down, stopped), address, last heartbeat, instances and running jobs. The services
//! decide the status (`steward_core::node`); every role may see the page.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use minijinja::context;
use serde::Serialize;
use steward_core::clock::display_time;

use super::render::Page;
use super::session::WebSession;
use crate::SharedState;
use crate::services::nodes::NodeView;

pub fn routes() -> Router<SharedState> {
    Router::new().route("/nodes", get(page))
}

/// A node as the page shows it.
#[derive(Serialize)]
struct NodeRow {
    name: String,
    address: String,
    status: String,
    status_label: &'static str,
    /// The badge's CSS classes.
    badge: &'static str,
    version: String,
    started: String,
    /// UTC, to the second (the column says UTC).
    heartbeat: String,
    instances: u64,
    running_jobs: u64,
    this_node: bool,
}

impl From<NodeView> for NodeRow {
    fn from(n: NodeView) -> Self {
        let (status_label, badge) = match n.status.as_str() {
            "up" => ("Up", "badge badge-backup-completed"),
            "down" => ("Down", "badge badge-backup-failed"),
            _ => ("Stopped", "badge badge-backup-deleted"),
        };
        Self {
            name: n.name,
            address: n.address,
            status: n.status,
            status_label,
            badge,
            version: n.version,
            started: display_time(&n.started_at).to_string(),
            heartbeat: n.last_heartbeat.format("%Y-%m-%d %H:%M:%S").to_string(),
            instances: n.instances,
            running_jobs: n.running_jobs,
            this_node: n.this_node,
        }
    }
}

/// `GET /nodes`
pub async fn page(State(st): State<SharedState>, session: WebSession) -> Response {
    let page = Page::new(&session, "nodes", "Nodes");
    let actor = session.actor.clone();
    match st.run(move |s| s.list_nodes(&actor)).await {
        Ok(nodes) => {
            let nodes: Vec<NodeRow> = nodes.into_iter().map(NodeRow::from).collect();
            let down_seconds = st.services.node.settings.down_after.num_seconds();
            page.render(
                &st,
                StatusCode::OK,
                "nodes.html",
                context! { nodes => nodes, down_seconds => down_seconds },
            )
        }
        Err(e) => page.service_error(&st, &e),
    }
}
