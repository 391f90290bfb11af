//! certgate: a private certificate authority and an mTLS gateway in one binary.
//!
//! `main` parses the command line, runs one command, prints an error once (with its causes)
//! and turns the outcome into an exit code: 0 success (also when the reader of stdout went
//! away), 1 failure (including "certificate refused" from `certgate verify`), 2 usage error.

use std::process::ExitCode;

use clap::Parser;

mod cli;

// The gateway's request path allocates small, short-lived buffers on every worker thread;
// glibc malloc took about 6% of the gateway's CPU in the keep-alive benchmark.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // One crypto provider for the whole process (rustls, the gateway, the token checks).
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let args = cli::Cli::parse();
    cli::out::exit_code(cli::run(args))
}
