//! Bakes the location of the plugin WIT package into the SDK's `bindings!` macro.
//!
//! `wit_bindgen::generate!` resolves a relative `path` against the crate that expands
//! it, and the SDK's bindings are expanded in each plugin crate (see `bindings!` in
//! `src/macros.rs` for why). So the SDK records the absolute path of its own `wit/`
//! directory here, once, and every plugin is built against exactly that WIT.

use std::env;
use std::fs;
use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let wit = manifest.join("../wit");
    println!("cargo:rerun-if-changed={}", wit.display());
    let wit = wit
        .canonicalize()
        .unwrap_or_else(|e| panic!("the plugin WIT package {} is missing: {e}", wit.display()));
    let wit = wit.to_str().expect("the WIT path is UTF-8");

    let mut arms = String::new();
    for world in ["partitioner", "transform", "quota-policy", "connector"] {
        let ident = world.replace('-', "_");
        arms.push_str(&format!(
            "    ({ident}) => {{\n        $crate::__private::wit_bindgen::generate!({{\n            path: {wit:?},\n            world: \"quiver:plugin/{world}\",\n            runtime_path: \"::quiver_plugin_sdk::__private::wit_bindgen::rt\",\n        }});\n    }};\n"
        ));
    }
    let source = format!(
        "/// Generates the component bindings of one plugin world (`partitioner`, `transform`,\n\
         /// `quota_policy` or `connector`) in the current module, from the SDK's WIT package.\n\
         ///\n\
         /// The `register_*!` macros call this; call it directly only to implement the\n\
         /// generated `Guest` traits by hand, which skips every check the SDK makes on a\n\
         /// plugin's answers (Quiver's hostile test plugins do so on purpose). Pair it with\n\
         /// [`api_version_section!`].\n\
         #[macro_export]\n\
         macro_rules! bindings {{\n{arms}}}\n"
    );
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo")).join("bindings.rs");
    fs::write(&out, source).unwrap_or_else(|e| panic!("writing {}: {e}", out.display()));
}
