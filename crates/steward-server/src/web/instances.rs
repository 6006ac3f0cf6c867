//! The Instances tab: the list with its create form, the detail page, switching type and
//! deleting through a confirmation page. Handlers translate forms to service calls; the
//! services decide, and the change forms are shown only where `authorize` allows them.

use std::str::FromStr;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use minijinja::context;
use serde::Serialize;
use steward_core::instance::{InstanceState, InstanceType};
use steward_core::policy::{Action, authorize};

use super::render::{Page, sentence};
use super::session::{Posted, WebSession, redirect_with_notice};
use crate::SharedState;
use crate::api::status_of;
use crate::error::ServiceError;
use crate::services::InstanceView;

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
}

impl Default for Draft {
    fn default() -> Self {
        Self {
            name: String::new(),
            instance_type: InstanceType::Sandbox.as_str().into(),
            release: String::new(),
        }
    }
}

/// `GET /instances`
pub async fn list(State(st): State<SharedState>, session: WebSession) -> Response {
    list_page(&st, &session, StatusCode::OK, None, Draft::default()).await
}

async fn list_page(
    st: &SharedState,
    session: &WebSession,
    status: StatusCode,
    error: Option<String>,
    draft: Draft,
) -> Response {
    let actor = session.actor.clone();
    let loaded = st
        .run(move |s| Ok((s.list_instances(&actor)?, s.list_releases(&actor)?)))
        .await;
    let page = Page::new(session, "instances", "Instances");
    let (list, releases) = match loaded {
        Ok(v) => v,
        Err(e) => return page.service_error(st, &e),
    };
    let allowed = Allowed::of(session);
    let rows: Vec<InstanceRow> = list.instances.iter().map(InstanceRow::from).collect();
    let types: Vec<&str> = InstanceType::ALL.iter().map(|t| t.as_str()).collect();
    page.render(
        st,
        status,
        "instances.html",
        context! {
            instances => rows,
            total_storage => list.total_storage_bytes,
            releases => releases,
            types => types,
            draft => draft,
            can_create => allowed.create,
            can_switch => allowed.switch,
            can_delete => allowed.delete,
            error => error,
        },
    )
}

/// `POST /instances` (name, type, release)
pub async fn create(State(st): State<SharedState>, form: Posted) -> Response {
    let draft = Draft {
        name: form.field("name").trim().to_owned(),
        instance_type: form.field("type").to_owned(),
        release: form.field("release").to_owned(),
    };
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
                "Created the {} instance {} on release {}.",
                i.instance_type, i.name, i.release
            ),
        ),
        Err(e) => {
            list_page(
                &st,
                &form.session,
                status_of(e.kind),
                Some(sentence(&e.message)),
                draft,
            )
            .await
        }
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
