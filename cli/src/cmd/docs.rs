//! Shell completions and man pages, generated from the command line's own definition.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

#[derive(clap::Args)]
pub struct CompletionsArgs {
    /// The shell, e.g. `stowage completions bash > /etc/bash_completion.d/stowage`.
    shell: clap_complete::Shell,
}

#[derive(clap::Args)]
pub struct ManArgs {
    /// Write `stowage.1` and one page per command (`stowage-backup.1`, ...) here; print
    /// `stowage.1` when not given.
    #[arg(long)]
    dir: Option<PathBuf>,
}

pub fn completions(mut command: clap::Command, args: CompletionsArgs) -> ExitCode {
    clap_complete::generate(args.shell, &mut command, "stowage", &mut std::io::stdout());
    ExitCode::SUCCESS
}

pub fn man(command: clap::Command, args: ManArgs) -> anyhow::Result<ExitCode> {
    let Some(dir) = args.dir else {
        clap_mangen::Man::new(command).render(&mut std::io::stdout())?;
        return Ok(ExitCode::SUCCESS);
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    clap_mangen::generate_to(command, &dir)
        .with_context(|| format!("writing man pages to {}", dir.display()))?;
    Ok(ExitCode::SUCCESS)
}
