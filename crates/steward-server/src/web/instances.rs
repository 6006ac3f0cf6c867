//! The Instances tab: the list with its create form, the detail page, switching type and
//! deleting through a confirmation page. Handlers translate forms to service calls; the
//! services decide, and the change forms are shown only where `authorize` allows them.

use std::str::FromStr;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use minijinja::context;
use serde::Serialize;
use steward_core::instance::{InstanceState, InstanceType};
use steward_core::policy::{Action, authorize};

use super::paging::{PAGE_SIZE, PageQuery, Pager};
use super::render::{Page, sentence};
use super::session::{Posted, WebSession, redirect_with_notice};
use crate::SharedState;
use crate::api::status_of;
use crate::error::ServiceError;
use crate::services::nodes::Placement;
use crate::services::{InstanceListQuery, InstanceView};

/// An instance as the templates show it.
#[derive(Serialize)]
struct InstanceRow<'a> {
    name: &'a str,
    #[serde(rename = "type")]
    instance_type: &'a str,
    engine: &'a str,
    release: &'a str,
    state: &'a str,
    state_label: &'a str,
    storage_bytes: u64,
    database_path: &'a str,
    documents_path: &'a str,
    created_at: String,
    created_by: &'a str,
    /// The node that keeps its files.
    node: Option<&'a str>,
    /// The type a switch would move it to.
    switch_to: Option<&'static str>,
}

impl<'a> From<&'a InstanceView> for InstanceRow<'a> {
    fn from(i: &'a InstanceView) -> Self {
        Self {
            name: &i.name,
            instance_type: &i.instance_type,
            engine: &i.engine,
            release: &i.release,
            state: &i.state,
            state_label: InstanceState::from_str(&i.state)
                .map(InstanceState::label)
                .unwrap_or(&i.state),
            storage_bytes: i.storage_bytes,
            database_path: &i.database_path,
            documents_path: &i.documents_path,
            created_at: i.created_at.format("%Y-%m-%d %H:%M UTC").to_string(),
            created_by: &i.created_by,
            node: i.node.as_deref(),
            switch_to: InstanceType::ALL
                .iter()
                .map(|t| t.as_str())
                .find(|t| *t != i.instance_type),
        }
    }
}

/// What the user may change, from `authorize` (templates never look at role names).
struct Allowed {
    create: bool,
    switch: bool,
    delete: bool,
}

impl Allowed {
    fn of(session: &WebSession) -> Self {
        let role = session.actor.role;
        Self {
            create: authorize(role, Action::CreateInstance).is_ok(),
            switch: authorize(role, Action::SwitchInstanceType).is_ok(),
            delete: authorize(role, Action::DeleteInstance).is_ok(),
        }
    }
}

/// The create form's values, kept when it is shown again with an error.
#[derive(Serialize)]
struct Draft {
    name: String,
    #[serde(rename = "type")]
    instance_type: String,
    release: String,
    /// A node's name, or empty for the least loaded one.
    node: String,
}

impl Default for Draft {
    fn default() -> Self {
        Self {
            name: String::new(),
            instance_type: InstanceType::Sandbox.as_str().into(),
            release: String::new(),
            node: String::new(),
        }
    }
}

/// A node the create form offers.
#[derive(Serialize)]
struct NodeChoice {
    name: String,
    instances: u64,
    this_node: bool,
}

/// `GET /instances?page=&q=`: one page of instances by name, with the fleet's totals.
pub async fn list(
    State(st): State<SharedState>,
    session: WebSession,
    Query(query): Query<PageQuery>,
) -> Response {
    list_page(
        &st,
        &session,
        &query,
        StatusCode::OK,
        None,
        Draft::default(),
    )
    .await
}

async fn list_page(
    st: &SharedState,
    session: &WebSession,
    query: &PageQuery,
    status: StatusCode,
    error: Option<String>,
    draft: Draft,
) -> Response {
    let page = Page::new(session, "instances", "Instances");
    let offset = match query.offset() {
        Ok(o) => o,
        Err(e) => return page.service_error(st, &e),
    };
    let actor = session.actor.clone();
    let wanted = InstanceListQuery {
        contains: query.contains(),
        after: None,
        offset,
        limit: Some(PAGE_SIZE),
    };
    let loaded = st
        .run(move |s| {
            let list = s.list_instances_page(&actor, &wanted)?;
            let releases = s.list_releases(&actor)?;
            let nodes = s.list_nodes(&actor)?;
            Ok((list, releases, nodes))
        })
        .await;
    let (list, releases, nodes) = match loaded {
        Ok(v) => v,
        Err(e) => return page.service_error(st, &e),
    };
    // The create form names a node only when there is a choice.
    let nodes: Vec<NodeChoice> = nodes
        .into_iter()
        .filter(|n| n.status == "up" || n.this_node)
        .map(|n| NodeChoice {
            name: n.name,
            instances: n.instances,
            this_node: n.this_node,
        })
        .collect();
    let nodes = if nodes.len() > 1 { nodes } else { Vec::new() };
    let allowed = Allowed::of(session);
    let rows: Vec<InstanceRow> = list.instances.iter().map(InstanceRow::from).collect();
    let types: Vec<&str> = InstanceType::ALL.iter().map(|t| t.as_str()).collect();
    let pager = Pager::new("/instances", query, list.total, &[]);
    page.render(
        st,
        status,
        "instances.html",
        context! {
            instances => rows,
            total => list.total,
            total_storage => list.total_storage_bytes,
            pager => pager,
            releases => releases,
            types => types,
            nodes => nodes,
            draft => draft,
            can_create => allowed.create,
            can_switch => allowed.switch,
            can_delete => allowed.delete,
            error => error,
        },
    )
}

/// `POST /instances` (name, type, release, node): created on the node asked for, or on the
/// least loaded one; a form for another node is passed on to it, with the same session (the
/// sessions are in the shared store), and its answer is the answer.
pub async fn create(State(st): State<SharedState>, headers: HeaderMap, form: Posted) -> Response {
    let draft = Draft {
        name: form.field("name").trim().to_owned(),
        instance_type: form.field("type").to_owned(),
        release: form.field("release").to_owned(),
        node: form.field("node").trim().to_owned(),
    };
    let actor = form.session.actor.clone();
    let node = draft.node.clone();
    let placed = st
        .run(move |s| s.place_instance(&actor, Some(node.as_str()).filter(|n| !n.is_empty())))
        .await;
    let failed = |e: ServiceError, draft: Draft| {
        let st = st.clone();
        let session = &form.session;
        async move {
            list_page(
                &st,
                session,
                &PageQuery::default(),
                status_of(e.kind),
                Some(sentence(&e.message)),
                draft,
            )
            .await
        }
    };
    match placed {
        Err(e) => return failed(e, draft).await,
        Ok(Placement::On { name, address }) => {
            let fields = [
                ("csrf", form.session.csrf.as_str()),
                ("name", draft.name.as_str()),
                ("type", draft.instance_type.as_str()),
                ("release", draft.release.as_str()),
                ("node", name.as_str()),
            ];
            return match crate::api::forward::post_form_on(
                &name,
                &address,
                "/instances",
                &headers,
                &fields,
            )
            .await
            {
                Ok(r) => r,
                Err(e) => failed(e, draft).await,
            };
        }
        Ok(Placement::Here) => {}
    }
    let actor = form.session.actor.clone();
    let (name, instance_type, release) = (
        draft.name.clone(),
        draft.instance_type.clone(),
        draft.release.clone(),
    );
    match st
        .run(move |s| s.create_instance(&actor, &name, &instance_type, Some(&release)))
        .await
    {
        Ok(i) => redirect_with_notice(
            &st,
            "/instances",
            &format!(
                "Created the {} instance {} on release {}{}.",
                i.instance_type,
                i.name,
                i.release,
                i.node
                    .as_deref()
                    .map(|n| format!(" on node {n}"))
                    .unwrap_or_default()
            ),
        ),
        Err(e) => failed(e, draft).await,
    }
}

/// `GET /instances/{name}`
pub async fn show(
    State(st): State<SharedState>,
    session: WebSession,
    Path(name): Path<String>,
) -> Response {
    let actor = session.actor.clone();
    let page = Page::new(&session, "instances", &name);
    let target = name.clone();
    match st.run(move |s| s.show_instance(&actor, &target)).await {
        Ok(i) => {
            let allowed = Allowed::of(&session);
            page.render(
                &st,
                StatusCode::OK,
                "instance.html",
                context! {
                    instance => InstanceRow::from(&i),
                    can_switch => allowed.switch,
                    can_delete => allowed.delete,
                    last_drill => i.last_drill.as_ref().map(super::drills::summary),
                    can_drill => authorize(session.actor.role, Action::RunDrill).is_ok(),
                },
            )
        }
        Err(e) => page.service_error(&st, &e),
    }
}

/// `POST /instances/{name}/switch` (type, optional return_to=detail)
pub async fn switch(
    State(st): State<SharedState>,
    Path(name): Path<String>,
    form: Posted,
) -> Response {
    let actor = form.session.actor.clone();
    let to = form.field("type").to_owned();
    let back = if form.field("return_to") == "detail" {
        format!("/instances/{name}")
    } else {
        "/instances".to_owned()
    };
    let target = name.clone();
    match st
        .run(move |s| s.switch_instance(&actor, &target, &to))
        .await
    {
        Ok(i) => {
            // `back` names a live instance (the switch just found it), so it is a safe path.
            let notice = format!("{} is now a {} instance.", i.name, i.instance_type);
            redirect_with_notice(&st, &back, &notice)
        }
        Err(e) => {
            list_page(
                &st,
                &form.session,
                &PageQuery::default(),
                status_of(e.kind),
                Some(sentence(&e.message)),
                Draft::default(),
            )
            .await
        }
    }
}

/// `GET /instances/{name}/delete`: what deleting does, and the confirmation form.
pub async fn confirm_delete(
    State(st): State<SharedState>,
    session: WebSession,
    Path(name): Path<String>,
) -> Response {
    delete_page(&st, &session, &name, StatusCode::OK, None).await
}

async fn delete_page(
    st: &SharedState,
    session: &WebSession,
    name: &str,
    status: StatusCode,
    error: Option<String>,
) -> Response {
    let page = Page::new(session, "instances", "Delete instance");
    if let Err(denied) = authorize(session.actor.role, Action::DeleteInstance) {
        return page.service_error(st, &ServiceError::from(denied));
    }
    let actor = session.actor.clone();
    let name = name.to_owned();
    match st.run(move |s| s.show_instance(&actor, &name)).await {
        Ok(i) => page.render(
            st,
            status,
            "delete.html",
            context! { instance => InstanceRow::from(&i), error => error },
        ),
        Err(e) => page.service_error(st, &e),
    }
}

/// `POST /instances/{name}/delete` (confirm)
pub async fn delete(
    State(st): State<SharedState>,
    Path(name): Path<String>,
    form: Posted,
) -> Response {
    let actor = form.session.actor.clone();
    let confirm = form.field("confirm").trim().to_owned();
    let target = name.clone();
    match st
        .run(move |s| s.delete_instance(&actor, &target, &confirm))
        .await
    {
        Ok(i) => redirect_with_notice(
            &st,
            "/instances",
            &format!(
                "Deleted {}. Its database has moved out of service; its backups stay restorable until they expire.",
                i.name
            ),
        ),
        Err(e) => {
            delete_page(
                &st,
                &form.session,
                &name,
                status_of(e.kind),
                Some(sentence(&e.message)),
            )
            .await
        }
    }
}
