//! The sandbox helper as its own small binary (tests and benchmarks; the server uses
//! `berth __sandbox-helper`). Accepts the same optional `__sandbox-helper` argument.

fn main() -> std::process::ExitCode {
    berth_sandbox::helper::main()
}
