fn main() {
    std::process::exit(kes::cli::main(std::env::args_os().collect()));
}
