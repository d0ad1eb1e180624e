//! The command line: flags follow docker and podman wherever they have an equivalent.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::units;

/// Run WebAssembly workloads as containers.
#[derive(Debug, Parser)]
#[command(name = "wasmpod", version, about)]
pub(crate) struct Cli {
    /// Directory for the precompile cache and image store
    /// [default: /var/lib/wasmpod as root, else $XDG_CACHE_HOME/wasmpod and $XDG_DATA_HOME/wasmpod]
    #[arg(long, global = true, env = "WASMPOD_ROOT", value_name = "DIR")]
    pub(crate) root: Option<PathBuf>,

    /// Directory for run state [default: /run/wasmpod as root, else $XDG_RUNTIME_DIR/wasmpod]
    #[arg(long, global = true, env = "WASMPOD_STATE", value_name = "DIR")]
    pub(crate) state: Option<PathBuf>,

    /// Log filter for wasmpod's own messages (WASMPOD_LOG overrides it)
    #[arg(long, global = true, default_value = "warn", value_name = "FILTER")]
    pub(crate) log_level: String,

    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run a .wasm or .wat file as a container; the guest's exit status becomes wasmpod's
    Run(RunArgs),
}

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// Set an environment variable (KEY=VALUE, or KEY to pass this process's value)
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
    pub(crate) env: Vec<String>,

    /// Bind a host directory into the container: HOST:GUEST[:ro|rw]
    #[arg(short = 'v', long = "volume", value_name = "HOST:GUEST[:ro]")]
    pub(crate) volumes: Vec<String>,

    /// Working directory inside the container
    #[arg(short = 'w', long = "workdir", value_name = "DIR")]
    pub(crate) workdir: Option<String>,

    /// Memory limit over all linear memories and tables (64Mi, 64m, 1g, 1048576)
    #[arg(short = 'm', long, value_name = "BYTES", value_parser = units::parse_bytes)]
    pub(crate) memory: Option<u64>,

    /// Kill the workload (status 137) after this long (500ms, 10s, 2m)
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub(crate) timeout: Option<Duration>,

    /// Mount the container's root filesystem read-only
    #[arg(long)]
    pub(crate) read_only: bool,

    /// Keep standard input attached (otherwise the guest reads end-of-file)
    #[arg(short = 'i', long)]
    pub(crate) interactive: bool,

    /// The .wasm or .wat file to run, then the arguments passed to it
    #[arg(
        required = true,
        num_args = 1..,
        trailing_var_arg = true,
        value_name = "FILE [ARGS]"
    )]
    command: Vec<String>,
}

impl RunArgs {
    /// The file to run.
    pub(crate) fn file(&self) -> &Path {
        Path::new(&self.command[0])
    }

    /// The arguments after the file.
    pub(crate) fn args(&self) -> &[String] {
        &self.command[1..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn guest_flags_after_the_file_go_to_the_guest() {
        let cli = Cli::try_parse_from([
            "wasmpod", "run", "-e", "A=1", "-m", "64Mi", "x.wasm", "-e", "--help",
        ])
        .unwrap();
        let Command::Run(args) = cli.command;
        assert_eq!(args.env, ["A=1"]);
        assert_eq!(args.memory, Some(64 << 20));
        assert_eq!(args.file(), Path::new("x.wasm"));
        assert_eq!(args.args(), ["-e", "--help"]);
    }
}
