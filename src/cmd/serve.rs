//! `latchkey serve`: build the configuration from its layers, then run the server.
//!
//! The flags that set a setting are made from the settings table
//! (`latchkey::config::SETTINGS`), so each is defined once; `serve --help` lists every
//! setting with its environment variable.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Arg, ArgAction, ArgMatches, Args, Command, FromArgMatches};
use latchkey::config::{self, Config, Env, Kind, SETTINGS, Value};
use latchkey::server;

/// Flags of `latchkey serve`; each setting flag overrides the config file and the
/// environment.
#[derive(clap::Args)]
#[command(after_help = "Run `latchkey serve --help` for every setting and its environment variable.",
          after_long_help = config::settings_help())]
pub struct ServeArgs {
    #[command(flatten)]
    source: ConfigArgs,
    /// Validate the configuration, keys and store (every record), then exit; writes nothing.
    #[arg(long)]
    check: bool,
    /// Switch the user store to the configured primary key although it was last served
    /// with another one (generating secret.key when the default key file is missing):
    /// every session ends. A one-time action, not a setting; see docs/store.md, "Keys".
    #[arg(long)]
    replace_key: bool,
    #[command(flatten)]
    settings: SettingFlags,
}

/// Where the configuration comes from: `--config FILE`, shared by every command that
/// builds the server's configuration.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ConfigArgs {
    /// TOML configuration file (settings as in `latchkey serve --help`).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

impl ConfigArgs {
    /// The configuration from the defaults, this file, the environment and `flags`.
    pub fn load(&self, flags: &[(&str, Value)]) -> Result<Config, config::ConfigError> {
        Config::load(self.config.as_deref(), &Env::from_process(), flags)
    }
}

/// The setting flags of `latchkey serve`, one per setting of the table that has one.
#[derive(Debug, Clone, Default)]
pub struct SettingFlags {
    values: Vec<(&'static str, Value)>,
}

impl SettingFlags {
    /// The settings given on the command line, as (name, value).
    pub fn values(&self) -> &[(&'static str, Value)] {
        &self.values
    }
}

impl Args for SettingFlags {
    fn augment_args(mut cmd: Command) -> Command {
        for setting in SETTINGS {
            let Some(flag) = setting.flag else { continue };
            let help = format!("{} [env: {}]", setting.help, setting.env_vars().join(", "));
            let mut arg = Arg::new(setting.name)
                .long(flag)
                .help(help.replace('`', ""));
            arg = match setting.kind {
                Kind::Bool => arg.action(ArgAction::SetTrue),
                kind if kind.is_list() => arg
                    .action(ArgAction::Append)
                    .value_name(setting.value_name()),
                _ => arg.action(ArgAction::Set).value_name(setting.value_name()),
            };
            cmd = cmd.arg(arg);
        }
        cmd
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

impl FromArgMatches for SettingFlags {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let mut values = Vec::new();
        for setting in SETTINGS.iter().filter(|s| s.flag.is_some()) {
            let value = match setting.kind {
                Kind::Bool => matches.get_flag(setting.name).then_some(Value::Bool(true)),
                kind if kind.is_list() => matches
                    .get_many::<String>(setting.name)
                    .map(|items| Value::List(items.cloned().collect())),
                _ => matches
                    .get_one::<String>(setting.name)
                    .map(|v| Value::Text(v.clone())),
            };
            if let Some(value) = value {
                values.push((setting.name, value));
            }
        }
        Ok(SettingFlags { values })
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

/// Runs (or with `--check`, validates) the server.
pub fn run(args: ServeArgs) -> ExitCode {
    let config = match args.source.load(args.settings.values()) {
        Ok(c) => c,
        Err(e) => return super::fail(e),
    };
    if args.check {
        return match server::check(&config, args.replace_key) {
            Ok(notes) => {
                for note in notes {
                    println!("note: {note}");
                }
                println!("configuration ok");
                ExitCode::SUCCESS
            }
            Err(e) => super::fail(e),
        };
    }
    // The port first: a port in use is reported before a key, a store or a setup code
    // is made.
    let listener = match server::listen(&config) {
        Ok(l) => l,
        Err(e) => return super::fail(e),
    };
    let prepared = match server::prepare_with(config, args.replace_key) {
        Ok(p) => p,
        Err(e) => return super::fail(e),
    };
    match server::run(prepared, listener) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => super::fail(e),
    }
}
