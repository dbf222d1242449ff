//! The shared Redis connection: built once from a URL, cloned into every layer.

use std::fmt;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::io::tcp::TcpSettings;
use std::sync::Arc;

use redis::{Client, Cmd, IntoConnectionInfo, RedisResult, Value};

use crate::BackendError;

/// A handle on one Redis deployment (a server, or a cluster with feature `redis-cluster`),
/// shared by every layer that keeps state there. Cloning it is cheap and shares the connection.
///
/// The connection is the `redis` crate's multiplexed [`ConnectionManager`], which reconnects
/// in the background, with `TCP_NODELAY` on. Layers bound every call with their own deadline,
/// so a dead or frozen Redis costs a request at most that deadline.
///
/// ```no_run
/// use std::time::Duration;
/// use tower_bulwark::redis::{FailMode, RedisBackend};
/// use tower_bulwark::rate_limit::RateLimitLayer;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let redis = RedisBackend::connect("redis://127.0.0.1:6379/").await?;
/// let layer = RateLimitLayer::sliding_window_counter(1000, Duration::from_secs(3600))
///     .backend(redis.clone())
///     .fail_mode(FailMode::Local { instances: 4 })
///     .build()?;
/// # drop(layer);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisBackend {
    connection: Connection,
    /// Salts the hash that turns API keys into key names (see [`RedisBackend::key_secret`]).
    key_secret: Arc<[u8]>,
}

#[derive(Clone)]
enum Connection {
    Server(ConnectionManager),
    #[cfg(feature = "redis-cluster")]
    Cluster(redis::cluster_async::ClusterConnection),
}

impl fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.connection {
            Connection::Server(_) => "server",
            #[cfg(feature = "redis-cluster")]
            Connection::Cluster(_) => "cluster",
        };
        f.debug_struct("RedisBackend")
            .field("kind", &kind)
            .finish_non_exhaustive()
    }
}

/// How long one connection attempt may take; the background reconnects retry after it.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

fn tcp_settings() -> TcpSettings {
    // Small request/response pairs: Nagle's algorithm would hold each for an ACK.
    let settings = TcpSettings::default().set_nodelay(true).set_keepalive(
        redis::io::tcp::socket2::TcpKeepalive::new()
            .with_time(Duration::from_secs(5))
            .with_interval(Duration::from_secs(2)),
    );
    // A peer that vanished without a word (host lost, network partition) leaves a socket that
    // looks alive; drop it once sent data has gone unacknowledged this long, so the manager
    // reconnects. (A frozen Redis process is unaffected: its kernel still acknowledges.)
    #[cfg(any(target_os = "android", target_os = "fuchsia", target_os = "linux"))]
    let settings = settings.set_user_timeout(Duration::from_secs(5));
    settings
}

fn client(url: &str) -> Result<Client, BackendError> {
    let info = url
        .into_connection_info()
        .map_err(|e| BackendError::new(format!("invalid redis url: {e}")))?
        .set_tcp_settings(tcp_settings());
    Client::open(info).map_err(|e| BackendError::new(format!("invalid redis url: {e}")))
}

fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        // The layer's deadline is the one bound on a call: the crate's own default (500 ms)
        // would cut a longer deadline short.
        .set_response_timeout(None)
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        // One connection attempt each time one is needed: a refused connection fails the call
        // at once instead of holding it for the deadline while the manager retries in the
        // background. The next call (a layer's probe) starts the next attempt.
        .set_number_of_retries(0)
}

impl RedisBackend {
    /// Connects to one Redis server, waiting until the first connection is up.
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tower_bulwark::BackendError> {
    /// let redis = tower_bulwark::redis::RedisBackend::connect("redis://127.0.0.1/").await?;
    /// # drop(redis);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect(url: &str) -> Result<Self, BackendError> {
        let manager = ConnectionManager::new_with_config(client(url)?, manager_config())
            .await
            .map_err(|e| BackendError::new(format!("cannot connect to redis: {e}")))?;
        Ok(Self::with(Connection::Server(manager)))
    }

    /// A handle that connects on first use, so a service can start while Redis is away (its
    /// layers answer with their fail mode until Redis comes up). Needs a Tokio runtime.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tower_bulwark::BackendError> {
    /// use tower_bulwark::redis::RedisBackend;
    ///
    /// let redis = RedisBackend::connect_lazy("redis://127.0.0.1:1/")?; // nothing listens there
    /// assert!(RedisBackend::connect_lazy("http://not-redis/").is_err());
    /// # drop(redis);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// Outside a Tokio runtime it returns an error rather than panic:
    ///
    /// ```
    /// let err = tower_bulwark::redis::RedisBackend::connect_lazy("redis://127.0.0.1/").unwrap_err();
    /// assert!(err.to_string().contains("Tokio runtime"));
    /// ```
    pub fn connect_lazy(url: &str) -> Result<Self, BackendError> {
        // The connection manager reconnects on the current runtime; without one it would panic.
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(BackendError::new(
                "connect_lazy must be called inside a Tokio runtime",
            ));
        }
        let manager = ConnectionManager::new_lazy_with_config(client(url)?, manager_config())
            .map_err(|e| BackendError::new(format!("cannot set up redis connection: {e}")))?;
        Ok(Self::with(Connection::Server(manager)))
    }

    /// Connects to a Redis Cluster through any of its nodes. Every key a decision touches
    /// shares one hash tag, so each decision goes to one slot on one node.
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tower_bulwark::BackendError> {
    /// use tower_bulwark::redis::RedisBackend;
    ///
    /// let redis = RedisBackend::connect_cluster(&["redis://10.0.0.1:7000/", "redis://10.0.0.2:7000/"]).await?;
    /// # drop(redis);
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "redis-cluster")]
    pub async fn connect_cluster(urls: &[&str]) -> Result<Self, BackendError> {
        let client = redis::cluster::ClusterClient::builder(urls.iter().copied())
            .tcp_settings(tcp_settings())
            .connection_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(|e| BackendError::new(format!("invalid redis cluster urls: {e}")))?;
        let connection = client
            .get_async_connection()
            .await
            .map_err(|e| BackendError::new(format!("cannot connect to redis cluster: {e}")))?;
        Ok(Self::with(Connection::Cluster(connection)))
    }

    /// Wraps a connection manager set up by the caller (TLS, credentials, own retry policy).
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let client = redis::Client::open("redis://127.0.0.1/")?;
    /// let manager = redis::aio::ConnectionManager::new(client).await?;
    /// let redis = tower_bulwark::redis::RedisBackend::from_connection_manager(manager);
    /// # drop(redis);
    /// # Ok(())
    /// # }
    /// ```
    pub fn from_connection_manager(manager: ConnectionManager) -> Self {
        Self::with(Connection::Server(manager))
    }

    fn with(connection: Connection) -> Self {
        Self {
            connection,
            key_secret: Arc::from(&b""[..]),
        }
    }

    /// Salts the hash that turns header-derived keys (API keys, tokens) into Redis key names
    /// with a secret of this deployment's, so that whoever can read Redis can neither read
    /// the keys nor test guesses against them. Every instance of a fleet must use the same
    /// secret (or they count apart); changing it starts fresh counts. Without it the names
    /// are still SHA-256 hashes, never the keys in clear.
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tower_bulwark::BackendError> {
    /// let secret = std::env::var("BULWARK_KEY_SECRET").unwrap_or_default();
    /// let redis = tower_bulwark::redis::RedisBackend::connect("redis://127.0.0.1/")
    ///     .await?
    ///     .key_secret(secret);
    /// # drop(redis);
    /// # Ok(())
    /// # }
    /// ```
    pub fn key_secret(mut self, secret: impl AsRef<[u8]>) -> Self {
        self.key_secret = Arc::from(secret.as_ref());
        self
    }

    /// The names a layer's keys get under `prefix`.
    #[cfg(any(
        feature = "rate-limit",
        feature = "circuit-breaker",
        feature = "retry",
        feature = "cache"
    ))]
    pub(crate) fn key_names(&self, prefix: String) -> super::KeyNames {
        super::KeyNames::new(prefix, &self.key_secret)
    }

    /// Sends one command, with no deadline (the caller keeps its own).
    #[cfg(any(
        feature = "rate-limit",
        feature = "circuit-breaker",
        feature = "retry",
        feature = "cache"
    ))]
    pub(crate) async fn query(&self, cmd: &Cmd) -> RedisResult<Value> {
        match self.send(cmd).await {
            // Nothing was sent: the connection attempt was refused, and the manager has begun
            // another. A Redis back since the last attempt answers now; a dead one refuses as
            // fast.
            Err(err) if err.is_connection_refusal() => self.send(cmd).await,
            other => other,
        }
    }

    #[cfg(any(
        feature = "rate-limit",
        feature = "circuit-breaker",
        feature = "retry",
        feature = "cache"
    ))]
    async fn send(&self, cmd: &Cmd) -> RedisResult<Value> {
        match &self.connection {
            Connection::Server(manager) => cmd.query_async(&mut manager.clone()).await,
            #[cfg(feature = "redis-cluster")]
            Connection::Cluster(cluster) => cmd.query_async(&mut cluster.clone()).await,
        }
    }

    /// A plain `GET` on this connection, with no deadline: the floor the benchmarks compare a
    /// decision with. Internal and unstable (feature `internal-hooks`).
    #[cfg(feature = "internal-hooks")]
    pub async fn raw_get(&self, key: &[u8]) -> RedisResult<Value> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(key);
        self.send(&cmd).await
    }

    /// Sends one command as is, with no deadline, for benchmarks and tests. Internal and
    /// unstable (feature `internal-hooks`).
    #[cfg(feature = "internal-hooks")]
    pub async fn raw_query(&self, cmd: &Cmd) -> RedisResult<Value> {
        self.send(cmd).await
    }
}
