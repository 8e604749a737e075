//! kubesim's tests that start no broker, in one test binary so they are linked once: the API
//! server against kube-rs ([`apiserver_kube`]) and real kubectl ([`kubectl_cli`], run again with
//! the newest kubectl by [`kubectl_skew`]), its authentication, RBAC, request log and per-client
//! faults ([`auth`], [`client_faults`]), pods run as local programs in-cluster
//! ([`incluster_pods`]), how namespaces end ([`namespace_lifecycle`]), the
//! simulated controllers ([`sim_controllers`]), the `kubesim up` binary ([`sim_binary`]) and the
//! rule that the operator never depends on kubesim ([`sim_dependency_boundary`]).
//!
//! Tests that run real brokers are in the `rabbit_pods` binary, which nextest runs one test at a
//! time.

mod apiserver_kube;
mod auth;
mod client_faults;
mod common;
mod incluster_pods;
mod kubectl_cli;
mod kubectl_skew;
mod namespace_lifecycle;
mod sim_binary;
mod sim_controllers;
mod sim_dependency_boundary;
