//! Emergency links served over HTTP: the manifest of a SMART Health Link
//! (`phr_core::emergency::link`), for the links this home's patient made.
//!
//! | route | does |
//! |---|---|
//! | `POST /shl/{id}` | the manifest: a JSON body `{"recipient": ..., "passcode": ...}` of at most [`MANIFEST_REQUEST_BYTES_MAX`] bytes; 200 with `{"files": [...]}`, 401 with `{"remainingAttempts": n}`, 404, or 400 |
//! | `OPTIONS /shl/{id}` | the CORS preflight a browser viewer sends first |
//!
//! Every answer carries `Access-Control-Allow-Origin: *` (a link is opened from any viewer's
//! page; it authenticates nothing by origin). Plain HTTP: a deployment reachable from outside
//! puts a TLS reverse proxy in front and gives its address with `--emergency-url`, since SMART
//! Health Link clients expect `https://` (this is said in docs/USER-GUIDE.md).
//!
//! Each request is one command to the node's event loop, which logs the access to the
//! patient's record before answering ([`crate::net::Client::link_manifest`]).

use std::net::SocketAddr;

use axum::{
    Json, Router,
    body::Bytes,
    extract::{ConnectInfo, Path, State},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::post,
};
use phr_core::emergency::link::{Answer, MANIFEST_REQUEST_BYTES_MAX, ManifestRequest};
use serde_json::json;

use crate::net::{Client, NodeError};

/// Binds `addr` and serves emergency links until the node stops; returns the address bound.
pub async fn serve(client: Client, addr: SocketAddr) -> Result<SocketAddr, NodeError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| NodeError::Failed(format!("cannot serve emergency links on {addr}: {e}")))?;
    let bound = listener
        .local_addr()
        .map_err(|e| NodeError::Failed(e.to_string()))?;
    let app = Router::new()
        .route("/shl/{id}", post(manifest).options(preflight))
        .layer(axum::extract::DefaultBodyLimit::max(
            MANIFEST_REQUEST_BYTES_MAX,
        ))
        .with_state(client);
    tokio::spawn(async move {
        let service = app.into_make_service_with_connect_info::<SocketAddr>();
        if let Err(error) = axum::serve(listener, service).await {
            tracing::error!(%error, "the emergency link server stopped");
        }
    });
    tracing::info!(%bound, "serving emergency links");
    Ok(bound)
}

fn cors(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("content-type"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST, OPTIONS"),
    );
    response
}

async fn preflight() -> Response {
    cors(StatusCode::NO_CONTENT.into_response())
}

async fn manifest(
    State(client): State<Client>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let response = match serde_json::from_slice::<ManifestRequest>(&body) {
        Err(_) => (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "the body is not a manifest request"})),
        )
            .into_response(),
        Ok(request) => match client
            .link_manifest(id, request, from.ip().to_string())
            .await
        {
            Ok(Answer::Manifest(manifest)) => Json(manifest).into_response(),
            Ok(Answer::NotFound) => StatusCode::NOT_FOUND.into_response(),
            Ok(Answer::WrongPasscode(left)) => (
                StatusCode::UNAUTHORIZED,
                Json(json!({"remainingAttempts": left})),
            )
                .into_response(),
            Ok(Answer::BadRequest(why)) => {
                (StatusCode::BAD_REQUEST, Json(json!({"error": why}))).into_response()
            }
            Err(NodeError::Stopped) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
            Err(NodeError::Failed(why)) => {
                tracing::warn!(%why, "an emergency link request failed");
                StatusCode::SERVICE_UNAVAILABLE.into_response()
            }
        },
    };
    cors(response)
}
