//! `drover-api`: Azure Batch's data-plane REST API over a drover account, so the Batch SDKs and
//! `az batch` drive drover with only the endpoint and key changed.

mod auth;
mod odata;
mod reply;
mod routes;

use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use clap::Parser;
use drover_core::Config;
use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Parser)]
#[command(name = "drover-api", version, about = "Azure Batch's REST API (the data plane) over a drover account")]
struct Cli {
    #[command(flatten)]
    config: Config,
    /// Where to serve the API (loopback by default). Clients use `http://ADDR` as the endpoint.
    #[arg(long, env = "DROVER_API_LISTEN", default_value = "127.0.0.1:8180")]
    listen: std::net::SocketAddr,
    /// The account's primary key (base64, as Azure's): clients sign requests with it (Shared Key).
    #[arg(long, env = "DROVER_API_KEY", hide_env_values = true, required_unless_present = "accounts_file")]
    api_key: Option<String>,
    /// Serve several accounts: a file (mode 600) of lines `<account> <key> [<secondary key>]`;
    /// the connection settings are shared, each account keeps to its own records and queues.
    #[arg(long, env = "DROVER_API_ACCOUNTS_FILE", value_name = "PATH", conflicts_with = "api_key")]
    accounts_file: Option<std::path::PathBuf>,
    /// An optional secondary key, also accepted (to rotate keys without downtime).
    #[arg(long, env = "DROVER_API_KEY2", hide_env_values = true)]
    api_key2: Option<String>,
    /// Serve https with this PEM certificate chain (and --tls-key); clients then use https://ADDR.
    #[arg(long, env = "DROVER_API_TLS_CERT", value_name = "PATH", requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// The PEM private key of --tls-cert (mode 600).
    #[arg(long, env = "DROVER_API_TLS_KEY", value_name = "PATH", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    drover_core::telemetry::init("info");
    let cli = Cli::parse();
    drover_core::telemetry::exit("drover-api", run(cli).await)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    cli.config.validate()?;
    let tls = match (&cli.tls_cert, &cli.tls_key) {
        (Some(cert), Some(key)) => Some(drover_core::tls::acceptor(cert, key, ("--tls-cert", "--tls-key"))?),
        _ => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let keys = match (&cli.accounts_file, &cli.api_key) {
        (Some(path), _) => auth::Keys::from_file(path)?,
        (None, Some(key)) => vec![auth::Keys::new(&cli.config.account, key, cli.api_key2.as_deref())?],
        (None, None) => anyhow::bail!("give DROVER_API_KEY, or --accounts-file"),
    };
    let mut accounts = HashMap::new();
    for keys in keys {
        let config = Config { account: keys.account.clone(), ..cli.config.clone() };
        config.validate().map_err(|e| anyhow::anyhow!("account {:?}: {e}", keys.account))?;
        let store = drover_core::status::StatusStore::connect(&config).await?;
        let staging = drover_core::staging::Staging::new(&config).await?;
        let name = keys.account.clone();
        let topology = drover_core::queue::Topology::new(&name);
        let publisher = drover_core::queue::Publisher::new(&config.broker(), "drover-api", topology);
        accounts.insert(name, Arc::new(routes::App { config, store, staging, keys, scheme, publisher }));
    }
    tracing::info!(accounts = accounts.len(), "accounts served");
    let router = routes::router()
        .layer(axum::middleware::from_fn_with_state(Arc::new(accounts), authenticate))
        .layer(axum::extract::DefaultBodyLimit::max(routes::BODY_LIMIT));
    let listener =
        tokio::net::TcpListener::bind(cli.listen).await.map_err(|e| anyhow::anyhow!("--listen {}: {e}", cli.listen))?;
    tracing::info!(listen = %cli.listen, tls = tls.is_some(), "serving the Batch API");
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    match tls {
        None => axum::serve(listener, router).with_graceful_shutdown(shutdown).await?,
        Some(tls) => {
            tokio::pin!(shutdown);
            loop {
                let (stream, _) = tokio::select! {
                    accepted = listener.accept() => accepted?,
                    _ = &mut shutdown => return Ok(()),
                };
                tokio::spawn(serve_tls(tls.clone(), stream, router.clone()));
            }
        }
    }
    Ok(())
}

/// How long a client has to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves one https connection.
async fn serve_tls(tls: drover_core::tls::TlsAcceptor, stream: tokio::net::TcpStream, router: axum::Router) {
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return tracing::debug!(error = %e, "TLS handshake failed"),
        Err(_) => return tracing::debug!("TLS handshake timed out"),
    };
    let service = hyper_util::service::TowerToHyperService::new(router);
    let served = hyper::server::conn::http1::Builder::new()
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
        .await;
    if let Err(e) = served {
        tracing::debug!(error = %e, "connection failed");
    }
}

/// The accounts served, by name.
type Accounts = Arc<HashMap<String, Arc<routes::App>>>;

/// Finds the account a request is for and refuses what its keys did not sign (or a task's
/// token does not reach); every answer carries `request-id` and echoes `client-request-id`.
async fn authenticate(State(accounts): State<Accounts>, mut request: Request, next: Next) -> Response {
    let client_id = request.headers().get("client-request-id").cloned();
    let header = request.headers().get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
    let verdict = match header.strip_prefix("Bearer ") {
        Some(token) => token_account(&accounts, token, request.uri().path()).await,
        None => {
            let named = header.strip_prefix("SharedKey ").and_then(|r| r.split_once(':')).map(|(a, _)| a);
            match named.and_then(|a| accounts.get(a)) {
                Some(app) => app.keys.check(request.method(), request.uri(), request.headers()).map(|()| app.clone()),
                None => Err(reply::ApiError::auth("the request is not signed for an account served here")),
            }
        }
    };
    let mut response = match verdict {
        Ok(app) => {
            request.extensions_mut().insert(app);
            next.run(request).await
        }
        Err(e) => {
            tracing::info!(method = %request.method(), path = %request.uri().path(), reason = ?e.values, "refused a request");
            e.into_response()
        }
    };
    let id = format!("{:032x}", rand_id());
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("request-id", v);
    }
    if let Some(v) = client_id {
        response.headers_mut().insert("client-request-id", v);
    }
    response
}

/// The account whose keys made a task's `token`, if the token reaches `path`.
async fn token_account(accounts: &Accounts, token: &str, path: &str) -> Result<Arc<routes::App>, reply::ApiError> {
    let mut refusal = reply::ApiError::auth("this service takes no tokens (it has no signing keys)");
    for app in accounts.values() {
        match job_token(app, token, path).await {
            Ok(()) => return Ok(app.clone()),
            Err(e) => refusal = e,
        }
    }
    Err(refusal)
}

/// Accepts a task's token (`AZ_BATCH_AUTHENTICATION_TOKEN`) for its own job's operations
/// (`/jobs/<job>` and below) while the job is active.
async fn job_token(app: &routes::App, token: &str, path: &str) -> Result<(), reply::ApiError> {
    let signer = app
        .store
        .signer()
        .ok_or_else(|| reply::ApiError::auth("this service takes no tokens (it has no signing keys)"))?;
    let job = signer.token_job(token).map_err(|why| reply::ApiError::auth(&format!("the token was refused: {why}")))?;
    let own = format!("/jobs/{job}");
    if path != own && !path.starts_with(&format!("{own}/")) {
        return Err(reply::ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "AuthorizationFailure",
            format!("the token reaches job {job:?} only"),
        ));
    }
    match app.store.get_job(&job).await {
        Ok(j) if j.state == drover_core::model::JobState::Active => Ok(()),
        Ok(_) | Err(drover_core::Error::NotFound { .. }) => {
            Err(reply::ApiError::auth(&format!("job {job:?} has ended: its tokens with it")))
        }
        Err(e) => Err(e.into()),
    }
}

/// A request id: unique enough to find a request in the logs.
fn rand_id() -> u128 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    (u128::from(drover_core::model::now_ms() as u64) << 64) | u128::from(N.fetch_add(1, Ordering::Relaxed))
}
