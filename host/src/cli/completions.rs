//! `quiver completions <shell>`: a completion script generated from the same clap
//! definition that parses the command line, so it always knows every command and flag.

use std::process::ExitCode;

use clap::{Args, CommandFactory as _};
use clap_complete::Shell;

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  quiver completions bash > /etc/bash_completion.d/quiver
  quiver completions zsh > \"${fpath[1]}/_quiver\"
  quiver completions fish > ~/.config/fish/completions/quiver.fish
  quiver completions powershell >> $PROFILE")]
pub(crate) struct CompletionsArgs {
    /// The shell to complete in.
    shell: Shell,
}

pub(crate) fn run(args: CompletionsArgs) -> anyhow::Result<ExitCode> {
    let mut command = super::Cli::command();
    clap_complete::generate(args.shell, &mut command, "quiver", &mut std::io::stdout());
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;
    use clap_complete::Shell;

    fn script(shell: Shell) -> String {
        let mut out = Vec::new();
        clap_complete::generate(shell, &mut super::super::Cli::command(), "quiver", &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn scripts_know_the_commands_and_flags() {
        let bash = script(Shell::Bash);
        assert!(bash.contains("_quiver()"), "bash defines its function");
        for word in ["topic", "consume", "--bootstrap", "--output", "reference"] {
            assert!(bash.contains(word), "bash completes {word}");
        }
        assert!(script(Shell::Zsh).starts_with("#compdef quiver"));
        assert!(script(Shell::Fish).contains("complete -c quiver"));
        assert!(!script(Shell::Elvish).is_empty());
        assert!(!script(Shell::PowerShell).is_empty());
    }
}
