// hello-rust: --version panics and catches the panic, so a binary whose unwind tables were damaged fails
// visibly. No dependencies beyond std, so plain rustc builds it offline.
use std::env;
use std::panic;
use std::process::ExitCode;

const VERSION: &str = "1.0.0";

fn banner() -> String {
    panic::set_hook(Box::new(|_| {}));
    let caught = panic::catch_unwind(|| -> () { panic!("hello-rust {}", VERSION) });
    let _ = panic::take_hook();
    match caught {
        Err(payload) => payload.downcast_ref::<String>().cloned().unwrap_or_default(),
        Ok(()) => String::from("no unwind"),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--version") {
        println!("{}", banner());
        return ExitCode::SUCCESS;
    }
    if args.len() >= 2 && args[0] == "--exit" {
        let code: u8 = args[1].parse().unwrap_or(2);
        eprintln!("exiting with {}", code);
        return ExitCode::from(code);
    }
    println!("hello from rust");
    for (index, arg) in args.iter().enumerate() {
        println!("argv[{}] = {}", index + 1, arg);
    }
    ExitCode::SUCCESS
}
