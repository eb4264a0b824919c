//! Write the man pages and shell completions generated from the clap definitions
//! (`unionfuse::cli::Cli`) into OUT: `OUT/man/unionfuse.1` plus one page per subcommand
//! (`unionfuse-mount.1`, ...), `OUT/completions/{unionfuse.bash,_unionfuse,unionfuse.fish}`.
//! Run by `make install`: `cargo run --release --example gen_docs -- OUT`.

use std::path::PathBuf;

use clap::CommandFactory;
use clap_complete::Shell;

fn main() -> std::io::Result<()> {
    let Some(out) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: gen_docs OUTDIR");
        std::process::exit(2);
    };
    let man = out.join("man");
    let completions = out.join("completions");
    std::fs::create_dir_all(&man)?;
    std::fs::create_dir_all(&completions)?;
    let cmd = unionfuse::cli::Cli::command();
    // One page for `unionfuse`, and `unionfuse-SUB.1` for each subcommand, as git does.
    clap_mangen::generate_to(cmd.clone(), &man)?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut cmd.clone(), "unionfuse", &completions)?;
    }
    Ok(())
}
