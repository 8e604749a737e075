//! Watch streams: the initial objects (unless resuming), then events from the store's history
//! and broadcast, filtered by namespace and selectors (objects entering or leaving the selection
//! show as ADDED or DELETED), with bookmarks, `sendInitialEvents`, timeouts, and an end when the
//! client lags behind or a test ends every watch.

use std::collections::HashMap;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::response::Response;
use http::{StatusCode, header};
use serde_json::{Value, json};

use super::{App, View, partial, selectors};
use crate::apiserver::events;
use crate::apiserver::registry::ResourceType;
use crate::apiserver::store::{self, WatchEvent};
use crate::apiserver::table;

fn event_line(type_: &str, object: Value) -> Bytes {
    let mut s = json!({"type": type_, "object": object}).to_string();
    s.push('\n');
    Bytes::from(s)
}

pub(super) fn watch_response(
    app: &App,
    rt: ResourceType,
    ns: Option<String>,
    params: &HashMap<String, String>,
    view: View,
    alias: Option<ResourceType>,
) -> Response {
    let stream = watch_stream(app.clone(), rt, ns, params.clone(), view, alias);
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::TRANSFER_ENCODING, "chunked")
        .body(Body::from_stream(stream))
        .expect("static response parts are valid")
}

fn watch_stream(
    app: App,
    rt: ResourceType,
    ns: Option<String>,
    params: HashMap<String, String>,
    view: View,
    alias: Option<ResourceType>,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
    async_stream::stream! {
        let (labels, fields) = match selectors(&params) {
            Ok(s) => s,
            Err(e) => { yield Ok(event_line("ERROR", e.status_object())); return; }
        };
        let include = params.get("includeObject").cloned().unwrap_or_else(|| "Metadata".into());
        let bookmarks = params.get("allowWatchBookmarks").is_some_and(|b| b == "true");
        let send_initial = params.get("sendInitialEvents").is_some_and(|b| b == "true");
        let timeout = params.get("timeoutSeconds").and_then(|t| t.parse::<u64>().ok()).unwrap_or(1800);
        let since: Option<u64> = params.get("resourceVersion").filter(|r| !r.is_empty() && *r != "0").and_then(|r| r.parse().ok());
        let mut ender = app.faults.watch_ender();
        ender.borrow_and_update();
        // what the client asked for: the resource itself or the view it is served through
        let shown_as = alias.clone().unwrap_or_else(|| rt.clone());
        let shape = |o: &Value| -> Value {
            let mut o = o.clone();
            o["apiVersion"] = json!(shown_as.api_version());
            o["kind"] = json!(shown_as.kind);
            if alias.is_some() {
                o = events::from_core(&o);
            }
            if view == View::Meta {
                partial(&o)
            } else if view == View::Table {
                table::render(&shown_as.columns, &[o], &include, json!({}))
            } else { o }
        };
        let selected = |o: &Value| labels.matches(&o["metadata"]["labels"]) && fields.matches(o);
        // The event type this watch sees: objects entering or leaving the selection appear as
        // ADDED or DELETED, like on the real server.
        let seen_as = |ev: &WatchEvent| -> Option<&'static str> {
            if ev.group != rt.group || ev.plural != rt.plural || ns.as_deref().is_some_and(|n| ev.namespace != n) {
                return None;
            }
            let now = selected(&ev.object);
            let before = ev.old.as_ref().map(&selected).unwrap_or(now);
            match (ev.type_, before, now) {
                ("MODIFIED", false, true) => Some("ADDED"),
                ("MODIFIED", true, false) => Some("DELETED"),
                (t, _, true) => Some(t),
                _ => None,
            }
        };
        let subscribed = {
            let st = store::lock(&app.state);
            let rv = st.resource_version();
            match since {
                Some(s) if !send_initial => st.subscribe(s).map(|(past, rx)| (vec![], past, rx, rv)),
                _ => {
                    let initial = if since.is_none() || send_initial { st.list(&rt, ns.as_deref(), &labels, &fields) } else { vec![] };
                    st.subscribe(rv).map(|(past, rx)| (initial, past, rx, rv))
                }
            }
        };
        let (initial, past, mut rx, start_rv) = match subscribed {
            Ok(s) => s,
            Err(e) => { yield Ok(event_line("ERROR", e.status_object())); return; }
        };
        let mut last_rv = since.unwrap_or(start_rv);
        for o in initial {
            yield Ok(event_line("ADDED", shape(&o)));
        }
        if send_initial {
            yield Ok(event_line("BOOKMARK", json!({"kind": shown_as.kind, "apiVersion": shown_as.api_version(),
                "metadata": {"resourceVersion": start_rv.to_string(), "annotations": {"k8s.io/initial-events-end": "true"}}})));
        }
        for ev in past {
            last_rv = ev.rv;
            if let Some(t) = seen_as(&ev) { yield Ok(event_line(t, shape(&ev.object))); }
        }
        let deadline = tokio::time::sleep(Duration::from_secs(timeout));
        tokio::pin!(deadline);
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        tick.tick().await;
        loop {
            tokio::select! {
                r = rx.recv() => match r {
                    Ok(ev) => {
                        if ev.rv <= last_rv { continue; }
                        last_rv = ev.rv;
                        if let Some(t) = seen_as(&ev) { yield Ok(event_line(t, shape(&ev.object))); }
                    }
                    // A lagging watcher is cut off; clients resume from their last version.
                    Err(_) => break,
                },
                _ = ender.changed() => break,
                _ = &mut deadline => break,
                _ = tick.tick(), if bookmarks => {
                    yield Ok(event_line("BOOKMARK", json!({"kind": shown_as.kind, "apiVersion": shown_as.api_version(),
                        "metadata": {"resourceVersion": last_rv.to_string()}})));
                }
            }
        }
    }
}
