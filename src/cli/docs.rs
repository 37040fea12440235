//! `iewatch completions` and `iewatch man`: generated from the clap definitions, so they
//! never disagree with `--help`.

use std::{path::Path, process::ExitCode};

use anyhow::Context as _;
use clap::CommandFactory as _;

use super::flags::{Cli, Shell};

/// Prints the completion script for `shell`.
pub(super) fn completions(shell: Shell) -> anyhow::Result<ExitCode> {
    let mut command = Cli::command();
    let shell = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, "iewatch", &mut script);
    out!("{}", String::from_utf8_lossy(&script));
    Ok(ExitCode::SUCCESS)
}

/// Writes `iewatch.1` and one page per subcommand (`iewatch-run.1`, ...) into `dir`.
pub(super) fn man(dir: &Path) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let command = Cli::command().disable_help_subcommand(true);
    let mut pages = vec![(String::from("iewatch"), command.clone())];
    for sub in command.get_subcommands() {
        let name = format!("iewatch-{}", sub.get_name());
        let invoked = format!("iewatch {}", sub.get_name());
        pages.push((name.clone(), sub.clone().name(name).bin_name(invoked)));
    }
    for (name, page) in &pages {
        let mut roff = Vec::new();
        clap_mangen::Man::new(page.clone())
            .render(&mut roff)
            .with_context(|| format!("cannot render {name}.1"))?;
        let path = dir.join(format!("{name}.1"));
        std::fs::write(&path, roff).with_context(|| format!("cannot write {}", path.display()))?;
    }
    outln!("{} man page(s) written to {}", pages.len(), dir.display());
    Ok(ExitCode::SUCCESS)
}
