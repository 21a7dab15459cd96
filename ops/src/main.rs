//! `logbook`: the one binary. Wires the crates together; owns configuration and the CLI.

fn main() -> anyhow::Result<()> {
    Ok(())
}
