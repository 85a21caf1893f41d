//! The replica crate's one error type.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("malformed encoding: {0}")]
    Decode(String),
}
