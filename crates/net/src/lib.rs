//! Network helpers shared by the plugins that talk to outside services:
//!
//! * [`tls`]: rustls client settings (trusted roots from a CA file or the system store, an
//!   optional client certificate, or no verification when the operator turned it off);
//! * [`backoff`]: capped exponential backoff with jitter for reconnects and retries;
//! * [`http`]: a small HTTP/1.1 client for REST APIs (MISP, CIFv3), one kept-alive connection,
//!   timeouts and a cap on the answer size.

#![forbid(unsafe_code)]

pub mod backoff;
pub mod http;
pub mod tls;

pub use backoff::{Backoff, FailureStreak};
