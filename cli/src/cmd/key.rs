use std::path::PathBuf;
use std::process::ExitCode;

use super::print_json;
use crate::open::{hostname, password_from, Context};

#[derive(clap::Subcommand)]
pub enum Command {
    /// List the key files: each opens the repository with its own password.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Add a key file for another password (e.g. a second operator's, or a break-glass
    /// one kept offline).
    Add(NewPassword),
    /// Remove a key file by its id (or a unique prefix). The one that opened the
    /// repository and the last one are refused.
    Remove { id: String },
    /// Change the password of the key file that opened the repository.
    Passwd(NewPassword),
}

#[derive(clap::Args)]
pub struct NewPassword {
    /// Read the new password from this file (else STOWAGE_NEW_PASSWORD, else a prompt).
    #[arg(long)]
    new_password_file: Option<PathBuf>,
}

impl NewPassword {
    fn read(&self) -> anyhow::Result<Vec<u8>> {
        password_from(
            self.new_password_file.as_deref(),
            None,
            "STOWAGE_NEW_PASSWORD",
            true,
        )
    }
}

pub async fn run(ctx: &Context, command: Command) -> anyhow::Result<ExitCode> {
    let repo = ctx.open().await?;
    match command {
        Command::List { json } => {
            let keys = repo.key_list().await?;
            if json {
                print_json(&keys)?;
                return Ok(ExitCode::SUCCESS);
            }
            println!("{:<2}{:<10}{:<21}host", "", "id", "created");
            for key in &keys {
                let mark = if key.current { "*" } else { "" };
                let created = key.created.map(|t| {
                    t.with_timezone(&chrono::Local)
                        .format("%Y-%m-%d %H:%M:%S")
                        .to_string()
                });
                let (created, host) = match &key.damaged {
                    Some(why) => ("DAMAGED".to_string(), why.clone()),
                    None => (
                        created.unwrap_or_default(),
                        key.host.clone().unwrap_or_default(),
                    ),
                };
                let id = key.id.get(..8).unwrap_or(&key.id);
                println!("{mark:<2}{id:<10}{created:<21}{host}");
            }
        }
        Command::Add(new) => {
            let name = repo.add_key(&new.read()?, &hostname()).await?;
            println!("added key {}", &name[..8]);
        }
        Command::Remove { id } => {
            let name = repo.remove_key(&id).await?;
            println!("removed key {}", name.get(..8).unwrap_or(&name));
        }
        Command::Passwd(new) => {
            let name = repo.change_password(&new.read()?, &hostname()).await?;
            println!("password changed: key {} replaces the old one", &name[..8]);
        }
    }
    Ok(ExitCode::SUCCESS)
}
