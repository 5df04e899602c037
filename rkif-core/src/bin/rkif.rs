//! The `rkif` command line.

fn main() {
    eprintln!("rkif: the command line arrives with the engine");
    std::process::exit(2);
}
