//! The Work items tab of the admin center.

use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};

use super::session::WebSession;
use crate::SharedState;

/// The workitems tab's routes.
pub fn routes() -> Router<SharedState> {
    Router::new().route("/workitems", get(page))
}

/// Reads a moment typed by a person: RFC 3339 with an offset (`2027-01-10T22:00:00+01:00`),
/// or a local `YYYY-MM-DD HH:MM` (also with a `T`, optionally with seconds) read in `zone`
/// (an IANA name such as `Europe/Paris`; empty means UTC). The error is a sentence naming
/// what is wrong.
pub fn parse_local_time(text: &str, zone: &str) -> Result<DateTime<Utc>, String> {
    let text = text.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    let naive = [
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M:%S",
    ]
    .iter()
    .find_map(|f| NaiveDateTime::parse_from_str(text, f).ok())
    .ok_or_else(|| {
        format!("{text:?} is not a time: write RFC 3339 (2027-01-10T22:00:00Z) or YYYY-MM-DD HH:MM")
    })?;
    let zone = zone.trim();
    if zone.is_empty() || zone.eq_ignore_ascii_case("utc") {
        return Ok(Utc.from_utc_datetime(&naive));
    }
    let tz: chrono_tz::Tz = zone.parse().map_err(|_| {
        format!("{zone:?} is not a time zone; use an IANA name such as Europe/Paris")
    })?;
    match tz.from_local_datetime(&naive) {
        chrono::LocalResult::Single(t) => Ok(t.with_timezone(&Utc)),
        chrono::LocalResult::Ambiguous(_, _) => Err(format!(
            "{text} happens twice in {zone} (the clocks go back); give the offset, e.g. in RFC 3339"
        )),
        chrono::LocalResult::None => Err(format!(
            "{text} does not exist in {zone} (the clocks go forward); choose another time"
        )),
    }
}

async fn page(State(st): State<SharedState>, session: WebSession) -> Response {
    super::section(
        &st,
        &session,
        "workitems",
        "Work items",
        "Requested, scheduled operations with their own lifecycle.",
        &[
            "Database refreshes: a source instance's database at a point in time copied into a sandbox.",
            "Requests at least 24 hours ahead, which you can reschedule or cancel before they start.",
            "Each work item's status and history.",
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_read_in_utc_or_the_given_zone() {
        let utc = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        assert_eq!(
            parse_local_time("2027-01-10T22:00:00+01:00", "Asia/Tokyo").unwrap(),
            utc("2027-01-10T21:00:00Z"),
            "an explicit offset wins over the zone"
        );
        assert_eq!(
            parse_local_time("2027-01-10 22:00", "").unwrap(),
            utc("2027-01-10T22:00:00Z")
        );
        assert_eq!(
            parse_local_time("2027-07-10T22:00", "Europe/Paris").unwrap(),
            utc("2027-07-10T20:00:00Z")
        );
        assert!(
            parse_local_time("tomorrow", "")
                .unwrap_err()
                .contains("not a time")
        );
        assert!(
            parse_local_time("2027-01-10 22:00", "Mars/Olympus")
                .unwrap_err()
                .contains("not a time zone")
        );
        assert!(
            parse_local_time("2027-03-28 02:30", "Europe/Paris")
                .unwrap_err()
                .contains("does not exist")
        );
        assert!(
            parse_local_time("2027-10-31 02:30", "Europe/Paris")
                .unwrap_err()
                .contains("twice")
        );
    }
}
