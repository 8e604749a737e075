//! End-to-end pieces shared by the scenario tests, the demo and the bench:
//!
//! - [`load`]: the AMQP load generator and loss checker (publisher confirms, manual acks, unique
//!   ids, reconnecting clients);
//! - [`harness`]: a kubesim cluster with the CRDs, the real operator binary as a child process,
//!   kubectl, and watchers of an instance's migration phases;
//! - [`mod@bench`]: the bench's figures and how they are rendered (Markdown, JSON, SVG plots).
//! - [`scale`]: the scale bench's figures (many instances on one operator) and their report.

pub mod bench;
pub mod harness;
pub mod load;
pub mod scale;
pub mod scenario;
