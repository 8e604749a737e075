//! Requests that name no resource: `/version`, health checks, discovery (`/api`, `/apis`,
//! `/apis/{g}`, `/api/v1`, `/apis/{g}/{v}`, aggregated or not) and OpenAPI v3 documents.

use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode, header};

use super::{App, accept_of, not_found, ok};
use crate::apiserver::error::ApiResult;
use crate::apiserver::{discovery, openapi, store};

/// Serves a non-resource path; 404 for any path this server does not know.
pub(super) fn serve(app: &App, segs: &[&str], headers: &HeaderMap) -> ApiResult<Response> {
    match segs {
        ["version"] => Ok(ok(&discovery::version())),
        ["healthz"] | ["readyz"] | ["livez"] => Ok((StatusCode::OK, "ok").into_response()),
        ["api"] | ["apis"] if discovery::wants_aggregated(accept_of(headers)) => {
            let st = store::lock(&app.state);
            let doc = discovery::aggregated(&st.registry, segs[0] == "api");
            Ok((
                StatusCode::OK,
                [(header::CONTENT_TYPE, discovery::AGGREGATED_V2)],
                doc.to_string(),
            )
                .into_response())
        }
        ["api"] => Ok(ok(&discovery::api_versions(&app.addr))),
        ["apis"] => {
            let st = store::lock(&app.state);
            Ok(ok(&discovery::api_group_list(&st.registry)))
        }
        ["openapi", "v3"] => {
            let st = store::lock(&app.state);
            Ok(ok(&openapi::index(&st.registry)))
        }
        ["openapi", "v3", "api", v] => openapi_doc(app, "", v),
        ["openapi", "v3", "apis", g, v] => openapi_doc(app, g, v),
        ["apis", g] => {
            let st = store::lock(&app.state);
            discovery::api_group(&st.registry, g)
                .map(|v| ok(&v))
                .ok_or_else(not_found)
        }
        ["api", v] => resource_list(app, "", v),
        ["apis", g, v] => resource_list(app, g, v),
        _ => Err(not_found()),
    }
}

fn resource_list(app: &App, group: &str, version: &str) -> ApiResult<Response> {
    let st = store::lock(&app.state);
    discovery::resource_list(&st.registry, group, version)
        .map(|v| ok(&v))
        .ok_or_else(not_found)
}

fn openapi_doc(app: &App, group: &str, version: &str) -> ApiResult<Response> {
    let reg = store::lock(&app.state).registry.clone();
    openapi::document(&reg, group, version)
        .map(|v| ok(&v))
        .ok_or_else(not_found)
}
