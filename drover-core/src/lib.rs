//! drover-core: everything drover's programs share.
//!
//! # Layout
//! - [`config`]: connection settings (AMQP, Redis, S3, account), parsed once at the edge.
//! - [`model`]: the wire types: Azure Batch's task, job and pool JSON, and the task message.
//! - [`submit`]: reading task files (one task, an array, `{"value":[...]}` or JSON Lines) and adding them to a job.
//! - [`status`]: the Redis status store: the key layout, and every state transition as one Lua
//!   file (`status/lua/`) with a typed argument struct and reply.
//! - [`queue`]: the RabbitMQ topology and the confirmed publisher of outboxes.
//! - [`staging`]: moving files between storage (S3, HTTP) and a task's directory.
//! - [`node`]: the node agent: consume a pool's queues, run tasks, record their outcome, serve
//!   its files; [`node_files`]: the client of that file service, for the API and the CLI.
//! - [`requeue`]: putting back what an operator decides should run again (a job's active
//!   tasks, dead letters).
//! - [`autoscale`]: the Azure Batch autoscale formula language and one evaluation.
//! - [`sas`]: SAS tokens sealed at rest, opened only for a transfer.
//! - [`signing`]: signed tasks: the MAC that lets a worker refuse what was changed in Redis or the broker.
//! - [`retry`]: the one retry policy, for transient errors; [`error`]: the crate's error type.
//! - [`telemetry`]: logging setup for the programs.
//!
//! The flow of one task is described in ARCHITECTURE.md at the repository root.

#![recursion_limit = "256"]

pub mod actions;
pub mod autoscale;
pub mod config;
pub mod error;
pub mod model;
pub mod node;
pub mod node_files;
pub mod queue;
pub mod requeue;
pub mod retry;
pub mod sas;
pub mod signing;
pub mod staging;
pub mod status;
pub mod submit;
pub mod telemetry;
pub mod tls;

pub use config::Config;
pub use error::{Error, Result};
