//! `cargo xtask bench`: the figures the issues ask for, measured on this machine.

pub(crate) fn run(_args: &[String]) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
