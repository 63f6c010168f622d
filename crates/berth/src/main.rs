//! `berth`: parses the command line and runs the server or a client command.

use berth::cli::{Cli, Command};
use berth::config::{Config, Overrides};
use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    // The code sandbox starts this binary as its helper: before any thread exists.
    if std::env::args_os().nth(1).as_deref()
        == Some(std::ffi::OsStr::new(berth_sandbox::HELPER_ARG))
    {
        return berth_sandbox::helper::main();
    }
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve(args).await,
            other => match berth::cli::run_client(other).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            },
        }
    })
}

async fn serve(args: berth::cli::ServeArgs) -> ExitCode {
    let overrides = Overrides {
        listen: args.listen,
        data_dir: args.data_dir,
        database_url: args.database_url,
    };
    let config = match Config::load(args.config.as_deref(), std::env::vars(), &overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let redactor = berth::logging::init(&config.log);
    let server = match berth::start(&config, args.demo, &redactor).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!(
        "Berth listening on {} ({} store)",
        server.url,
        server.state.store.backend()
    );
    if server.operator_token_generated {
        eprintln!(
            "Operator token (shown once; also in {}/operator-token, mode 0600):\n  {}",
            config.data_dir.display(),
            server.operator_token
        );
    }
    if let Some(demo) = &server.demo {
        eprintln!(
            "Demo tenant {} with admin key:\n  {}",
            demo.tenant_id, demo.key
        );
        eprintln!(
            "Try:\n  curl -s {url}/v1/agents/{agent}/runs -H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' -d '{{\"input\": \"hello\"}}'",
            url = server.url,
            agent = berth::app::DEMO_AGENT,
            key = demo.key
        );
    }
    match berth_api::serve(server.listener, server.state, berth::app::shutdown_signal()).await {
        Ok(()) => {
            eprintln!("Berth stopped cleanly");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
