//! `unionfuse`: parse, set up logging, call the library, map the outcome to an exit code.

#![deny(unsafe_code)]

use std::ffi::OsString;
use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use unionfuse::cli::{self, Cli, Command};
use unionfuse::compat::{self, CompatAction};
use unionfuse::{image, mount};

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
    let args: Vec<OsString> = std::env::args_os().collect();
    let clap_cmd = Cli::command();
    let mut subcommands: Vec<&str> = vec!["help"];
    for sc in clap_cmd.get_subcommands() {
        subcommands.push(sc.get_name());
        subcommands.extend(sc.get_all_aliases());
    }
    if compat::is_compat_invocation(&args, &subcommands) {
        return compat_main(&args[1..]);
    }
    let cli = Cli::parse_from(args);
    let root = cli.root.clone().unwrap_or_else(image::default_root);
    match cli.command {
        Command::Run(args) => {
            init_logging(args.verbose, true);
            // LAYERS may name an image: its layers and config fill the request.
            let req = match args.into_request(&root) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("unionfuse run: {e}");
                    return ExitCode::from(125);
                }
            };
            ExitCode::from(unionfuse::runtime::run(&req).clamp(0, 255) as u8)
        }
        Command::Image(cmd) => image_result(cli::image::image(&root, &cmd)),
        Command::Diff { upper, from, lower } => image_result(cli::image::diff(
            &root,
            &upper,
            from.as_deref(),
            lower.as_ref(),
        )),
        Command::Commit {
            upper,
            output,
            tag,
            from,
        } => image_result(image::cmd::commit(
            &root,
            &upper,
            output.as_deref(),
            tag.as_deref(),
            from.as_deref(),
        )),
        Command::Mount(args) => {
            init_logging(args.verbose, args.foreground);
            let cmd = match args.into_command() {
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

fn image_result(r: image::Result<()>) -> ExitCode {
    init_logging(0, true);
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("unionfuse: {e}");
            ExitCode::FAILURE
        }
    }
}

/// fuse-overlayfs's command line (podman's `mount_program`): same mount, other argv.
fn compat_main(args: &[OsString]) -> ExitCode {
    let cmd = match compat::parse(args) {
        Ok(CompatAction::Mount(cmd)) => cmd,
        Ok(CompatAction::Help) => {
            println!("{}", compat::USAGE);
            return ExitCode::SUCCESS;
        }
        Ok(CompatAction::Version) => {
            println!(
                "unionfuse {} (fuse-overlayfs compatible command line)",
                env!("CARGO_PKG_VERSION")
            );
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("unionfuse: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(cmd.verbose, cmd.foreground);
    run_mount(*cmd)
}

fn run_mount(cmd: unionfuse::config::MountCommand) -> ExitCode {
    for opt in &cmd.config.ignored {
        tracing::debug!(option = %opt, "mount option accepted for compatibility; no effect");
    }
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
