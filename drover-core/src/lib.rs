//! drover-core: everything drover's programs share.
//!
//! # Layout
//! - [`config`]: connection settings (AMQP, Redis, S3, account), parsed once at the edge.
//! - [`model`]: the wire types: Azure Batch's task, job and pool JSON, and the task message.
//! - [`submit`]: reading task files (one task, an array, `{"value":[...]}` or JSON Lines) and adding them to a job.
//! - [`status`]: the Redis status store: key layout and every state transition as one Lua script.
//! - [`queue`]: the RabbitMQ topology and the confirmed publisher.
//! - [`staging`]: moving files between storage (S3, HTTP) and a task's directory.
//! - [`node`]: the node agent: consume a pool's queue, run tasks, record their outcome.
//! - [`error`]: the crate's error type; [`retry`]: the one retry policy, for transient errors.
//!
//! The flow of one task is described in ARCHITECTURE.md at the repository root.

#![recursion_limit = "256"]

pub mod autoscale;
pub mod config;
pub mod error;
pub mod model;
pub mod node;
pub mod queue;
pub mod retry;
pub mod staging;
pub mod status;
pub mod submit;
pub mod telemetry;

pub use config::Config;
pub use error::{Error, Result};
