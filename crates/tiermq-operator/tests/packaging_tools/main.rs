//! Packaging checks with the real tools users run: `helm` 4.1 and kubectl 1.32 and 1.37 (the
//! pinned ones come from `make setup`, see `tiermq_testkit::tools`), against a kubesim cluster
//! each test starts for itself.
//!
//! - [`chart`]: `helm lint --strict` and `helm template` for the chart's defaults and every values
//!   file in `charts/tiermq/ci/`, the rendered objects validated by the API server (server-side
//!   dry run), and the chart's `kubeVersion` range;
//! - [`release`]: `helm install`, `upgrade`, `rollback` and `uninstall` on kubesim, with
//!   server-side apply (Helm 4's default) and with client-side apply, checked with kubectl;
//! - [`kustomize`]: `kubectl apply -k deploy/` with both kubectl versions;
//! - [`monitoring`]: the monitoring toggles (monitors, alerting rules through `promtool`, the
//!   dashboard) and the metrics their queries name;
//! - [`incluster`]: `helm install` running the operator in-cluster (kubesim runs the operator
//!   image as this build's binary) under the chart's RBAC, no request denied.
//!
//! Without the pinned tools a test is skipped with a message, except under CI (`CI=true`), where
//! it fails. The checks that need no tools are in `packaging.rs`.

mod chart;
mod common;
mod incluster;
mod kustomize;
mod monitoring;
mod release;
