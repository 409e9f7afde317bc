//! Network helpers shared by the plugins that talk to outside services:
//!
//! * [`tls`]: rustls server settings (a certificate chain and its key), and client settings (trusted roots from a CA file or the system store, an
//!   optional client certificate, or no verification when the operator turned it off);
//! * [`backoff`]: capped exponential backoff with jitter for reconnects and retries;
//! * [`http`]: a small HTTP/1.1 client for REST APIs (MISP, CIFv3), one kept-alive connection,
//!   timeouts and a cap on the answer size;
//! * [`server`]: a small HTTP/1.1 server for the bus's own listeners (metrics, TAXII), with
//!   limits on connections, header size and time, plain or TLS.

#![forbid(unsafe_code)]

pub mod backoff;
pub mod http;
pub mod server;
pub mod tls;

pub use backoff::{Backoff, FailureStreak};
