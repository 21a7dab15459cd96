//! The store's one error type. Callers match on the variant; the API maps them to
//! Kubernetes `Status` reasons (AlreadyExists → 409, Conflict → 409, NotFound → 404,
//! Compacted → 410, TooLarge → 413/422).

use crate::position::Position;

/// Every failure the store reports.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Create-if-absent found an object already there.
    #[error("object {key} already exists")]
    AlreadyExists { key: String },

    /// The object is absent (get, update, delete).
    #[error("object {key} not found")]
    NotFound { key: String },

    /// An update or delete precondition (position or uid) did not match the current object.
    #[error("precondition failed for {key}: {detail}")]
    Conflict { key: String, detail: String },

    /// Optimistic concurrency: another transaction committed a write this one read.
    /// Retryable: run the transaction again on a new read version.
    #[error("transaction conflict: a concurrent commit wrote a key this transaction read")]
    TransactionConflict,

    /// The transaction's read version is older than the conflict history the backend keeps
    /// (FoundationDB's 5 s limit). Retryable.
    #[error("transaction too old: its read version fell out of the conflict window")]
    TransactionTooOld,

    /// The commit's outcome is unknown (FoundationDB's `commit_unknown_result`): it may or
    /// may not have happened. Retryable only by writes that can tell (the log's appends look
    /// for their request id first).
    #[error("commit outcome unknown: the transaction may or may not have committed")]
    CommitUnknown,

    /// The backend is temporarily unable to serve (a retryable FoundationDB error such as
    /// `process_behind` or a throttled transaction). Retry after a back-off.
    #[error("store temporarily unavailable: {0}")]
    Unavailable(String),

    /// An object or value exceeds a size bound.
    #[error("{what} is {size} bytes, above the limit of {limit} bytes")]
    TooLarge {
        what: &'static str,
        size: usize,
        limit: usize,
    },

    /// A read asked for a position that retention has already removed.
    #[error("position {requested} is compacted: the oldest retained position is {horizon}")]
    Compacted {
        requested: Position,
        horizon: Position,
    },

    /// A read asked for a position that the log has not reached yet.
    #[error("position {requested} is ahead of the log head {head}")]
    FutureRevision { requested: Position, head: Position },

    /// A watch subscriber did not keep up; it was cut off so commits never wait for it.
    /// Resubscribe from `last_delivered` to continue without loss.
    #[error("watch subscriber fell behind and was cut off after position {last_delivered}")]
    FellBehind { last_delivered: Position },

    /// A bounded resource is full (e.g. the watch hub's subscriber count). Retry later.
    #[error("too many {what}: the limit is {limit}")]
    Overloaded { what: &'static str, limit: usize },

    /// A record read back failed its checksum or framing: the data file is damaged.
    #[error("corrupt record at {location}: {detail}")]
    Corrupt { location: String, detail: String },

    /// An object's stored form could not be sealed or opened by its resource's
    /// [`crate::transform::ValueTransformer`] (e.g. encrypted under a key the server no
    /// longer holds, or altered). `detail` names the key id, never the value.
    #[error("cannot read or write the stored value of {key}: {detail}")]
    Transform { key: String, detail: String },

    /// A caller passed something malformed (bad continuation token, bad key).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// The backend is shutting down or its committer has stopped.
    #[error("store is closed")]
    Closed,

    /// The embedded database failed.
    #[error("embedded database: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),

    /// Filesystem I/O failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    /// True for errors a caller should answer by retrying the whole transaction.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::TransactionConflict
                | Error::TransactionTooOld
                | Error::CommitUnknown
                | Error::Unavailable(_)
        )
    }

    pub(crate) fn backend(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Error::Backend(Box::new(e))
    }
}

/// `Result` with the store's error as default.
pub type Result<T, E = Error> = std::result::Result<T, E>;
