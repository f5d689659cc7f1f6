//! Checks the components the SDK produces, as the host will read them: each carries the
//! `quiver:api-version` custom section exactly once (in its core module), exports its
//! world's interfaces, and imports nothing beyond WASI and the type-only
//! `quiver:plugin/types` instance (except the plugin built to import something else).
//!
//! Builds the plugins with `plugins/build.sh` first, so it needs the wasm32-wasip2
//! target (which the script installs when missing).

use std::path::{Path, PathBuf};
use std::process::Command;
use wasmparser::{ComponentExternalKind, Parser, Payload};

/// What one component declares, nested modules included.
#[derive(Debug, Default)]
struct Described {
    api_versions: Vec<Vec<u8>>,
    exports: Vec<String>,
    imports: Vec<String>,
}

fn describe(path: &Path) -> Described {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(
        &bytes[..8],
        b"\0asm\x0d\0\x01\0",
        "{} is not a component",
        path.display()
    );
    let mut described = Described::default();
    // Nesting depth: only the outermost component's imports and exports are the
    // component's interface; nested components belong to the WASI adapter.
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(&bytes) {
        match payload.unwrap_or_else(|e| panic!("{}: {e}", path.display())) {
            Payload::CustomSection(section)
                if section.name() == quiver_plugin_sdk::API_VERSION_SECTION =>
            {
                described.api_versions.push(section.data().to_vec());
            }
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentExportSection(reader) if depth == 0 => {
                for export in reader {
                    let export = export.unwrap();
                    if export.kind == ComponentExternalKind::Instance {
                        described.exports.push(export.name.name.to_owned());
                    }
                }
            }
            Payload::ComponentImportSection(reader) if depth == 0 => {
                for import in reader {
                    described.imports.push(import.unwrap().name.name.to_owned());
                }
            }
            _ => {}
        }
    }
    described
}

/// The components `plugins/build.sh` built (it also prints the native library, which is
/// not a component).
fn build_plugins() -> Vec<PathBuf> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/build.sh");
    let output = Command::new("bash")
        .arg(&script)
        .output()
        .expect("run plugins/build.sh");
    assert!(
        output.status.success(),
        "plugins/build.sh failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .filter(|line| line.ends_with(".wasm"))
        .map(PathBuf::from)
        .collect()
}

#[test]
fn components_carry_the_api_version_and_their_world() {
    let wasm = build_plugins();
    assert_eq!(wasm.len(), 22, "{wasm:?}");
    let partitioner = [
        "quiver:plugin/lifecycle@0.1.0",
        "quiver:plugin/partition@0.1.0",
    ];
    let transform = [
        "quiver:plugin/lifecycle@0.1.0",
        "quiver:plugin/record-transform@0.1.0",
    ];
    let connector = [
        "quiver:plugin/lifecycle@0.1.0",
        "quiver:plugin/mirror@0.1.0",
    ];
    let quota_policy = [
        "quiver:plugin/lifecycle@0.1.0",
        "quiver:plugin/policy@0.1.0",
    ];
    for path in &wasm {
        let name = path.file_stem().unwrap().to_str().unwrap();
        let described = describe(path);
        assert_eq!(
            described.api_versions,
            [quiver_plugin_sdk::API_VERSION.as_bytes()],
            "{name}: exactly one quiver:api-version section"
        );
        let mut exports = described.exports.clone();
        exports.sort();
        // wrong-kind is a transform deployed as a partitioner by the host's tests.
        let expected: &[&str] = match name {
            "quiver_plugin_json_redact"
            | "quiver_plugin_filter"
            | "quiver_plugin_split"
            | "quiver_plugin_repartition"
            | "quiver_test_plugin_transform_hostile"
            | "quiver_test_plugin_wrong_kind" => &transform,
            "quiver_plugin_mirror" => &connector,
            "quiver_plugin_tiers"
            | "quiver_plugin_fair_share"
            | "quiver_test_plugin_quota_trap" => &quota_policy,
            _ => &partitioner,
        };
        assert_eq!(exports, expected, "{name}: exports");
        for import in &described.imports {
            // `types` has no functions; it is imported for its type definitions only.
            let allowed = import.starts_with("wasi:")
                || import == "quiver:plugin/types@0.1.0"
                || (name == "quiver_test_plugin_bad_import" && import == "quiver:evil/thing");
            assert!(allowed, "{name} imports {import}");
        }
        if name == "quiver_test_plugin_bad_import" {
            assert!(
                described.imports.iter().any(|i| i == "quiver:evil/thing"),
                "{:?}",
                described.imports
            );
        }
    }
}
