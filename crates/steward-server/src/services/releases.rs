//! The release catalog as the surfaces show it.

use chrono::NaiveDate;
use serde::Serialize;
use steward_core::policy::{Action, authorize};

use super::{Actor, Result, Services};

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ReleaseView {
    /// e.g. `9.0`
    pub version: String,
    /// `major` or `service`
    pub kind: String,
    pub released: NaiveDate,
    pub end_of_support: Option<NaiveDate>,
    pub description: String,
    /// Whether new instances get this release when none is named.
    pub latest: bool,
}

impl Services {
    pub fn list_releases(&self, actor: &Actor) -> Result<Vec<ReleaseView>> {
        authorize(actor.role, Action::ViewReleases)?;
        let latest = self.catalog.latest().version;
        Ok(self
            .catalog
            .releases()
            .iter()
            .map(|r| ReleaseView {
                version: r.version.to_string(),
                kind: match r.kind {
                    steward_core::release::ReleaseKind::Major => "major".into(),
                    steward_core::release::ReleaseKind::Service => "service".into(),
                },
                released: r.released,
                end_of_support: r.end_of_support,
                description: r.description.clone(),
                latest: r.version == latest,
            })
            .collect())
    }
}
