//! Agents and frameworks named the way people name them: a full id, a
//! unique id prefix, a hostname (agents) or a name (frameworks). A name
//! that matches nothing is "not found" (exit 2) and one that matches
//! several is a bad request (exit 4) that lists them, never a silent
//! empty answer.

use mezzo_master::core::view::{AgentRow, FrameworkRow, Page};

use super::{ApiError, Client, decode, with_query};

/// The shortest id prefix taken as an id.
const MIN_PREFIX: usize = 4;

/// Ids are UUIDs: one is taken as it is, with no lookup (which would need
/// the right to read the cluster besides the right to act).
fn is_id(given: &str) -> bool {
    given.len() == 36
        && given.char_indices().all(|(i, ch)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                ch == '-'
            } else {
                ch.is_ascii_hexdigit()
            }
        })
}

/// The id of the agent `given` names.
pub(super) async fn agent(c: &Client, given: &str) -> Result<String, ApiError> {
    if is_id(given) {
        return Ok(given.to_owned());
    }
    let agents: Vec<AgentRow> = all(c, "/api/v1/agents").await?;
    let named: Vec<(String, String)> = agents.into_iter().map(|a| (a.id, a.hostname)).collect();
    pick("agent", "hostname", given, named, "mezzo agents")
}

/// The id of the framework `given` names; frameworks still registered win
/// over removed ones of the same name.
pub(super) async fn framework(c: &Client, given: &str) -> Result<String, ApiError> {
    if is_id(given) {
        return Ok(given.to_owned());
    }
    let frameworks: Vec<FrameworkRow> = all(c, "/api/v1/frameworks").await?;
    let (live, removed): (Vec<_>, Vec<_>) = frameworks.into_iter().partition(|f| f.removed_at.is_none());
    let pairs = |v: Vec<FrameworkRow>| v.into_iter().map(|f| (f.id, f.name)).collect::<Vec<_>>();
    match pick("framework", "name", given, pairs(live), "mezzo frameworks") {
        Err(ApiError::NotFound(_)) => pick("framework", "name", given, pairs(removed), "mezzo frameworks"),
        found => found,
    }
}

/// Every row of a paged list.
pub(super) async fn all<T: serde::de::DeserializeOwned>(c: &Client, path: &str) -> Result<Vec<T>, ApiError> {
    let mut rows = Vec::new();
    loop {
        let page_path = with_query(
            path,
            &[("limit", Some("1000".into())), ("offset", Some(rows.len().to_string()))],
        );
        let page: Page<T> = decode(c.get(&page_path).await?)?;
        let last = page.items.is_empty();
        rows.extend(page.items);
        if last || rows.len() as u64 >= page.total as u64 {
            return Ok(rows);
        }
    }
}

/// The one `(id, name)` that `given` names: its id, its name, or a
/// prefix of its id.
fn pick(
    kind: &str,
    name_is: &str,
    given: &str,
    candidates: Vec<(String, String)>,
    list_with: &str,
) -> Result<String, ApiError> {
    if let Some((id, _)) = candidates.iter().find(|(id, _)| id == given) {
        return Ok(id.clone());
    }
    let matches: Vec<&(String, String)> = candidates
        .iter()
        .filter(|(id, name)| name == given || (given.len() >= MIN_PREFIX && id.starts_with(given)))
        .collect();
    match matches.as_slice() {
        [(id, _)] => Ok(id.clone()),
        [] => Err(ApiError::NotFound(format!(
            "no {kind} {given} (by id, id prefix of {MIN_PREFIX}+ characters, or {name_is}); `{list_with}` lists them"
        ))),
        several => Err(ApiError::Bad(format!(
            "{given} names {} {kind}s: {}; give more of the id",
            several.len(),
            several
                .iter()
                .map(|(id, name)| format!("{id} ({name})"))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agents() -> Vec<(String, String)> {
        [("7834aa-1", "host-a"), ("7834bb-2", "host-b"), ("9999cc-3", "host-b")]
            .map(|(i, n)| (i.to_owned(), n.to_owned()))
            .to_vec()
    }

    #[test]
    fn ids_prefixes_and_names_resolve_or_say_why_not() {
        let p = |g: &str| pick("agent", "hostname", g, agents(), "mezzo agents");
        for given in ["7834aa-1", "7834a", "host-a"] {
            assert!(matches!(p(given), Ok(id) if id == "7834aa-1"), "{given}");
        }
        assert!(
            matches!(p("7834"), Err(ApiError::Bad(m)) if m.contains("7834aa-1 (host-a)") && m.contains("7834bb-2"))
        );
        assert!(matches!(p("host-b"), Err(ApiError::Bad(m)) if m.contains("2 agents")));
        assert!(matches!(p("783"), Err(ApiError::NotFound(m)) if m.contains("mezzo agents")));
        assert!(matches!(p("nope"), Err(ApiError::NotFound(_))));
        assert!(is_id("9fc02dae-3f9b-4c64-ad02-a911a80fedb4"));
        assert!(!is_id("9fc02dae") && !is_id("9fc02dae-3f9b-4c64-ad02-a911a80fedbz"));
    }
}
