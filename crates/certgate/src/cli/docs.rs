//! `certgate completions SHELL` and `certgate man [COMMAND]...`: shell completions and man
//! pages made from the command line's own definition, so they cannot drift from `--help`.

use std::process::ExitCode;

use clap::{Args, CommandFactory};
use clap_complete::Shell;

use super::Cli;
use super::out::Out;

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  certgate completions bash > ~/.local/share/bash-completion/completions/certgate
  certgate completions zsh > ~/.zfunc/_certgate     # with fpath+=~/.zfunc before compinit
  certgate completions fish > ~/.config/fish/completions/certgate.fish")]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: Shell,
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  certgate man | man -l -                           # read it now
  certgate man > certgate.1                         # install as /usr/share/man/man1/certgate.1
  certgate man cert issue | man -l -                # the page of one command, with its flags")]
pub struct ManArgs {
    /// The command whose page to print, e.g. `cert issue` (default: certgate's own page,
    /// which lists the commands).
    #[arg(value_name = "COMMAND")]
    pub command: Vec<String>,
}

pub fn completions(args: CompletionsArgs) -> anyhow::Result<ExitCode> {
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), "certgate", &mut script);
    Out::lock().write_bytes(&script)?;
    Ok(ExitCode::SUCCESS)
}

pub fn man(args: ManArgs) -> anyhow::Result<ExitCode> {
    let mut command = Cli::command();
    // Subcommands get their own page, named as man pages of git's commands are
    // (certgate-cert-issue(1)), with their usage written in full.
    command.build();
    let mut name = String::from("certgate");
    let mut written = String::from("certgate");
    for word in &args.command {
        let Some(sub) = command.find_subcommand(word).cloned() else {
            let known: Vec<&str> =
                command.get_subcommands().map(|c| c.get_name()).filter(|n| *n != "help").collect();
            anyhow::bail!(
                "no command `{written} {word}`; the commands of `{written}` are {}",
                if known.is_empty() { "none".to_string() } else { known.join(", ") }
            );
        };
        name = format!("{name}-{word}");
        written = format!("{written} {word}");
        command = sub.name(name.clone());
    }
    let mut page = Vec::new();
    clap_mangen::Man::new(command).render(&mut page)?;
    Out::lock().write_bytes(&page)?;
    Ok(ExitCode::SUCCESS)
}
