//! The control API: how `phr` drives a running node, over HTTP on 127.0.0.1.
//!
//! [`serve`] binds a port on 127.0.0.1 chosen by the OS, makes a fresh random token, and writes
//! both to `HOME/control.json` with mode 0600 ([`phr_core::api::ControlFile`]). Every request
//! must carry `Authorization: Bearer <token>`, compared in constant time; a request without it
//! gets 401 and nothing else. The messages are the JSON types of [`phr_core::api`].
//!
//! | route | does |
//! |---|---|
//! | `GET /status` | the node, its records and peers ([`api::NodeStatus`]) |
//! | `POST /peers` | dial a multiaddr and remember it ([`api::AddPeer`] → [`api::PeerAdded`]) |
//! | `POST /sync` | sync with every admitted peer ([`api::SyncStarted`]) |
//! | `GET /sync/{id}` | how that run is going ([`api::SyncProgress`]) |
//! | `POST /lease` | park the home for a `phr` command ([`api::LeaseRequest`] → [`api::Lease`]) |
//! | `POST /release` | take the home back ([`api::Lease`]) |
//! | `POST /slots` | ask a practice's node for its free slots ([`api::SlotsAsk`] → [`api::SlotsFound`]) |
//! | `POST /stop` | stop the node cleanly |

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use axum::{
    Json, Router,
    extract::{Path as UrlPath, Request, State},
    http::StatusCode,
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use phr_core::{api, keys::hex};
use tokio::sync::Notify;

use crate::net::{Client, NodeError};

/// The largest request body the API takes.
pub const BODY_BYTES_MAX: usize = 64 * 1024;

#[derive(Clone)]
struct Api {
    client: Client,
    token: Arc<String>,
    stop: Arc<Notify>,
}

/// The control API, serving until it is dropped or stopped.
#[derive(Debug)]
pub struct Control {
    file: PathBuf,
    task: tokio::task::JoinHandle<()>,
    stop: Arc<Notify>,
}

impl Control {
    /// Resolves when a client asks the node to stop (`POST /stop`).
    pub async fn stopped(&self) {
        self.stop.notified().await
    }

    /// Stops serving and removes the control file.
    pub fn close(self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.file);
    }
}

/// Serves the control API of the node behind `client`, for the home at `dir`.
pub async fn serve(
    client: Client,
    dir: &Path,
    peer: String,
    emergency_url: Option<String>,
) -> Result<Control, NodeError> {
    let failed = |what: &str, e: &dyn std::fmt::Display| NodeError::Failed(format!("{what}: {e}"));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .map_err(|e| failed("cannot open the control API on 127.0.0.1", &e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| failed("cannot open the control API", &e))?;
    let token = hex(&phr_core::keys::random_array::<32>());
    let file = dir.join(api::CONTROL_FILE);
    phr_core::owner_only::write_atomically(
        &file,
        &serde_json::to_vec_pretty(&api::ControlFile {
            pid: std::process::id(),
            api: addr.to_string(),
            token: token.clone(),
            peer,
            emergency_url,
        })
        .expect("the control file serialises"),
    )
    .map_err(|e| failed(&format!("cannot write {}", file.display()), &e))?;
    let stop = Arc::new(Notify::new());
    let state = Api {
        client,
        token: Arc::new(token),
        stop: stop.clone(),
    };
    let app = Router::new()
        .route("/status", get(status))
        .route("/peers", post(add_peer))
        .route("/sync", post(sync))
        .route("/sync/{id}", get(progress))
        .route("/lease", post(lease))
        .route("/release", post(release))
        .route("/slots", post(slots))
        .route("/stop", post(stop_node))
        .layer(axum::extract::DefaultBodyLimit::max(BODY_BYTES_MAX))
        .layer(middleware::from_fn_with_state(state.clone(), authorise))
        .with_state(state);
    let task = tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "the control API stopped");
        }
    });
    tracing::info!(%addr, "control API listening");
    Ok(Control { file, task, stop })
}

async fn authorise(State(api): State<Api>, request: Request, next: Next) -> Response {
    let given = request
        .headers()
        .get(api::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let expected = api.token.as_bytes();
    // Constant time: the comparison does not tell how much of a guess was right.
    let same = given.len() == expected.len()
        && given
            .as_bytes()
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if !same {
        return error(
            StatusCode::UNAUTHORIZED,
            "a control request without this node's token (from HOME/control.json)",
        );
    }
    next.run(request).await
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        Json(api::ApiError {
            error: message.into(),
        }),
    )
        .into_response()
}

fn node_error(e: NodeError) -> Response {
    match e {
        NodeError::Stopped => error(StatusCode::SERVICE_UNAVAILABLE, "the node is stopping"),
        NodeError::Failed(message) => error(StatusCode::BAD_REQUEST, message),
    }
}

async fn status(State(api): State<Api>) -> Response {
    match api.client.status().await {
        Ok(status) => Json(status).into_response(),
        Err(e) => node_error(e),
    }
}

async fn add_peer(State(api): State<Api>, Json(body): Json<api::AddPeer>) -> Response {
    let addr = match body.addr.parse() {
        Ok(addr) => addr,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("`{}` is not a multiaddr: {e}", body.addr),
            );
        }
    };
    match api.client.add_peer(addr).await {
        Ok(peer) => Json(api::PeerAdded {
            peer: peer.to_string(),
        })
        .into_response(),
        Err(e) => node_error(e),
    }
}

async fn sync(State(api): State<Api>) -> Response {
    match api.client.sync_all().await {
        Ok(id) => Json(api::SyncStarted { id }).into_response(),
        Err(e) => node_error(e),
    }
}

async fn progress(State(api): State<Api>, UrlPath(id): UrlPath<u64>) -> Response {
    match api.client.sync_progress(id).await {
        Ok(Some(progress)) => Json(progress).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no sync run {id}")),
        Err(e) => node_error(e),
    }
}

async fn lease(State(api): State<Api>, Json(body): Json<api::LeaseRequest>) -> Response {
    match api.client.lease(body.pid).await {
        Ok(lease) => Json(api::Lease { lease }).into_response(),
        Err(e) => node_error(e),
    }
}

async fn release(State(api): State<Api>, Json(body): Json<api::Lease>) -> Response {
    match api.client.release(body.lease).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => node_error(e),
    }
}

async fn slots(State(api): State<Api>, Json(body): Json<api::SlotsAsk>) -> Response {
    let Ok(provider) = body.provider.parse() else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("`{}` is not a PeerId", body.provider),
        );
    };
    let start = std::time::Instant::now();
    match api.client.slots(provider, body.query).await {
        Ok(slots) => Json(api::SlotsFound {
            slots,
            round_trip_ms: u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX),
        })
        .into_response(),
        Err(e) => node_error(e),
    }
}

async fn stop_node(State(api): State<Api>) -> Response {
    api.stop.notify_one();
    StatusCode::ACCEPTED.into_response()
}
