//! Prints a CRD as YAML: `cargo run -p sigil-api --bin crdgen -- signingkey > crds/signingkey.yaml`,
//! `... -- sigilclient > crds/sigilclient.yaml` (`make generate` writes both).

fn main() {
    let which = std::env::args().nth(1).unwrap_or_else(|| "signingkey".to_owned());
    match which.as_str() {
        "signingkey" => print!("{}", sigil_api::signing_key::crd_yaml()),
        "sigilclient" => print!("{}", sigil_api::sigil_client::crd_yaml()),
        other => {
            eprintln!("crdgen: unknown CRD {other:?}: use signingkey or sigilclient");
            std::process::exit(2);
        }
    }
}
