//! Pages of long lists: `?page=N` (and `?q=` to find by name) on the admin center's fleet
//! views, so that a page with 10,000 instances behind it shows 50 rows and stays fast; and the
//! instance pickers of forms, which become a name field when a `<select>` would be too long
//! to use.

use serde::{Deserialize, Serialize};

use super::render::query_value;
use crate::error::ServiceError;
use crate::services::{Actor, InstanceListQuery, Services};

/// Rows on one page of a fleet view.
pub const PAGE_SIZE: u64 = 50;
/// At most this many instances are offered in a `<select>`; above it a form asks for a name.
pub const PICKER_MAX: u64 = 200;

/// The `page` and `q` query parameters of a paged view.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PageQuery {
    pub page: Option<String>,
    pub q: Option<String>,
}

impl PageQuery {
    /// The page asked for, from 1; a clear error for anything but a whole number ≥ 1.
    pub fn number(&self) -> Result<u64, ServiceError> {
        match self
            .page
            .as_deref()
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            None => Ok(1),
            Some(raw) => match raw.parse::<u64>() {
                Ok(n) if n >= 1 => Ok(n),
                _ => Err(ServiceError::invalid(
                    "invalid_page",
                    format!("page must be a whole number from 1 (got {raw:?})"),
                )),
            },
        }
    }

    /// The name filter, trimmed; `None` when empty.
    pub fn contains(&self) -> Option<String> {
        self.q
            .as_deref()
            .map(str::trim)
            .filter(|q| !q.is_empty())
            .map(str::to_owned)
    }

    /// Rows to skip for the page asked for.
    pub fn offset(&self) -> Result<u64, ServiceError> {
        Ok((self.number()? - 1).saturating_mul(PAGE_SIZE))
    }
}

/// What the pager under a paged table shows (`paging.html`'s `pager` macro).
#[derive(Debug, Clone, Serialize)]
pub struct Pager {
    pub page: u64,
    pub pages: u64,
    pub total: u64,
    /// 1-based position of the first and last row shown (0 when none).
    pub first: u64,
    pub last: u64,
    pub prev: Option<String>,
    pub next: Option<String>,
    /// The name filter, as typed.
    pub q: String,
    /// The view's path, for the filter form.
    pub path: String,
}

impl Pager {
    /// The pager of `path` showing page `page` of `total` rows (extra query parameters in
    /// `keep`, already encoded as `k=v` pairs).
    pub fn new(path: &str, query: &PageQuery, total: u64, keep: &[(&str, &str)]) -> Self {
        let page = query.number().unwrap_or(1);
        let pages = total.div_ceil(PAGE_SIZE).max(1);
        let q = query.contains().unwrap_or_default();
        let href = |n: u64| {
            let mut parts: Vec<String> = keep
                .iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, v)| format!("{k}={}", query_value(v)))
                .collect();
            if !q.is_empty() {
                parts.push(format!("q={}", query_value(&q)));
            }
            if n > 1 {
                parts.push(format!("page={n}"));
            }
            if parts.is_empty() {
                path.to_owned()
            } else {
                format!("{path}?{}", parts.join("&"))
            }
        };
        // A page past the end shows nothing: "0–0", not the last row again.
        let first = if (page - 1).saturating_mul(PAGE_SIZE) >= total {
            0
        } else {
            (page - 1) * PAGE_SIZE + 1
        };
        let last = if first == 0 {
            0
        } else {
            page.saturating_mul(PAGE_SIZE).min(total)
        };
        Self {
            page,
            pages,
            total,
            first,
            last,
            prev: (page > 1).then(|| href((page - 1).min(pages))),
            next: (page < pages).then(|| href(page + 1)),
            q,
            path: path.to_owned(),
        }
    }
}

/// The instances a form's picker offers: their names when there are at most [`PICKER_MAX`],
/// else `None` (the form asks for a name, which the service checks).
pub fn instance_choices(s: &Services, actor: &Actor) -> Result<Option<Vec<String>>, ServiceError> {
    let list = s.list_instances_page(
        actor,
        &InstanceListQuery {
            limit: Some(PICKER_MAX),
            ..Default::default()
        },
    )?;
    Ok((list.total <= PICKER_MAX).then(|| list.instances.into_iter().map(|i| i.name).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(page: Option<&str>, q: Option<&str>) -> PageQuery {
        PageQuery {
            page: page.map(Into::into),
            q: q.map(Into::into),
        }
    }

    #[test]
    fn pages_count_and_link_with_the_filter_kept() {
        let p = Pager::new("/instances", &q(Some("2"), Some(" crm ")), 120, &[]);
        assert_eq!((p.page, p.pages, p.first, p.last), (2, 3, 51, 100));
        assert_eq!(p.prev.as_deref(), Some("/instances?q=crm"));
        assert_eq!(p.next.as_deref(), Some("/instances?q=crm&page=3"));
        let last = Pager::new(
            "/instances",
            &q(Some("3"), None),
            120,
            &[("type", "sandbox")],
        );
        assert_eq!((last.first, last.last, last.next), (101, 120, None));
        assert_eq!(last.prev.as_deref(), Some("/instances?type=sandbox&page=2"));
        let past = Pager::new("/instances", &q(Some("9"), None), 120, &[]);
        assert_eq!((past.first, past.last, past.next), (0, 0, None));
        assert_eq!(past.prev.as_deref(), Some("/instances?page=3"));
        let empty = Pager::new("/instances", &q(None, None), 0, &[]);
        assert_eq!((empty.pages, empty.first, empty.last), (1, 0, 0));
    }

    #[test]
    fn a_page_that_is_not_a_whole_number_is_refused() {
        for bad in ["0", "-1", "two", "1.5"] {
            let e = q(Some(bad), None).number().unwrap_err();
            assert_eq!(e.code, "invalid_page", "{bad}");
            assert!(e.message.contains(bad), "{}", e.message);
        }
        assert_eq!(q(Some("7"), None).offset().unwrap(), 6 * PAGE_SIZE);
    }
}
