//! The `plinth` binary.

fn main() -> std::process::ExitCode {
    plinth_operator::cli::main()
}
