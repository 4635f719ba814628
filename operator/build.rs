//! Rebuilds the binary when a bundled Blueprint changes (they are compiled in from `templates/`).

fn main() {
    println!("cargo:rerun-if-changed=../templates");
}
