//! Queries recorded at backup time for restore drills (`cairn drill`): the
//! vectors of a few stored points of each collection, with the live
//! cluster's exact top ids for them, filtered on an indexed payload field
//! for every other query where the collection has one.
//!
//! A backup drafts the probes before it reads the shards and asks them
//! again once every shard is read; only probes answered the same both
//! times are kept, so a probe's answer is the backed-up data's even while
//! the cluster takes writes (a collection written to throughout may keep
//! none, and a drill then checks only its counts).

use std::collections::BTreeMap;

use cairn_model::Probe;
use cairn_qdrant::Client;
use serde_json::{json, Value};

/// Probes recorded per collection.
pub const PROBES: usize = 4;
/// Ids recorded per probe.
pub const TOP: usize = 10;

/// Probes for collection `name`, asked now. A collection that cannot be
/// read, or whose points have no dense vector, gets none (with a warning):
/// probes never fail a backup.
pub(crate) async fn draft(
    client: &Client,
    name: &str,
    payload_schema: &BTreeMap<String, Value>,
) -> Vec<Probe> {
    let points = match client.scroll(name, PROBES).await {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(collection = %name, error = %e, "could not read points to record drill probes; this backup's drill checks counts only");
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for (i, p) in points.iter().enumerate() {
        let Some((using, vector)) = dense_vector(&p["vector"]) else {
            continue;
        };
        let filter = (i % 2 == 1)
            .then(|| filter_for(p, payload_schema))
            .flatten();
        let mut probe = Probe {
            point: p["id"].clone(),
            using,
            vector,
            filter,
            top: Vec::new(),
        };
        match answer(client, name, &probe).await {
            Ok(top) => {
                probe.top = top;
                out.push(probe);
            }
            Err(e) => {
                tracing::warn!(collection = %name, error = %e, "a drill probe could not be asked; it is left out");
            }
        }
    }
    out
}

/// The probes the cluster still answers as it did when they were drafted.
pub(crate) async fn confirm(client: &Client, name: &str, drafts: Vec<Probe>) -> Vec<Probe> {
    let mut out = Vec::new();
    for p in drafts {
        match answer(client, name, &p).await {
            Ok(top) if same_ids(&top, &p.top) => out.push(p),
            Ok(_) => {
                tracing::info!(collection = %name, point = %p.point, "a drill probe's answer changed while the shards were read (writes); it is left out");
            }
            Err(e) => {
                tracing::warn!(collection = %name, error = %e, "a drill probe could not be asked again; it is left out");
            }
        }
    }
    out
}

/// The exact top ids for `probe` from `collection` (no index used).
pub(crate) async fn answer(
    client: &Client,
    collection: &str,
    probe: &Probe,
) -> cairn_qdrant::Result<Vec<Value>> {
    let mut extra = serde_json::Map::new();
    if let Some(u) = &probe.using {
        extra.insert("using".into(), Value::String(u.clone()));
    }
    if let Some(f) = &probe.filter {
        extra.insert("filter".into(), f.clone());
    }
    #[allow(clippy::cast_possible_truncation)]
    let vector: Vec<f32> = probe.vector.iter().map(|&x| x as f32).collect();
    client
        .exact_top(collection, &vector, TOP, Some(&Value::Object(extra)))
        .await
}

/// True when two answers hold the same ids (points at equal distance may
/// come in either order).
pub(crate) fn same_ids(a: &[Value], b: &[Value]) -> bool {
    let key = |v: &[Value]| {
        let mut k: Vec<String> = v.iter().map(Value::to_string).collect();
        k.sort();
        k
    };
    key(a) == key(b)
}

/// The first dense vector of a point as Qdrant returns it: an array (the
/// unnamed vector) or an object of named vectors (sparse and multi-vectors
/// are skipped).
fn dense_vector(v: &Value) -> Option<(Option<String>, Vec<f64>)> {
    fn numbers(a: &[Value]) -> Option<Vec<f64>> {
        if a.is_empty() {
            return None;
        }
        a.iter().map(Value::as_f64).collect()
    }
    match v {
        Value::Array(a) => numbers(a).map(|x| (None, x)),
        Value::Object(m) => m.iter().find_map(|(k, v)| {
            v.as_array()
                .and_then(|a| numbers(a))
                .map(|x| (Some(k.clone()), x))
        }),
        _ => None,
    }
}

/// A filter matching the point's own value of an indexed keyword, integer
/// or bool field, when it has one.
fn filter_for(point: &Value, schema: &BTreeMap<String, Value>) -> Option<Value> {
    schema.iter().find_map(|(field, s)| {
        let kind = s["data_type"].as_str()?;
        if !matches!(kind, "keyword" | "integer" | "bool") {
            return None;
        }
        let v = &point["payload"][field];
        (v.is_string() || v.is_i64() || v.is_u64() || v.is_boolean())
            .then(|| json!({ "must": [{ "key": field, "match": { "value": v } }] }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_and_filters_are_taken_from_points_as_qdrant_returns_them() {
        assert_eq!(dense_vector(&json!([0.5, 1])), Some((None, vec![0.5, 1.0])));
        assert_eq!(
            dense_vector(&json!({"sparse": {"indices": [1], "values": [0.5]}, "text": [0.25]})),
            Some((Some("text".into()), vec![0.25]))
        );
        assert_eq!(dense_vector(&json!({"colbert": [[0.1, 0.2]]})), None);
        assert_eq!(dense_vector(&json!([])), None);
        let schema: BTreeMap<String, Value> = [
            ("body".to_string(), json!({"data_type": "text"})),
            ("lang".to_string(), json!({"data_type": "keyword"})),
        ]
        .into();
        let p = json!({"id": 7, "payload": {"body": "x", "lang": "en"}});
        assert_eq!(
            filter_for(&p, &schema),
            Some(json!({"must": [{"key": "lang", "match": {"value": "en"}}]}))
        );
        assert_eq!(
            filter_for(&json!({"payload": {"lang": ["en"]}}), &schema),
            None
        );
        assert!(same_ids(&[json!(1), json!("a")], &[json!("a"), json!(1)]));
        assert!(!same_ids(&[json!(1)], &[json!(2)]));
    }
}
