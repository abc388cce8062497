fn main() {
    std::process::exit(den::cli::main());
}
