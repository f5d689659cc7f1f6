//! Compile-time behaviour of the plugin macros: `tests/ui/pass_*.rs` must compile,
//! `tests/ui/fail_*.rs` must fail with the error recorded beside them.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass_*.rs");
    t.compile_fail("tests/ui/fail_*.rs");
}
