//! kubesim's tests that run real `rabbitmq-server` processes as pods, in one test binary so they
//! are linked once. Its name starts with `rabbit_`, so nextest runs its tests one at a time
//! beside the other tests (`.config/nextest.toml`); each test starts its own cluster.

mod cleanup;
mod statefulset;
