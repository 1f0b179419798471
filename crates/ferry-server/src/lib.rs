//! Ferry's sync server as a library.
//!
//! - [`routes::app`] builds the HTTP API over an [`AppState`]; [`server::run`]
//!   serves it on a listener until a shutdown future completes.
//! - One folder per area holds its routes: [`auth`], [`spaces`], [`sync`]
//!   (sync, pull and REST records), [`realtime`] (WebSocket and SSE signals,
//!   across nodes), [`ops`] (health, metrics).
//! - [`store`] is the storage trait and its backends; [`error::ApiError`]
//!   maps every failure to PROTOCOL.md §10 once.
//! - [`config`] is what `ferry serve` can be told, and opens the database.
//! - [`app_schema`] holds the app's schema of its collections, which every
//!   write is checked against.

pub mod adopt;
pub mod app_schema;
pub mod auth;
pub mod billing;
pub mod clock;
pub mod config;
pub mod error;
pub mod extract;
pub mod files;
pub mod http;
pub mod ids;
pub mod ops;
pub mod realtime;
pub mod redact;
pub mod routes;
pub mod server;
pub mod spaces;
pub mod state;
pub mod store;
pub mod sync;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod webhooks;

pub use config::{Config, Database};
pub use error::ApiError;
pub use state::{AppState, Settings};
pub use store::{Store, StoreError};
