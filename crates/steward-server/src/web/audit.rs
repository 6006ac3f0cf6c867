//! The Audit tab: the audit log with a filter by who, action and target, and each entry's
//! before/after values shown as readable changes.

use std::collections::BTreeSet;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use minijinja::context;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use super::render::Page;
use super::session::WebSession;
use crate::SharedState;
use crate::services::AuditQuery;

/// How many entries the page shows at most.
const LIMIT: i64 = 200;

#[derive(Debug, Default, Deserialize, Serialize)]
pub struct AuditFilterForm {
    #[serde(default)]
    actor: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    target: String,
}

/// One changed value of an audit entry: `field: before → after`.
#[derive(Debug, PartialEq, Eq, Serialize)]
pub struct Change {
    pub field: String,
    pub before: Option<String>,
    pub after: Option<String>,
}

/// A JSON value as a person reads it: strings bare, `null` as "none", the rest compact.
fn show(v: &Json) -> String {
    match v {
        Json::String(s) => steward_core::clock::display_time_text(s).unwrap_or_else(|| s.clone()),
        Json::Null => "none".into(),
        other => other.to_string(),
    }
}

/// The changes an entry's details record. `{"before": {..}, "after": {..}}` becomes one line
/// per field that differs (or exists on one side only); other keys become `key: value`.
pub fn changes(details: &Json) -> Vec<Change> {
    let Some(obj) = details.as_object() else {
        return match details {
            Json::Null => Vec::new(),
            other => vec![Change {
                field: "details".into(),
                before: None,
                after: Some(show(other)),
            }],
        };
    };
    let mut out = Vec::new();
    let before = obj.get("before");
    let after = obj.get("after");
    match (
        before.and_then(Json::as_object),
        after.and_then(Json::as_object),
    ) {
        (b, a) if b.is_some() || a.is_some() => {
            let keys: BTreeSet<&String> = b.iter().chain(a.iter()).flat_map(|m| m.keys()).collect();
            for key in keys {
                let bv = b.and_then(|m| m.get(key));
                let av = a.and_then(|m| m.get(key));
                if bv.is_some() && bv == av {
                    continue;
                }
                out.push(Change {
                    field: key.clone(),
                    before: bv.map(show),
                    after: av.map(show),
                });
            }
        }
        _ => {
            // Scalars (or absent) on both sides.
            if before.is_some() || after.is_some() {
                out.push(Change {
                    field: "value".into(),
                    before: before.map(show),
                    after: after.map(show),
                });
            }
        }
    }
    for (key, value) in obj {
        if key != "before" && key != "after" {
            out.push(Change {
                field: key.clone(),
                before: None,
                after: Some(show(value)),
            });
        }
    }
    out
}

#[derive(Serialize)]
struct EntryRow {
    at: String,
    actor: String,
    action: String,
    target: String,
    changes: Vec<Change>,
}

/// `GET /audit?actor=&action=&target=`
pub async fn page(
    State(st): State<SharedState>,
    session: WebSession,
    Query(filter): Query<AuditFilterForm>,
) -> Response {
    let page = Page::new(&session, "audit", "Audit");
    let actor = session.actor.clone();
    let query = AuditQuery {
        actor: Some(filter.actor.trim().to_owned()),
        action: Some(filter.action.trim().to_owned()),
        target: Some(filter.target.trim().to_owned()),
        since: None,
        limit: Some(LIMIT),
    };
    match st.run(move |s| s.list_audit(&actor, &query)).await {
        Ok(rows) => {
            let entries: Vec<EntryRow> = rows
                .into_iter()
                .map(|r| EntryRow {
                    at: r.at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
                    changes: changes(&r.details),
                    actor: r.actor,
                    action: r.action,
                    target: r.target,
                })
                .collect();
            page.render(
                &st,
                StatusCode::OK,
                "audit.html",
                context! { entries => entries, filter => filter, limit => LIMIT },
            )
        }
        Err(e) => page.service_error(&st, &e),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn c(field: &str, before: Option<&str>, after: Option<&str>) -> Change {
        Change {
            field: field.into(),
            before: before.map(Into::into),
            after: after.map(Into::into),
        }
    }

    #[test]
    fn before_and_after_become_changed_fields() {
        let d = json!({
            "before": {"type": "sandbox", "release": "9.1", "state": "available"},
            "after": {"type": "production", "release": "9.1", "state": "available"},
        });
        assert_eq!(
            changes(&d),
            vec![c("type", Some("sandbox"), Some("production"))]
        );
    }

    #[test]
    fn one_sided_and_extra_details_are_kept() {
        let d = json!({"after": {"role": "viewer", "n": 3}, "retired_to": null});
        assert_eq!(
            changes(&d),
            vec![
                c("n", None, Some("3")),
                c("role", None, Some("viewer")),
                c("retired_to", None, Some("none"))
            ]
        );
        assert_eq!(changes(&json!({})), vec![]);
        assert_eq!(changes(&Json::Null), vec![]);
        assert_eq!(changes(&json!("x")), vec![c("details", None, Some("x"))]);
    }
}
