//! Builds one of the HTTP test handlers in `tests/fixtures/` (`http_hello`, `http_net`) as a
//! component, for the e2e and the benchmarks: `cargo run -p wasm-engine --example
//! http-fixture -- NAME OUT_DIR` prints the path of `OUT_DIR/NAME.wasm`.

use test_support::http_fixture;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [name, out_dir] = args.as_slice() else {
        eprintln!("usage: http-fixture NAME OUT_DIR");
        std::process::exit(2);
    };
    let out = http_fixture::http_component_in(name, std::path::Path::new(out_dir));
    println!("{}", out.display());
}
