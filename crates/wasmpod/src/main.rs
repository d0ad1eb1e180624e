//! `wasmpod`: the command-line front door. Parses arguments, installs tracing, dispatches.

#![deny(unsafe_code)]

mod cli;
mod crictl;
mod dirs;
mod images;
mod install;
mod messages;
mod node;
mod pod;
mod progress;
mod run;
#[allow(
    unsafe_code,
    reason = "the system calls std has no API for, behind safe functions"
)]
mod sys;

use clap::Parser;

fn main() {
    // A compile child of this process (the engine's `compiler`): compiles and exits.
    wasm_engine::run_child_if_asked();
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        // A usage error exits 125, as docker's do (so it is told from the guest's own
        // statuses); --help and --version are not errors.
        Err(e) => {
            let _ = e.print();
            std::process::exit(if e.use_stderr() { 125 } else { 0 });
        }
    };
    let logged = std::env::var_os("WASMPOD_LOG").is_some() || cli.log_level != "warn";
    let filter = tracing_subscriber::EnvFilter::try_from_env("WASMPOD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cli.log_level));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .event_format(messages::CliFormat::new(logged, ansi))
        .init();
    let dirs = dirs::Dirs::resolve(cli.root.as_deref(), cli.state.as_deref());
    if matches!(
        cli.command,
        cli::Command::Images
            | cli::Command::Completions(_)
            | cli::Command::Cri(
                cli::CriCommand::Pods(_)
                    | cli::CriCommand::Ps(_)
                    | cli::CriCommand::Logs(_)
                    | cli::CriCommand::Stats(_)
                    | cli::CriCommand::Inspect(_)
            )
    ) {
        sys::die_on_sigpipe();
    }
    let code = match cli.command {
        cli::Command::Run(args) => run::main(&dirs, args),
        cli::Command::Compile(args) => run::compile_main(&dirs, args),
        cli::Command::Pull(args) => {
            let what = args.image.clone();
            images::main(&what, || images::pull(&dirs, args))
        }
        cli::Command::Build(args) => images::main("", || images::build(&dirs, args)),
        cli::Command::Push(args) => {
            let what = args.image.clone();
            images::main(&what, || images::push(&dirs, args))
        }
        cli::Command::Images => images::main("", || images::images(&dirs)),
        cli::Command::Rmi(args) => images::main("", || images::rmi(&dirs, args)),
        cli::Command::Prune(args) => images::main("", || images::prune(&dirs, &args)),
        cli::Command::Pod(cli::PodCommand::Run(args)) => pod::run(&dirs, args),
        cli::Command::Pod(cli::PodCommand::Rm(args)) => images::main("", || pod::rm(&dirs, args)),
        cli::Command::Cri(command) => images::main("", || crictl::main(&dirs, command)),
        cli::Command::Install(args) => images::main("", || install::main(args)),
        cli::Command::Uninstall(args) => images::main("", || install::uninstall(args)),
        cli::Command::Completions(args) => {
            use clap::CommandFactory;
            let mut command = cli::Cli::command();
            clap_complete::generate(args.shell, &mut command, "wasmpod", &mut std::io::stdout());
            0
        }
    };
    std::process::exit(code);
}
