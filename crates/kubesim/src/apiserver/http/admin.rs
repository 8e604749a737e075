//! kubesim's own endpoints under `/kubesim/v1/` (non-resource URLs, so only identities granted
//! them, such as `cluster-admin`, may call them):
//!
//! - `POST /kubesim/v1/client-faults` starts a client fault (JSON: `ClientFaultJson`), answering
//!   201 with its id; `GET` lists the active ones; `DELETE /kubesim/v1/client-faults[/{id}]`
//!   ends all of them or one. See `client_faults` for what they do.

use axum::response::Response;
use http::{Method, StatusCode};
use serde_json::json;

use super::{App, json_response, not_found, ok};
use crate::apiserver::client_faults::ClientFaultJson;
use crate::apiserver::error::{ApiError, ApiResult};

/// Serves a `/kubesim/...` path (`segs` without empty segments).
pub(super) fn serve(app: &App, method: &Method, segs: &[&str], body: &[u8]) -> ApiResult<Response> {
    let faults = &app.client_faults;
    match (method.clone(), segs) {
        (Method::GET, ["kubesim", "v1", "client-faults"]) => {
            let items: Vec<ClientFaultJson> =
                faults.active().iter().map(ClientFaultJson::of).collect();
            Ok(ok(&json!({"items": items})))
        }
        (Method::POST, ["kubesim", "v1", "client-faults"]) => {
            let req: ClientFaultJson = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("not a client fault: {e}")))?;
            let (client, mode, window) = req.parse().map_err(ApiError::bad_request)?;
            let id = faults.start(client, mode, window);
            let shown = faults
                .active()
                .iter()
                .find(|f| f.id == id)
                .map(ClientFaultJson::of)
                .unwrap_or(ClientFaultJson {
                    id: Some(id),
                    ..req
                });
            Ok(json_response(StatusCode::CREATED, &json!(shown)))
        }
        (Method::DELETE, ["kubesim", "v1", "client-faults"]) => {
            faults.clear();
            Ok(ok(
                &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}),
            ))
        }
        (Method::DELETE, ["kubesim", "v1", "client-faults", id]) => {
            let id: u64 = id
                .parse()
                .map_err(|_| ApiError::bad_request(format!("fault id {id:?} is not a number")))?;
            if faults.stop(id) {
                Ok(ok(
                    &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}),
                ))
            } else {
                Err(ApiError::new(
                    404,
                    "NotFound",
                    format!("client fault {id} is not active"),
                ))
            }
        }
        _ => Err(not_found()),
    }
}
