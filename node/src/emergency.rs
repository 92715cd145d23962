//! Emergency links served over HTTP: the manifest of a SMART Health Link
//! (`phr_core::emergency::link`), for the links this home's patient made.
//!
//! | route | does |
//! |---|---|
//! | `POST /shl/{id}` | the manifest: a JSON body `{"recipient": ..., "passcode": ...}` of at most [`MANIFEST_REQUEST_BYTES_MAX`] bytes; 200 with `{"files": [...]}`, 401 with `{"remainingAttempts": n}`, 404, or 400 |
//! | `OPTIONS /shl/{id}` | the CORS preflight a browser viewer sends first |
//! | `POST /shl/break-glass` | a provider's break-glass request (`phr_core::emergency::break_glass::Request`, at most [`BREAK_GLASS_REQUEST_BYTES_MAX`] bytes): 200 with the grant, 403 with why it is refused |
//!
//! Requests for one link, or from one provider, past
//! [`ACCESSES_LOGGED_PER_KEY_PER_HOUR`](crate::net::links::ACCESSES_LOGGED_PER_KEY_PER_HOUR) in
//! an hour are answered 429 with nothing given or logged.
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
use phr_core::emergency::{
    break_glass::{BREAK_GLASS_REQUEST_BYTES_MAX, Request},
    link::{Answer, MANIFEST_REQUEST_BYTES_MAX, ManifestRequest},
};
use serde_json::json;

use crate::net::{Client, NodeError};

#[derive(Clone)]
struct Served {
    client: Client,
    /// The links' base URL (`.../shl`), which break-glass requests are signed for.
    base: String,
}

/// The emergency link server, running: [`Emergency::close`] stops it. It holds a client of the
/// node, and a node runs until its last client is gone, so a node stopping closes it first.
#[derive(Debug)]
pub struct Emergency {
    /// The links' base URL (`.../shl`).
    pub base: String,
    task: tokio::task::JoinHandle<()>,
}

impl Emergency {
    /// Stops serving, and lets go of the node.
    pub fn close(self) {
        self.task.abort();
    }
}

/// Binds `addr` and serves emergency links until closed, under `url` (the address the outside
/// world uses; by default `http://ADDR/shl`).
pub async fn serve(
    client: Client,
    addr: SocketAddr,
    url: Option<String>,
) -> Result<Emergency, NodeError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| NodeError::Failed(format!("cannot serve emergency links on {addr}: {e}")))?;
    let bound = listener
        .local_addr()
        .map_err(|e| NodeError::Failed(e.to_string()))?;
    let base = url
        .unwrap_or_else(|| format!("http://{bound}/shl"))
        .trim_end_matches('/')
        .to_string();
    let app = Router::new()
        .route(
            "/shl/break-glass",
            post(break_glass_request).layer(axum::extract::DefaultBodyLimit::max(
                BREAK_GLASS_REQUEST_BYTES_MAX,
            )),
        )
        .route(
            "/shl/{id}",
            post(manifest)
                .options(preflight)
                .layer(axum::extract::DefaultBodyLimit::max(
                    MANIFEST_REQUEST_BYTES_MAX,
                )),
        )
        .with_state(Served {
            client,
            base: base.clone(),
        });
    let task = tokio::spawn(async move {
        let service = app.into_make_service_with_connect_info::<SocketAddr>();
        if let Err(error) = axum::serve(listener, service).await {
            tracing::error!(%error, "the emergency link server stopped");
        }
    });
    tracing::info!(%bound, %base, "serving emergency links");
    Ok(Emergency { base, task })
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
    State(Served { client, .. }): State<Served>,
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
            Ok(Answer::TooMany) => StatusCode::TOO_MANY_REQUESTS.into_response(),
            Err(NodeError::Stopped) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
            Err(NodeError::Failed(why)) => {
                tracing::warn!(%why, "an emergency link request failed");
                StatusCode::SERVICE_UNAVAILABLE.into_response()
            }
        },
    };
    cors(response)
}

async fn break_glass_request(
    State(Served { client, base }): State<Served>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    body: Bytes,
) -> Response {
    let Ok(request) = serde_json::from_slice::<Request>(&body) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "the body is not a break-glass request"})),
        )
            .into_response();
    };
    let url = format!("{base}/break-glass");
    match client
        .break_glass(request, url, from.ip().to_string())
        .await
    {
        Ok(Ok(granted)) => Json(granted).into_response(),
        Ok(Err(why)) if why == crate::net::links::TOO_MANY => {
            (StatusCode::TOO_MANY_REQUESTS, Json(json!({"error": why}))).into_response()
        }
        Ok(Err(why)) => (StatusCode::FORBIDDEN, Json(json!({"error": why}))).into_response(),
        Err(NodeError::Stopped) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
        Err(NodeError::Failed(why)) => {
            tracing::warn!(%why, "a break-glass request failed");
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
    }
}
