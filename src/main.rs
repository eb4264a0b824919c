//! `unionfuse`: parse, set up logging, call the library, map the outcome to an exit code.

use std::process::ExitCode;

use clap::Parser;
use unionfuse::cli::{self, Cli, Command};
use unionfuse::mount;

fn init_logging(verbose: u8, foreground: bool) {
    let level = match (verbose, foreground) {
        (0, _) => "warn",
        (1, _) => "info",
        (2, _) => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("UNIONFUSE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Mount {
            lowers,
            paths,
            workdir,
            options,
            foreground,
            verbose,
        } => {
            init_logging(verbose, foreground);
            let cmd =
                match cli::mount_command(&lowers, &paths, workdir, &options, foreground, verbose) {
                    Ok(c) => c,
                    Err(e) => {
                        eprintln!("unionfuse: {e}");
                        return ExitCode::from(2);
                    }
                };
            run_mount(cmd)
        }
    }
}

fn run_mount(cmd: cli::MountCommand) -> ExitCode {
    // Fork before any thread exists; the parent returns once the child has mounted.
    let pipe = if cmd.foreground {
        None
    } else {
        match mount::daemonize() {
            Ok(p) => Some(p),
            Err(e) => {
                eprintln!("unionfuse: cannot start the daemon: {e}");
                return ExitCode::FAILURE;
            }
        }
    };
    let session = mount::mount(&cmd.config);
    let status = session
        .as_ref()
        .map(|_| ())
        .map_err(|e| unionfuse::error::Error::config("", e.to_string()));
    if let Some(pipe) = pipe {
        mount::report(pipe, &status);
    }
    let session = match session {
        Ok(s) => s,
        Err(e) => {
            eprintln!("unionfuse: {e}");
            return ExitCode::FAILURE;
        }
    };
    match mount::serve(session) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "session ended with an error");
            ExitCode::FAILURE
        }
    }
}
