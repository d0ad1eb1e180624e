//! Integration tests of the engine API with WAT and C fixtures.

use test_support::fixtures;
use test_support::http_fixture;

mod fairness;
mod limits;
mod run;
mod serve;
mod tenants;

use wasm_engine::{Engine, EngineConfig, ExitStatus, Program, RunConfig};

pub(crate) fn engine() -> Engine {
    Engine::new(EngineConfig::default()).unwrap()
}

pub(crate) fn load(engine: &Engine, wat: &str) -> Program {
    engine.load(wat.as_bytes()).unwrap()
}

pub(crate) async fn run(engine: &Engine, program: &Program, config: RunConfig) -> ExitStatus {
    engine.run(program, config).await.unwrap()
}
