//! `wasmpod`: the command-line front door. Parses arguments, installs tracing, dispatches.

mod cli;
mod crictl;
mod dirs;
mod images;
mod install;
mod pod;
mod progress;
mod run;
mod sys;

use clap::Parser;

fn main() {
    // A compile child of this process (the engine's `compiler`): compiles and exits.
    wasm_engine::run_child_if_asked();
    let cli = cli::Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("WASMPOD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cli.log_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
    let dirs = dirs::Dirs::resolve(cli.root.as_deref(), cli.state.as_deref());
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
        cli::Command::Prune => images::main("", || images::prune(&dirs)),
        cli::Command::Pod(cli::PodCommand::Run(args)) => pod::run(&dirs, args),
        cli::Command::Pod(cli::PodCommand::Rm(args)) => images::main("", || pod::rm(&dirs, args)),
        cli::Command::Cri(command) => images::main("", || crictl::main(&dirs, command)),
        cli::Command::Install(args) => images::main("", || install::main(args)),
    };
    std::process::exit(code);
}
