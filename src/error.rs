//! Errors shared by every layer's builder.

use std::fmt;

/// A builder was given a value that cannot work.
///
/// The error names the field and the rule it broke, so the message reads like
/// `` `limit` must be > 0, got 0 ``.
///
/// ```
/// use std::time::Duration;
/// use tower_bulwark::rate_limit::RateLimitLayer;
///
/// let err = RateLimitLayer::fixed_window(0, Duration::from_secs(1)).build().unwrap_err();
/// assert_eq!(err.field(), "limit");
/// assert_eq!(err.to_string(), "`limit` must be > 0, got 0");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    field: &'static str,
    rule: String,
}

impl ConfigError {
    /// A new error about `field`, breaking `rule` (for example `"must be > 0, got 0"`).
    ///
    /// ```
    /// let err = tower_bulwark::ConfigError::new("burst", "must be >= 1, got 0");
    /// assert_eq!(err.to_string(), "`burst` must be >= 1, got 0");
    /// ```
    pub fn new(field: &'static str, rule: impl Into<String>) -> Self {
        Self {
            field,
            rule: rule.into(),
        }
    }

    /// The name of the builder field that is wrong.
    ///
    /// ```
    /// let err = tower_bulwark::ConfigError::new("period", "must be > 0");
    /// assert_eq!(err.field(), "period");
    /// ```
    pub fn field(&self) -> &'static str {
        self.field
    }

    /// The rule the value broke, without the field name.
    ///
    /// ```
    /// let err = tower_bulwark::ConfigError::new("period", "must be > 0");
    /// assert_eq!(err.rule(), "must be > 0");
    /// ```
    pub fn rule(&self) -> &str {
        &self.rule
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` {}", self.field, self.rule)
    }
}

impl std::error::Error for ConfigError {}

/// The error type layers use when they wrap a service that is not HTTP, as tower does.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A shared store (Redis) could not be reached or answered wrongly: from connecting, or from
/// an explicit sync. Request paths never see it: they use the layer's fail mode instead.
///
/// ```
/// use tower_bulwark::BackendError;
///
/// let err: Box<dyn std::error::Error> = Box::new(BackendError::new("connection refused"));
/// assert_eq!(err.to_string(), "backend error: connection refused");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendError {
    message: String,
}

impl BackendError {
    /// An error with a human-readable reason.
    ///
    /// ```
    /// let err = tower_bulwark::BackendError::new("redis timed out after 50ms");
    /// assert_eq!(err.to_string(), "backend error: redis timed out after 50ms");
    /// ```
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "backend error: {}", self.message)
    }
}

impl std::error::Error for BackendError {}
