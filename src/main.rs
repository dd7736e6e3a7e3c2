fn main() {
    std::process::exit(kes::cli::main());
}
