//! Standard output of the CA commands. Everything they print goes through [`Out`] with
//! `writeln!(out, ...)?`, so a reader that goes away early (`certgate inspect --json chain.pem |
//! head -1`) is not a crash: the write fails with [`StdoutClosed`], and [`exit_code`] turns
//! that into a quiet exit with success.

use std::fmt;
use std::io::{self, Write};
use std::process::ExitCode;

/// A locked standard output (or, in tests, any writer). Each write is flushed, so a closed
/// pipe is noticed by the write that hit it and the output interleaves with stderr in order.
pub struct Out<W: Write = io::StdoutLock<'static>> {
    writer: W,
}

impl Out {
    /// Locks standard output for the rest of the command.
    pub fn lock() -> Out {
        Out { writer: io::stdout().lock() }
    }
}

impl<W: Write> Out<W> {
    /// Writes and flushes `args`; what `write!` and `writeln!` call. Fails with
    /// [`StdoutClosed`] when the reader has gone, otherwise with the I/O error.
    pub fn write_fmt(&mut self, args: fmt::Arguments<'_>) -> anyhow::Result<()> {
        self.writer.write_fmt(args).and_then(|()| self.writer.flush()).map_err(write_error)
    }

    /// Writes and flushes raw bytes (a DER file sent to stdout), failing as `write_fmt` does.
    pub fn write_bytes(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.writer.write_all(bytes).and_then(|()| self.writer.flush()).map_err(write_error)
    }
}

fn write_error(e: io::Error) -> anyhow::Error {
    if e.kind() == io::ErrorKind::BrokenPipe {
        anyhow::Error::new(StdoutClosed)
    } else {
        anyhow::Error::new(e).context("cannot write to standard output")
    }
}

/// The reader of standard output has gone (EPIPE): nobody wants the rest of the output.
#[derive(Debug)]
pub struct StdoutClosed;

impl fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("standard output was closed")
    }
}

impl std::error::Error for StdoutClosed {}

/// The exit code of a command: its own on success; success, silently, when standard output was
/// closed under it; otherwise 1, after printing the error once with its causes on stderr.
pub fn exit_code(result: anyhow::Result<ExitCode>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(err) if err.is::<StdoutClosed>() => ExitCode::SUCCESS,
        Err(err) => {
            // Nothing is left to report a closed stderr to.
            let _ = writeln!(io::stderr(), "certgate: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer whose reader has gone, like a pipe after `head -1` exits.
    struct ClosedPipe;

    impl Write for ClosedPipe {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A closed stdout ends the command with success and no message; other write errors fail.
    #[test]
    fn closed_stdout_is_a_clean_exit() {
        let mut out = Out { writer: ClosedPipe };
        let err = writeln!(out, "certificate #{}", 1).unwrap_err();
        assert!(err.is::<StdoutClosed>(), "{err:#}");
        assert_eq!(exit_code(Err(err)), ExitCode::SUCCESS);
        let full: &mut [u8] = &mut [0; 2];
        let mut out = Out { writer: io::Cursor::new(full) };
        let err = writeln!(out, "too long for the buffer").unwrap_err();
        assert!(!err.is::<StdoutClosed>(), "{err:#}");
        assert_eq!(exit_code(Err(err)), ExitCode::FAILURE);
    }
}
