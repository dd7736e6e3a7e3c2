use std::ffi::OsString;

fn main() {
    let mut args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let code = match args.first().and_then(|a| a.to_str()) {
        Some("server") => {
            args.remove(0);
            kes::server::run::main(args)
        }
        Some("-v" | "--version") => {
            println!("kes {}", kes::api::sys::VERSION);
            0
        }
        _ => {
            eprintln!("Usage: kes server --config FILE | kes server --dev");
            2
        }
    };
    std::process::exit(code);
}
