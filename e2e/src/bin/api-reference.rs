//! Prints the API reference of the SmartRegionTenant CRD as Markdown:
//! `cargo run -q -p smartregion-e2e --bin api-reference > docs/api-reference.md`.

fn main() {
    print!("{}", smartregion_e2e::api_reference::document());
}
