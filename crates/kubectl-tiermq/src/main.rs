//! `kubectl-tiermq`: see the library's docs.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    kubectl_tiermq::cli::main().await
}
