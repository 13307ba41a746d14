//! The `corral` binary: parse the command line, start tracing, run.

fn main() -> std::process::ExitCode {
    corral::cli::main()
}
