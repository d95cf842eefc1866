//! The `synergy-craft` binary: everything it does is `synergy_craft::cli_main`.

fn main() -> std::process::ExitCode {
    synergy_craft::cli_main()
}
