//! Runs the Argo CD health check of SmartRegionTenant with a real Lua 5.1 the way Argo CD
//! does (`util/lua` in Argo CD): the object as the global `obj`, the chunk's returned
//! table read back as `{status, message}`, an unknown status turned into `Unknown`.
//!
//! Argo CD's own test runner opens every standard library; the application controller
//! opens only base, package, table and a reduced os for a script from argocd-cm (unless
//! `useOpenLibs` is set). [`Libraries`] offers both, and the tests run every case with each.

use std::path::PathBuf;

use anyhow::{Context, Result, anyhow, bail};
use mlua::serde::SerializeOptions;
use mlua::{Lua, LuaOptions, LuaSerdeExt, StdLib};
use serde::Deserialize;
use serde_json::Value;
use smartregion_e2e::paths;

/// The health statuses Argo CD accepts from a script.
const VALID_STATUSES: [&str; 6] = [
    "Unknown",
    "Progressing",
    "Healthy",
    "Suspended",
    "Degraded",
    "Missing",
];

/// `examples/argocd/resource_customizations/<group>/<kind>/`.
pub fn check_dir() -> PathBuf {
    paths::workspace_root()
        .join("examples/argocd/resource_customizations/smartregion.toscana.it/SmartRegionTenant")
}

pub fn script() -> Result<String> {
    let path = check_dir().join("health.lua");
    std::fs::read_to_string(&path).with_context(|| format!("failed to read {}", path.display()))
}

/// Argo CD's `health.HealthStatus`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct Health {
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub message: String,
}

/// One entry of `health_test.yaml`.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Case {
    pub health_status: Health,
    pub input_path: String,
}

#[derive(Deserialize)]
struct Cases {
    tests: Vec<Case>,
}

/// The cases of `health_test.yaml`, in file order.
pub fn cases() -> Result<Vec<Case>> {
    let path = check_dir().join("health_test.yaml");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("failed to read {}", path.display()))?;
    let cases: Cases =
        serde_yaml::from_str(&text).with_context(|| format!("{} is malformed", path.display()))?;
    Ok(cases.tests)
}

/// A testdata file as Argo CD's test runner loads it (YAML to a JSON-like map).
pub fn load_input(input_path: &str) -> Result<Value> {
    let path = check_dir().join(input_path);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("failed to read {}", path.display()))?;
    serde_yaml::from_str(&text).with_context(|| format!("{} is not YAML", path.display()))
}

#[derive(Clone, Copy, Debug)]
pub enum Libraries {
    /// Every standard library: Argo CD's test runner, and scripts with `useOpenLibs`.
    Open,
    /// Base, package, table and os: an argocd-cm script in the application controller.
    Controller,
}

/// mlua's errors are not `Send`; keep their text.
fn lua_error(error: mlua::Error) -> anyhow::Error {
    anyhow!("{error}")
}

/// The health the script gives `object`.
pub fn health(script: &str, object: &Value, libraries: Libraries) -> Result<Health> {
    let libs = match libraries {
        Libraries::Open => StdLib::ALL_SAFE,
        Libraries::Controller => StdLib::PACKAGE | StdLib::TABLE | StdLib::OS,
    };
    let lua = Lua::new_with(libs, LuaOptions::default()).map_err(lua_error)?;
    // gopher-lua gets JSON null as nil and arrays as plain tables.
    let options = SerializeOptions::new()
        .serialize_none_to_null(false)
        .serialize_unit_to_null(false)
        .set_array_metatable(false);
    let obj = lua.to_value_with(object, options).map_err(lua_error)?;
    lua.globals().set("obj", obj).map_err(lua_error)?;
    let returned: mlua::Value = lua
        .load(script)
        .set_name("health.lua")
        .eval()
        .map_err(lua_error)?;
    if !returned.is_table() {
        bail!(
            "expect table output from Lua script, not {}",
            returned.type_name()
        );
    }
    let encoded: Value = lua.from_value(returned).map_err(lua_error)?;
    let health: Health = serde_json::from_value(encoded)?;
    if !VALID_STATUSES.contains(&health.status.as_str()) {
        return Ok(Health {
            status: "Unknown".into(),
            message: "Lua returned an invalid health status".into(),
        });
    }
    Ok(health)
}
