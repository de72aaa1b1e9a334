//! An error a request answers with: Kafka's error code and, where Kafka's tools print one,
//! a message (Kafka's `ApiError`).

use kafka_protocol::error::ResponseError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: ResponseError,
    pub message: Option<String>,
}

impl ApiError {
    pub fn new(code: ResponseError, message: impl Into<String>) -> Self {
        ApiError { code, message: Some(message.into()) }
    }
}

impl From<ResponseError> for ApiError {
    fn from(code: ResponseError) -> Self {
        ApiError { code, message: None }
    }
}
