//! The `plinth` binary.

/// Rendering allocates many small strings and maps; mimalloc serves them at a fraction of glibc malloc's cost.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    plinth_operator::cli::main()
}
