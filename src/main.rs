//! `unionfuse`: run the command line through the library and map the outcome to an exit code;
//! a failure is printed here, once, with its chain of causes.

#![deny(unsafe_code)]

use std::process::ExitCode;

fn main() -> ExitCode {
    match unionfuse::cli::run(std::env::args_os().collect()) {
        Ok(code) => code,
        Err(failure) => {
            eprintln!("{failure}");
            ExitCode::from(failure.status)
        }
    }
}
