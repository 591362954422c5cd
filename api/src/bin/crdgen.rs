//! Prints the SigningKey CRD as YAML: `cargo run -p sigil-api --bin crdgen > crds/signingkey.yaml`.

fn main() {
    print!("{}", sigil_api::signing_key::crd_yaml());
}
